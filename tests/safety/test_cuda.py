"""The GPU path on the tiny model (marked ``cuda``: skipped where torch sees no CUDA device)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from safety.data import encode_example
from safety.reference import compute_reference_cache
from safety.trainer import StepMetrics, train
from tests.safety.test_trainer import FAST

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("reference", ["exact", "cached"])
def test_training_on_cuda_runs_bf16_autocast_and_learns(load_tiny, chat_examples, tmp_path: Path, reference) -> None:
    model, tokenizer = load_tiny()
    model.to("cuda")
    matmul_dtypes = set()
    model.register_forward_hook(lambda module, args, out: matmul_dtypes.add(out.logits.dtype))
    encoded = [encode_example(tokenizer, e, FAST.max_seq_len) for e in chat_examples]
    cache = (
        compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 32) if reference == "cached" else None
    )
    config = dataclasses.replace(FAST, n_epochs=4, reference=reference)
    metrics: list[StepMetrics] = []
    result = train(
        model,
        tokenizer,
        chat_examples,
        [3.0] * 8,
        config,
        work_dir=tmp_path,
        on_step=metrics.append,
        reference_cache=cache,
    )
    assert matmul_dtypes == {torch.bfloat16}  # autocast: bf16 logits from fp32 weights
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in result.model.parameters())
    assert all(torch.isfinite(torch.tensor([m.loss, m.kl])).all() for m in metrics)
    assert metrics[-1].sft_loss < metrics[0].sft_loss


def test_reference_cache_on_cuda_matches_the_cpu_cache(load_tiny, chat_examples) -> None:
    model, tokenizer = load_tiny()
    encoded = [encode_example(tokenizer, e, 128) for e in chat_examples]
    on_cpu = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 8)
    on_gpu = compute_reference_cache(model.to("cuda"), encoded, tokenizer.pad_token_id, 8)
    assert torch.equal(on_cpu.offsets, on_gpu.offsets)
    assert (on_cpu.ids[:, 0] == on_gpu.ids[:, 0]).float().mean() > 0.9  # bf16 may swap near-ties
    assert torch.allclose(on_cpu.logprobs[:, 0].float(), on_gpu.logprobs[:, 0].float(), atol=0.1)
