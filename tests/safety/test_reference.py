"""The reference distribution computed once (``safety.reference``) and the KL against it
(``objective.cached_token_kl``), on the tiny model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from core.settings import Settings
from safety.data import collate, encode_example
from safety.objective import example_sums
from safety.reference import ReferenceCache, compute_reference_cache
from safety.trainer import StepMetrics, train
from tests.safety.test_objective import _perturbed_lora
from tests.safety.test_trainer import FAST


def _sums(model, tokenizer, examples, k: int):
    """(exact KL sums, cached KL sums, their gradients w.r.t. the logits) of one batch."""
    encoded = [encode_example(tokenizer, e, 128) for e in examples]
    with model.disable_adapter():
        cache = ReferenceCache.from_bytes(compute_reference_cache(model, encoded, tokenizer.pad_token_id, k).to_bytes())
    batch = collate(encoded, tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        logits = model(**inputs).logits
        with model.disable_adapter():
            ref_logits = model(**inputs).logits
    out = []
    for kwargs in ({"ref_logits": ref_logits}, {"ref_topk": cache.rows(range(len(examples)))}):
        leaf = logits.clone().requires_grad_()
        _, kl, _ = example_sums(leaf, batch["labels"], **kwargs)
        kl.sum().backward()
        out.append((kl.detach(), leaf.grad))
    return out


def test_cached_kl_equals_the_exact_kl_when_k_covers_the_vocabulary(load_tiny, chat_examples) -> None:
    model, tokenizer = _perturbed_lora(load_tiny)
    (exact, exact_grad), (cached, cached_grad) = _sums(model, tokenizer, chat_examples[5:8], model.config.vocab_size)
    assert exact.min() > 1.0  # the adapter moved the policy: a real KL to match
    # stored log-probs are float16: ~1e-3 relative rounding per probability
    assert torch.allclose(cached, exact, rtol=1e-3)
    assert (cached_grad - exact_grad).abs().max() <= 1e-2 * exact_grad.abs().max()


def test_cached_kl_at_the_default_k_is_the_exact_kl_minus_the_tails_own_divergence(load_tiny, chat_examples) -> None:
    """At k < vocab the cache merges every other token into one bucket: a lower bound whose
    gap is Σ_t p_tail · KL(P_ref|tail ‖ P_θ|tail), checked here token by token."""
    k = Settings.model_fields["reference_topk"].default
    model, tokenizer = _perturbed_lora(load_tiny)
    (exact, _), (cached, _) = _sums(model, tokenizer, chat_examples[6:7], k)
    encoded = encode_example(tokenizer, chat_examples[6], 128)
    ids = torch.tensor([encoded.input_ids])
    with torch.no_grad():
        log_q = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        with model.disable_adapter():
            log_p = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    gap = 0.0
    for t in range(1, len(encoded.labels)):
        if encoded.labels[t] == -100:
            continue
        tail = torch.ones_like(log_p[t - 1], dtype=torch.bool)
        tail[log_p[t - 1].topk(k).indices] = False
        p_tail, q_tail = log_p[t - 1][tail], log_q[t - 1][tail]
        mass_p, mass_q = p_tail.logsumexp(0), q_tail.logsumexp(0)
        gap += (mass_p.exp() * ((p_tail - mass_p).exp() * ((p_tail - mass_p) - (q_tail - mass_q))).sum()).item()
    assert cached[0] < exact[0]
    assert cached[0].item() == pytest.approx(exact[0].item() - gap, rel=2e-3, abs=1e-3)


def test_the_cache_round_trips_and_refuses_other_data(load_tiny, chat_examples) -> None:
    model, tokenizer = load_tiny()
    encoded = [encode_example(tokenizer, e, 128) for e in chat_examples]
    cache = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 8, batch_size=3)
    again = ReferenceCache.from_bytes(cache.to_bytes())
    assert (again.logprobs.dtype, again.ids.dtype, again.k) == (torch.float16, torch.int32, 8)
    assert all(torch.equal(a, b) for a, b in zip(dataclasses.astuple(cache), dataclasses.astuple(again)))
    again.check(encoded)
    rows = again.rows([6, 0])
    assert rows.ids.shape[0] == int(cache.offsets.diff()[6] + cache.offsets.diff()[0])
    with pytest.raises(ValueError, match="do not match"):
        again.check(encoded[:7])
    with pytest.raises(ValueError, match="do not match"):
        again.check([encode_example(tokenizer, e, 12) for e in chat_examples])  # other truncation


def _counting(monkeypatch, model) -> tuple[list[int], list[int]]:
    forwards, disabled = [], []
    model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    original = PeftModel.disable_adapter
    monkeypatch.setattr(PeftModel, "disable_adapter", lambda self: disabled.append(1) or original(self))
    return forwards, disabled


def test_cached_training_runs_no_reference_forward_and_matches_exact_at_full_k(
    load_tiny, chat_examples, tmp_path: Path, monkeypatch
) -> None:
    risks = [1.0, 5.0, 3.0, 4.0, 2.0, 5.0, 1.0, 3.0]
    model, tokenizer = load_tiny()
    exact: list[StepMetrics] = []
    train(
        model,
        tokenizer,
        chat_examples,
        risks,
        dataclasses.replace(FAST, lora_dropout=0.0),
        work_dir=tmp_path / "exact",
        on_step=exact.append,
    )

    model, tokenizer = load_tiny()
    encoded = [encode_example(tokenizer, e, FAST.max_seq_len) for e in chat_examples]
    cache = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, model.config.vocab_size)
    forwards, disabled = _counting(monkeypatch, model)
    cached: list[StepMetrics] = []
    config = dataclasses.replace(FAST, lora_dropout=0.0, reference="cached")
    train(
        model,
        tokenizer,
        chat_examples,
        risks,
        config,
        work_dir=tmp_path / "cached",
        on_step=cached.append,
        reference_cache=cache,
    )
    assert disabled == []  # one policy forward per micro-batch, no reference
    assert len(forwards) == 4
    assert all(m.kl is not None for m in cached)
    for a, b in zip(exact, cached, strict=True):
        assert (a.loss, a.sft_loss, a.kl) == pytest.approx((b.loss, b.sft_loss, b.kl), rel=1e-3, abs=1e-5)
    with pytest.raises(ValueError, match="reference_cache"):
        train(load_tiny()[0], tokenizer, chat_examples, risks, config, work_dir=tmp_path / "none")


def test_cached_training_resumes_like_the_uninterrupted_run(load_tiny, chat_examples, tmp_path: Path) -> None:
    config = dataclasses.replace(
        FAST, n_epochs=2, batch_size=1, grad_accum_steps=2, checkpoint_every=2, reference="cached"
    )
    risks = [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 1.0, 3.0]
    model, tokenizer = load_tiny()
    encoded = [encode_example(tokenizer, e, config.max_seq_len) for e in chat_examples]
    cache = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 32)
    full: list[StepMetrics] = []
    train(
        model,
        tokenizer,
        chat_examples,
        risks,
        config,
        work_dir=tmp_path / "full",
        on_step=full.append,
        reference_cache=cache,
    )
    resumed: list[StepMetrics] = []
    train(
        load_tiny()[0],
        tokenizer,
        chat_examples,
        risks,
        config,
        work_dir=tmp_path / "resumed",
        on_step=resumed.append,
        resume_dir=tmp_path / "full" / "checkpoints" / "step-000004",
        reference_cache=ReferenceCache.from_bytes(cache.to_bytes()),
    )
    assert [m.step for m in resumed] == [5, 6, 7, 8]
    for a, b in zip(full[4:], resumed, strict=True):
        assert (a.loss, a.kl) == pytest.approx((b.loss, b.kl), rel=1e-6, abs=1e-9)


def test_a_checkpoint_written_before_the_reference_option_resumes_as_exact(
    load_tiny, chat_examples, tmp_path: Path
) -> None:
    import json

    config = dataclasses.replace(FAST, checkpoint_every=2)
    model, tokenizer = load_tiny()
    train(model, tokenizer, chat_examples, [3.0] * 8, config, work_dir=tmp_path)
    state_file = tmp_path / "checkpoints" / "step-000002" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["reference"]  # as written by an earlier version
    state_file.write_text(json.dumps(state))
    resume = dict(work_dir=tmp_path / "r", resume_dir=state_file.parent)
    assert train(load_tiny()[0], tokenizer, chat_examples, [3.0] * 8, config, **resume).steps == 4
    with pytest.raises(ValueError, match="reference"):
        train(
            load_tiny()[0],
            tokenizer,
            chat_examples,
            [3.0] * 8,
            dataclasses.replace(config, reference="cached"),
            reference_cache=compute_reference_cache(
                load_tiny()[0].eval(),
                [encode_example(tokenizer, e, 128) for e in chat_examples],
                tokenizer.pad_token_id,
                8,
            ),
            **resume,
        )


def test_a_cached_checkpoint_refuses_a_cache_of_another_k(load_tiny, chat_examples, tmp_path: Path) -> None:
    """A checkpoint records its cache's top-k: a resume against a cache of another k (another
    objective) is refused, one with the same k continues, and a checkpoint from before the
    top-k was recorded (none in its state) still resumes."""
    config = dataclasses.replace(FAST, checkpoint_every=2, reference="cached")
    model, tokenizer = load_tiny()
    encoded = [encode_example(tokenizer, e, config.max_seq_len) for e in chat_examples]
    cache = {k: compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, k) for k in (8, 16)}
    train(model, tokenizer, chat_examples, [3.0] * 8, config, work_dir=tmp_path, reference_cache=cache[8])
    resume = dict(work_dir=tmp_path / "r", resume_dir=tmp_path / "checkpoints" / "step-000002")
    with pytest.raises(ValueError, match="top-k"):
        train(load_tiny()[0], tokenizer, chat_examples, [3.0] * 8, config, reference_cache=cache[16], **resume)
    assert (
        train(load_tiny()[0], tokenizer, chat_examples, [3.0] * 8, config, reference_cache=cache[8], **resume).steps
        == 4
    )
    state_file = tmp_path / "checkpoints" / "step-000002" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state.pop("reference_topk") == 8
    state_file.write_text(json.dumps(state))
    resume["work_dir"] = tmp_path / "older"
    assert (
        train(load_tiny()[0], tokenizer, chat_examples, [3.0] * 8, config, reference_cache=cache[8], **resume).steps
        == 4
    )
