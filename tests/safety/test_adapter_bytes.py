"""A trained adapter's files, and so its digest (``core.releases.digests``), are the same
for the same weights in any process: PEFT writes ``target_modules`` in set order, which
follows ``PYTHONHASHSEED`` (``safety.checkpoints.sort_target_modules``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path

import torch

from core.releases.digests import dir_sha256
from safety.base_models import load_base_model
from safety.train_config import TrainConfig
from safety.trainer import train

torch.set_num_threads(1)
tiny, work = Path(sys.argv[1]), Path(sys.argv[2])
model, tokenizer = load_base_model(str(tiny), cache_dir=tiny.parent)
config = TrainConfig(mode="none", batch_size=1, n_epochs=1, lora_r=2, lora_dropout=0.0, checkpoint_every=0)
example = {"prompt": "Say hello.", "completion": "Hello!"}
result = train(model, tokenizer, [example], [1.0], config, work_dir=work)
print(dir_sha256(result.adapter_dir))
"""


def _adapter_digest(tiny_model: Path, work: Path, hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model), str(work)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.split()[-1]


def test_the_same_adapter_has_the_same_digest_under_any_hash_seed(tiny_model, tmp_path):
    # Seeds 1 and 2 put the four default target modules in different set orders.
    first = _adapter_digest(tiny_model, tmp_path / "one", "1")
    second = _adapter_digest(tiny_model, tmp_path / "two", "2")
    assert first == second
    config = json.loads((tmp_path / "one" / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])
