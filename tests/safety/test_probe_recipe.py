"""The one probe recipe: training prompts with framed variants, config and layer candidates."""

from __future__ import annotations

import pytest

from safety.probe import ProbeConfig, layer_candidates
from safety.probe_recipe import FRAMED_SHARE, parse_layer_sets, recipe, training_set
from safety.prompt_sets import framed, load_builtin, load_chat_frames


def test_training_set_adds_framed_variants_grouped_with_their_prompt() -> None:
    data = training_set(seed=0)
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
    assert training_set(seed=0) == data
    assert training_set(seed=1) != data


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
