"""One rank of a data-parallel training run on the tiny model, for tests/safety/test_distributed.py:
``python -m torch.distributed.run --standalone --nproc-per-node N -m tests.safety.ddp_rank SPEC``
from the repository's root.

SPEC (JSON) names the tiny model, the examples and risks, the ``TrainConfig`` fields, the work
dir, an optional checkpoint to resume from and an optional step after whose checkpoint rank 0
dies (``os._exit``, as a killed process: no clean-up, ``torchrun`` stops the other rank). Rank 0
writes ``{"losses": [...], "adapter": <adapter dir>}`` to the spec's ``out``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from safety import distributed
from safety.base_models import load_base_model
from safety.data import encode_example
from safety.reference import compute_reference_cache
from safety.train_config import TrainConfig
from safety.train_metrics import StepMetrics
from safety.trainer import train


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(1)
    here = distributed.init_from_env()
    try:
        tiny = Path(spec["tiny_model"])
        model, tokenizer = load_base_model(str(tiny), cache_dir=tiny.parent)
        config = TrainConfig(**spec["config"])
        cache = None
        if config.reference == "cached":
            encoded = [encode_example(tokenizer, e, config.max_seq_len) for e in spec["examples"]]
            cache = compute_reference_cache(model.eval(), encoded, tokenizer.pad_token_id, 16)
        losses: list[float] = []

        def on_step(metrics: StepMetrics) -> None:
            losses.append(metrics.loss)

        def save_checkpoint(step: int, path: Path, metrics: StepMetrics) -> None:
            if step == spec.get("die_after"):
                os._exit(1)

        result = train(
            model,
            tokenizer,
            spec["examples"],
            spec["risks"],
            config,
            work_dir=Path(spec["work_dir"]),
            on_step=on_step,
            save_checkpoint=save_checkpoint,
            resume_dir=Path(spec["resume"]) if spec.get("resume") else None,
            reference_cache=cache,
        )
        if here.is_main:
            Path(spec["out"]).write_text(json.dumps({"losses": losses, "adapter": str(result.adapter_dir)}))
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
