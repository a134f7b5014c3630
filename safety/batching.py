"""Batches of a forward pass bounded by a token budget: the one rule every pass that runs a
model over a list of sequences (training's micro-batches, the scan's reference and probe
passes, validation and evaluation) uses to decide which sequences go together.

A batch's memory grows with its *padded* size, ``len(batch) × its longest sequence``: the
activations, and the logits that dominate them for a large vocabulary. A token budget bounds
that size whatever the lengths, where a fixed number of sequences does not (8 sequences of
2048 tokens are 64 times 8 of 32).
"""

from __future__ import annotations

from collections.abc import Sequence


def token_batches(lengths: Sequence[int], max_tokens: int | None, max_items: int | None = None) -> list[list[int]]:
    """Positions ``0 … len(lengths) − 1`` grouped into batches; every position in exactly one.

    Without a budget (``max_tokens`` ``None``) the batches are consecutive chunks of
    ``max_items`` positions in the given order (one batch of all without ``max_items``): a
    fixed batch size. With one, positions are taken in order of length (ties in the given
    order), so that a batch holds sequences of similar length, and each batch is as long as
    it can be while its padded size ``len(batch) × max(its lengths)`` stays within
    ``max_tokens`` and it has at most ``max_items`` positions; a sequence longer than the
    budget makes a batch on its own. Callers that return results per sequence put them back in
    their order; sums over a batch do not depend on it."""
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be ≥ 1, got {max_tokens}")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be ≥ 1, got {max_items}")
    if max_tokens is None:
        size = max_items or max(len(lengths), 1)
        return [list(range(start, min(start + size, len(lengths)))) for start in range(0, len(lengths), size)]
    batches: list[list[int]] = []
    current: list[int] = []
    for position in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # ascending lengths: the newcomer is the batch's longest
        full = max_items is not None and len(current) >= max_items
        if current and (full or (len(current) + 1) * lengths[position] > max_tokens):
            batches.append(current)
            current = []
        current.append(position)
    if current:
        batches.append(current)
    return batches
