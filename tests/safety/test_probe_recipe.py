"""The one probe recipe: training prompts with framed variants, config and layer candidates."""

from __future__ import annotations

import random

import pytest

from safety.instruction_formats import ALPACA_PREAMBLE, TASK_INSTRUCTIONS, TEMPLATES, task_variant, templated
from safety.probe import ProbeConfig, layer_candidates
from safety.probe_recipe import FRAMED_SHARE, TASK_SHARE, TEMPLATED_SHARE, parse_layer_sets, recipe, training_set
from safety.prompt_sets import framed, load_builtin, load_chat_frames

# The SST-2 benchmark's task instruction: the probe must not have trained on it.
SST2_INSTRUCTIONS = ("Analyze the sentiment of the input",)


def test_training_set_adds_framed_variants_grouped_with_their_prompt() -> None:
    data = training_set(seed=0, formats=False)
    plain_h = [p.text for n in ("harmful_train", "probe_harmful_train") for p in load_builtin(n)]
    plain_b = [p.text for n in ("benign_train", "probe_benign_train") for p in load_builtin(n)]
    prompts = data.harmful + data.benign
    assert len(data.groups) == len(prompts)
    assert len(prompts) == len(plain_h) + len(plain_b) + round(len(plain_h) * FRAMED_SHARE) + round(
        len(plain_b) * FRAMED_SHARE
    )
    assert data.harmful[: len(plain_h)] == plain_h
    assert set(plain_b) <= {p for p in data.benign if isinstance(p, str)}
    frames = load_chat_frames()
    plain = plain_h + plain_b
    n_framed = 0
    for prompt, group, label in zip(prompts, data.groups, [1] * len(data.harmful) + [0] * len(data.benign)):
        assert label == int(group < len(plain_h))  # a variant keeps its request's label
        if isinstance(prompt, str):
            assert prompt == plain[group]
            continue
        n_framed += 1
        assert prompt[-1] == {"role": "user", "content": plain[group]}  # the variant frames its own prompt
        assert any(prompt == framed(plain[group], f) for f in frames)
    assert n_framed == round(len(plain_h) * FRAMED_SHARE) + round(len(plain_b) * FRAMED_SHARE)
    assert any(f.system and "obedient" in f.system for f in frames)  # identity-shift system prompts are framed too
    assert training_set(seed=0, formats=False) == data
    assert training_set(seed=1, formats=False) != data


def test_format_variants_template_their_own_prompt_and_keep_its_label() -> None:
    plain_data, data = training_set(seed=0, formats=False), training_set(seed=0)
    plain_h = [p.text for n in ("harmful_train", "probe_harmful_train") for p in load_builtin(n)]
    plain_b = [p.text for n in ("benign_train", "probe_benign_train") for p in load_builtin(n)]
    plain = plain_h + plain_b
    old = set(map(repr, plain_data.harmful + plain_data.benign))
    prompts = data.harmful + data.benign
    labels = [1] * len(data.harmful) + [0] * len(data.benign)
    new = [(p, g, y) for p, g, y in zip(prompts, data.groups, labels) if repr(p) not in old]
    templated = round(len(plain_h) * TEMPLATED_SHARE) + round(len(plain_b) * TEMPLATED_SHARE)
    assert len(new) == templated + round(len(plain_b) * TASK_SHARE)
    for prompt, group, label in new:
        assert isinstance(prompt, str)
        assert plain[group] in prompt  # the variant carries its own prompt (as instruction or input)
        assert prompt != plain[group]
        assert label == int(group < len(plain_h))
    harmful_new = [p for p, _, y in new if y == 1]
    assert any(p.startswith(ALPACA_PREAMBLE) for p in harmful_new)  # harmful requests appear in Alpaca form
    tasks = [p for p, _, _ in new if any(t in p for t in TASK_INSTRUCTIONS)]
    assert len(tasks) >= round(len(plain_b) * TASK_SHARE)
    lengths = sorted(len(p) for p in tasks)
    assert lengths[-1] > 4 * lengths[len(lengths) // 2]  # some task inputs are long
    assert not any(sst2 in p for p, _, _ in new for sst2 in SST2_INSTRUCTIONS)


def test_templated_fills_the_template_with_and_without_an_input() -> None:
    rng = random.Random(0)
    texts = {templated("Do X.", rng) for _ in range(50)}
    assert len(texts) == len(TEMPLATES)
    assert all("Do X." in t for t in texts)
    with_input = templated("Do X.", random.Random(1), "the input")
    assert "the input" in with_input
    assert "{input}" not in with_input
    long = task_variant(["a", "b", "c", "d", "e"], random.Random(2), long=True)
    assert long.count("\n\n") >= 2  # several prompts joined as paragraphs


def test_recipe_is_the_probe_defaults_with_the_settings_layers() -> None:
    config, candidates = recipe(30)
    assert config == ProbeConfig()
    assert candidates == layer_candidates(30)
    config, candidates = recipe(30, "12,13", epochs=3)
    assert config == ProbeConfig(epochs=3)
    assert candidates == [(12, 13)]
    assert parse_layer_sets("6;4,8") == [(6,), (4, 8)]
    assert parse_layer_sets("auto") is None
    with pytest.raises(ValueError, match="comma-separated"):
        parse_layer_sets("6;x")
