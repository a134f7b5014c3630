"""Data-parallel training across processes: one job, ``torchrun --nproc-per-node N``.

Every rank holds the whole run (data, encoded examples, reference cache, model, optimizer):
a step's examples (``train_state.step_indices``) are split into contiguous shards, one per
rank (:meth:`World.shard`); each rank forwards and backwards its shard with the loss
normalised by the *step's* answer tokens (counted on every rank from the same encoded data,
so no count travels), the ranks' LoRA gradients are summed (:func:`sum_gradients`) and every
rank takes the same optimizer step: the gradient is the 1-process gradient of the step, as
with micro-batches (``train_step.accumulate_gradients``), within float rounding. Only the
trainable parameters' gradients are summed, by hand: no ``DistributedDataParallel`` wrapper,
whose hooks do not expect the reference pass under PEFT's ``disable_adapter``.

Rank 0 (:attr:`World.is_main`) alone decides to cancel or pause (:func:`main_decides`),
reports, writes checkpoints and the adapter; the other ranks only compute. A checkpoint holds
every rank's RNG state (:func:`gather_rng_states`; ``checkpoints.restore_checkpoint`` gives
each rank its own) so a resumed run draws the same LoRA dropout masks on every rank; all
ranks resume from the same checkpoint.

Outside ``torchrun`` (no process group) :func:`world` is one rank and every function here
is the identity: the 1-process path runs the same code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this rank reports, checkpoints and decides (rank 0)."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` items (sizes differ by at most one; a
        rank may get none when ``count < size``)."""
        return slice(self.rank * count // self.size, (self.rank + 1) * count // self.size)


def world() -> World:
    """The process group's world, or a single rank without one."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size())
    return World()


def init_from_env() -> World:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``/``MASTER_PORT``, ``LOCAL_RANK``): NCCL on CUDA, each rank on GPU
    ``LOCAL_RANK``; gloo on CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return world()


def teardown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    """Where the backend's tensors live: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its sum over the ranks (a rank without one,
    whose shard was empty, adds zeros)."""
    if world().size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(_device())
    dist.all_reduce(flat)
    offset = 0
    for param in params:
        count = param.numel()
        param.grad = flat[offset : offset + count].view_as(param).to(param.device, param.dtype)
        offset += count


def summed(sums: T) -> T:
    """A dataclass of per-step sums with each ``int`` / ``float`` field summed over the
    ranks (other fields as given)."""
    if world().size == 1:
        return sums
    names = [f.name for f in fields(sums) if isinstance(getattr(sums, f.name), (int, float))]
    totals = torch.tensor([float(getattr(sums, name)) for name in names], dtype=torch.float64, device=_device())
    dist.all_reduce(totals)
    values = {
        name: round(total) if isinstance(getattr(sums, name), int) else total
        for name, total in zip(names, totals.tolist(), strict=True)
    }
    return replace(sums, **values)


def main_decides(decide: Callable[[], bool] | None) -> bool:
    """Rank 0's answer to ``decide`` (false without one), the same on every rank; only rank
    0 calls it."""
    here = world()
    answer = bool(here.is_main and decide is not None and decide())
    if here.size == 1:
        return answer
    flag = torch.tensor([int(answer)], device=_device())
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _rng_of_this_rank() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def gather_rng_states() -> list[dict[str, torch.Tensor]]:
    """Every rank's torch (and its GPU's) RNG state, by rank; on every rank."""
    mine = _rng_of_this_rank()
    if world().size == 1:
        return [mine]
    gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(world().size)]
    for key, state in mine.items():
        parts = [torch.empty_like(state, device=_device()) for _ in gathered]
        dist.all_gather(parts, state.to(_device()))
        for rank_states, part in zip(gathered, parts, strict=True):
            rank_states[key] = part.cpu()
    return gathered


def barrier() -> None:
    """Wait until every rank gets here."""
    if world().size > 1:
        dist.barrier()


def rank_device(device: str) -> str:
    """``device`` (``GUARDTUNE_DEVICE``) for this rank: ``cuda`` is the rank's own GPU in a
    process group (:func:`init_from_env` made it the current one)."""
    if device == "cuda" and world().size > 1:
        return f"cuda:{torch.cuda.current_device()}"
    return device
