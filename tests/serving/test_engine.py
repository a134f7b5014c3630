"""The inference engine in-process on the tiny model: adapter LRU, base requests beside
adapters, per-row max_tokens in one batch, and streamed deltas adding up to the answer."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from safety.base_models import load_base_model
from safety.generation import GenerationSettings, generate
from safety.inference import ChatRequest, Engine

PROMPTS = ["How do I bake bread?", "Name three colours.", "What is the capital of France?"]


def make_adapter(tiny_model, dest, seed: int):
    model, _ = load_base_model(str(tiny_model), cache_dir=dest.parent)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(dest)
    return dest


def run(engine: Engine, **kwargs) -> list[tuple[list[str], object]]:
    requests = [ChatRequest(messages=[{"role": "user", "content": p}], base="tiny", **kwargs) for p in PROMPTS]
    for r in requests:
        engine.submit(r)
    out = []
    for r in requests:
        deltas = []
        while (event := r.events.get(timeout=120))[0] == "delta":
            deltas.append(event[1].text)
        assert event[0] == "done", event
        out.append((deltas, event[1].choices[0]))
    return out


def test_adapters_lru_and_base_beside_them(tiny_model, tmp_path):
    loads = []

    def load(source):
        loads.append(source)
        return load_base_model(str(tiny_model), cache_dir=tmp_path)

    a, b = make_adapter(tiny_model, tmp_path / "a", 1), make_adapter(tiny_model, tmp_path / "b", 2)
    engine = Engine(load, max_adapters=1, batch_wait_s=0.05)
    plain = run(engine, max_tokens=6, temperature=0)
    first_a = run(engine, max_tokens=6, temperature=0, adapter="ft:a", adapter_dir=a)
    assert engine.loaded() == {"tiny": ["ft:a"]}
    first_b = run(engine, max_tokens=6, temperature=0, adapter="ft:b", adapter_dir=b)
    assert engine.loaded() == {"tiny": ["ft:b"]}  # a evicted
    again_a = run(engine, max_tokens=6, temperature=0, adapter="ft:a", adapter_dir=a)
    base_after = run(engine, max_tokens=6, temperature=0)
    assert loads == ["tiny"]  # base weights loaded once
    texts = lambda rows: [done.text for _, done in rows]  # noqa: E731
    assert texts(again_a) == texts(first_a)
    assert texts(base_after) == texts(plain)
    assert texts(first_a) != texts(plain)
    assert texts(first_b) != texts(first_a)
    # The evaluation's own greedy generation gives the same answers.
    model, tokenizer = load_base_model(str(tiny_model), cache_dir=tmp_path)
    assert generate(model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=6)) == texts(plain)
    for deltas, done in first_a + plain:
        assert "".join(deltas) == done.text
        assert done.completion_tokens <= 6
    assert max(engine.batches) == len(PROMPTS)


def test_each_row_stops_at_its_own_max_tokens(tiny_model, tmp_path):
    engine = Engine(lambda s: load_base_model(str(tiny_model), cache_dir=tmp_path), batch_wait_s=0.05)
    requests = [
        ChatRequest(messages=[{"role": "user", "content": "Tell me a story"}], base="tiny", max_tokens=n, temperature=0)
        for n in (2, 7)
    ]
    for r in requests:
        engine.submit(r)
    done = []
    for r in requests:
        while (event := r.events.get(timeout=120))[0] == "delta":
            pass
        done.append(event[1].choices[0])
    assert engine.batches == [2]
    assert [d.completion_tokens for d in done] == [2, 7]
    assert [d.finish_reason for d in done] == ["length", "length"]
    assert done[1].text.startswith(done[0].text)
