"""Training checkpoints and adapters on disk, without pickles.

A checkpoint directory holds

* ``adapter_config.json`` + ``adapter_model.safetensors`` — the PEFT LoRA adapter, so a
  checkpoint directory is itself loadable with ``load_adapter``;
* ``optimizer.{safetensors,json}``, ``scheduler.{safetensors,json}``, ``rng.{safetensors,json}``
  — state trees split into tensors (safetensors) and everything else (JSON);
* ``trainer_state.json`` — step, epoch, data position, config and running summary, as the
  trainer wrote them.

Checkpoints are written to a temporary sibling directory and renamed into place, so a
directory that exists is complete.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

TRAINER_STATE_FILE = "trainer_state.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


def save_adapter(model: PeftModel, dest: Path) -> None:
    """Save ``model``'s PEFT adapter (safetensors) to ``dest``, byte for byte the same for the
    same weights in any process (:func:`sort_target_modules`)."""
    model.save_pretrained(str(dest), safe_serialization=True)
    sort_target_modules(Path(dest))


def sort_target_modules(adapter_dir: Path) -> None:
    """Rewrite ``adapter_dir``'s ``adapter_config.json`` with its ``target_modules`` sorted.
    PEFT keeps them as a set and writes them in set order, which follows ``PYTHONHASHSEED``:
    the same adapter saved by another process (another worker, another rank) would get
    another adapter digest. Written as PEFT writes it (keys sorted, indent 2)."""
    path = Path(adapter_dir) / ADAPTER_CONFIG_FILE
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2))


def write_checkpoint(
    dest: Path,
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainer_state: dict[str, Any],
    rank_rngs: list[dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write adapter, optimizer, scheduler, RNG states and ``trainer_state`` (JSON-able) to
    ``dest`` (replacing it if present); returns ``dest``. ``rank_rngs``: every rank's torch
    RNG states, by rank, from a data-parallel run (``safety.distributed.gather_rng_states``)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        save_adapter(model, tmp)
        _save_tree(optimizer.state_dict(), tmp / "optimizer")
        _save_tree(scheduler.state_dict(), tmp / "scheduler")
        _save_tree({**_rng_states(), **({"ranks": rank_rngs} if rank_rngs else {})}, tmp / "rng")
        (tmp / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def read_trainer_state(checkpoint_dir: Path) -> dict[str, Any]:
    """The ``trainer_state`` dict a checkpoint was written with."""
    return json.loads((Path(checkpoint_dir) / TRAINER_STATE_FILE).read_text())


def restore_checkpoint(
    checkpoint_dir: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    rank: int = 0,
) -> None:
    """Load optimizer and scheduler state and restore the torch / Python / NumPy (and CUDA)
    RNGs from ``checkpoint_dir``; a data-parallel checkpoint's torch RNGs are those of rank
    ``rank`` (a rank it did not have keeps rank 0's). The adapter weights are loaded separately
    (``load_adapter`` or PEFT), before this call, since loading an adapter draws random numbers."""
    checkpoint_dir = Path(checkpoint_dir)
    optimizer.load_state_dict(_load_tree(checkpoint_dir / "optimizer"))
    scheduler.load_state_dict(_load_tree(checkpoint_dir / "scheduler"))
    states = _load_tree(checkpoint_dir / "rng")
    _set_rng_states(states)
    ranks = states.get("ranks", [])
    if rank < len(ranks):
        torch.set_rng_state(ranks[rank]["torch"])
        if "cuda" in ranks[rank] and torch.cuda.is_available():
            torch.cuda.set_rng_state(ranks[rank]["cuda"])


def load_adapter(base_model: PreTrainedModel, adapter_dir: Path, *, trainable: bool = False) -> PeftModel:
    """Wrap ``base_model`` (modified in place) with the LoRA adapter saved in ``adapter_dir`` (a
    released adapter or a checkpoint directory); in eval mode unless ``trainable``."""
    model = PeftModel.from_pretrained(base_model, Path(adapter_dir), is_trainable=trainable)
    return model if trainable else model.eval()


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_tree(tree: Any, stem: Path) -> None:
    """Save a nested structure of dicts (any scalar keys), lists, tuples, scalars, tensors and
    NumPy arrays as ``stem.safetensors`` (the arrays) + ``stem.json`` (the rest)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = node.detach().cpu().contiguous()
            return {"tensor": key}
        if isinstance(node, np.ndarray):
            key = str(len(tensors))
            tensors[key] = torch.from_numpy(node.astype(np.int64) if node.dtype.kind == "u" else node.copy())
            return {"ndarray": key, "dtype": node.dtype.str}
        if isinstance(node, dict):
            return {"dict": [[encode(k), encode(v)] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"tuple": [encode(v) for v in node]}
        if isinstance(node, list):
            return [encode(v) for v in node]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in a checkpoint")

    structure = encode(tree)
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(structure))


def _load_tree(stem: Path) -> Any:
    """Inverse of ``_save_tree``."""
    tensors = load_file(str(stem.with_suffix(".safetensors")))

    def decode(node: Any) -> Any:
        if isinstance(node, list):
            return [decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "tensor" in node:
            return tensors[node["tensor"]]
        if "ndarray" in node:
            return tensors[node["ndarray"]].numpy().astype(np.dtype(node["dtype"]))
        if "tuple" in node:
            return tuple(decode(v) for v in node["tuple"])
        return {decode(k): decode(v) for k, v in node["dict"]}

    return decode(json.loads(stem.with_suffix(".json").read_text()))
