"""The reference distribution computed once: per answer token, the frozen reference
model's top-k next-token log-probabilities, their token ids and the log of the rest.

The reference is frozen and the training data are fixed, so the reference's next-token
distribution at every answer position is the same in every epoch. ``reference_pass``
runs the reference forward once per example (the scan stage does it, taking the probe's
features from the same forward) and training computes
``KL(P_ref ‖ P_θ)`` against the cache (``objective.cached_token_kl``, a lower bound of the
exact KL) instead of running the reference forward every step.

Layout (``to_bytes``: safetensors, gzip-compressed): ``logprobs`` ``(M, k)`` float16,
``ids`` ``(M, k)`` int32, ``tail`` ``(M,)`` float32 and ``offsets`` ``(n + 1,)`` int64, M being
the answer positions of all n examples (example i's rows are ``offsets[i]:offsets[i+1]``, in
the order ``objective.example_sums`` selects them).

:func:`reference_forward` is the reference computed live: inside it, the LoRA model runs as
P_ref (adapter disabled, no gradients), as training's exact-KL pass, ``trainer.mean_kl`` and
serving's base-model requests run it.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from safety import interrupt
from safety.batching import token_batches
from safety.data import IGNORE_INDEX, EncodedExample, collate
from safety.memory import autocast
from safety.objective import ReferenceTopK, reference_topk

if TYPE_CHECKING:
    from peft import PeftModel


@contextmanager
def reference_forward(model: PeftModel) -> Iterator[None]:
    """Forward passes of ``model`` inside are the reference's: its adapter
    disabled (the LoRA layers return the base layer's output) and gradients off. The model's
    train / eval mode is left as it is."""
    with torch.no_grad(), model.disable_adapter():
        yield


@dataclass(frozen=True)
class ReferenceCache:
    """Cached reference top-k of a training set; see the module docstring for the layout."""

    logprobs: torch.Tensor
    ids: torch.Tensor
    tail: torch.Tensor
    offsets: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def rows(self, indices: Sequence[int]) -> ReferenceTopK:
        """The rows of examples ``indices``, concatenated in that order (a micro-batch)."""
        spans = [slice(int(self.offsets[i]), int(self.offsets[i + 1])) for i in indices]
        return ReferenceTopK(*(torch.cat([t[s] for s in spans]) for t in (self.logprobs, self.ids, self.tail)))

    def check(self, encoded: Sequence[EncodedExample]) -> None:
        """Raise ``ValueError`` unless the cache has exactly one row per answer position of
        each of ``encoded`` (same examples, same tokenization and truncation)."""
        counts = torch.tensor([_answer_positions(e) for e in encoded], dtype=torch.int64)
        if len(counts) != len(self.offsets) - 1 or not torch.equal(counts, self.offsets.diff()):
            raise ValueError("the cached reference log-probs do not match the training data")

    def to_bytes(self) -> bytes:
        tensors = {"logprobs": self.logprobs, "ids": self.ids, "tail": self.tail, "offsets": self.offsets}
        return gzip.compress(save_safetensors({k: v.contiguous() for k, v in tensors.items()}), compresslevel=6)

    @classmethod
    def concat(cls, parts: Sequence[ReferenceCache]) -> ReferenceCache:
        """The cache of the examples of ``parts``, in that order."""
        shifts = torch.tensor([0, *(int(p.offsets[-1]) for p in parts)]).cumsum(0)
        offsets = torch.cat([parts[0].offsets[:1], *(p.offsets[1:] + shift for p, shift in zip(parts, shifts))])
        return cls(
            torch.cat([p.logprobs for p in parts]),
            torch.cat([p.ids for p in parts]),
            torch.cat([p.tail for p in parts]),
            offsets,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceCache:
        t = load_safetensors(gzip.decompress(data))
        return cls(t["logprobs"], t["ids"], t["tail"], t["offsets"])


@dataclass(frozen=True)
class PooledSpan:
    """Tokens ``[start, end)`` of example ``example`` whose hidden states are averaged
    (a probe's pooled features of a prompt that the example starts with)."""

    example: int
    start: int
    end: int


def compute_reference_cache(
    model: Any,
    encoded: Sequence[EncodedExample],
    pad_id: int,
    k: int,
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
    max_tokens: int | None = None,
) -> ReferenceCache:
    """:func:`reference_pass` without pooled features: the cache alone."""
    return reference_pass(model, encoded, pad_id, k, batch_size=batch_size, progress=progress, max_tokens=max_tokens)[0]


@torch.no_grad()
def reference_pass(
    model: Any,
    encoded: Sequence[EncodedExample],
    pad_id: int,
    k: int,
    *,
    layers: Sequence[int] = (),
    spans: Sequence[PooledSpan] = (),
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
    max_tokens: int | None = None,
) -> tuple[ReferenceCache, torch.Tensor]:
    """One forward of ``model`` (the frozen reference, in eval mode) over each example of
    ``encoded`` (right-padded batches of at most ``batch_size`` examples and, with
    ``max_tokens``, that many padded tokens: ``safety.batching``), keeping the top ``k``
    log-probabilities of every answer position; ``progress(n_done)`` after every batch.

    Also the hidden states after ``layers`` (resolved indices, ``0`` = embeddings) averaged
    over each of ``spans``: float32 ``[len(spans), len(layers), hidden]``. Under causal
    attention a position's states do not depend on the tokens after it, so a span inside a
    prompt the example starts with pools what a forward over that prompt alone gives."""
    from safety.probe.features import layer_outputs

    device = next(model.parameters()).device
    by_position: dict[int, ReferenceTopK] = {}  # each example's rows, by its position in ``encoded``
    hidden: dict[int, torch.Tensor] = {}
    features = torch.zeros((len(spans), len(layers), model.config.hidden_size), dtype=torch.float32)
    by_example: dict[int, list[int]] = {}
    for j, span in enumerate(spans):
        by_example.setdefault(span.example, []).append(j)
    with layer_outputs(model, layers, hidden.__setitem__):
        for batch_rows in token_batches([len(e.input_ids) for e in encoded], max_tokens, batch_size):
            interrupt.check()
            batch = {key: v.to(device) for key, v in collate([encoded[i] for i in batch_rows], pad_id).items()}
            with autocast(device):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            mask = batch["labels"][:, 1:] != IGNORE_INDEX
            ref_log_p = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
            top = [t.cpu().split(mask.sum(1).tolist()) for t in reference_topk(ref_log_p, k)]
            for row, i in enumerate(batch_rows):
                by_position[i] = ReferenceTopK(*(t[row] for t in top))
                for j in by_example.get(i, ()):
                    s = slice(spans[j].start, spans[j].end)
                    features[j] = torch.stack([hidden[layer][row, s].float().mean(0) for layer in layers]).cpu()
            hidden.clear()
            if progress is not None:
                progress(len(by_position))
    rows_of = [by_position[i] for i in range(len(encoded))]
    counts = [_answer_positions(e) for e in encoded]
    offsets = torch.tensor([0, *counts], dtype=torch.int64).cumsum(0)
    cache = ReferenceCache(
        logprobs=torch.cat([r.logprobs for r in rows_of]).half(),
        ids=torch.cat([r.ids for r in rows_of]).int(),
        tail=torch.cat([r.tail for r in rows_of]).float(),
        offsets=offsets,
    )
    return cache, features


def _answer_positions(example: EncodedExample) -> int:
    return sum(label != IGNORE_INDEX for label in example.labels[1:])
