"""The scan's one reference forward per whole example: the probe's features and the
reference cache (``safety.reference``) from the same pass.

Each example of a scan window is encoded as training encodes it (``safety.data``, cut to
the training length) and run once through the frozen reference; its answer positions give
the cache rows and, for every trained turn the probe scores, the states of the tokens up
to that turn's generation prompt give the probe's features. Under causal attention those
states are the ones a forward over the prompt alone gives, so the probe's risks are
today's within float rounding. A turn whose prompt the example does not start with token
for token (a tokenizer that splits the rendered text differently from the piecewise
encoding, a prompt cut by the probe's ``max_len`` or by the training length) is scored by
the probe's own forward instead, as without the cache.

The same pass gives the answer-side head's features (``safety.answer_head``): the states
of each trained turn's answer tokens, averaged; a turn whose answer the training length
cut off entirely gets no answer score (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safety.answer_head import answer_span
from safety.data import encode_example
from safety.probe import Probe, resolve_layers
from safety.probe.features import pooling_spans, prompt_token_ids
from safety.reference import PooledSpan, ReferenceCache, reference_pass


@dataclass(frozen=True)
class WindowScores:
    """What one reference pass over a scan window gives, per trained turn in order: the
    probe's harmful probability (``None`` without a probe) and the answer-side head's
    (``None`` without a head; an entry is ``None`` for a turn cut off), and the cache."""

    probe: list[float] | None
    answer: list[float | None] | None
    cache: ReferenceCache


def probe_and_reference(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    turns: Sequence[Sequence[Any]],
    *,
    k: int,
    max_len: int,
    probe: Probe | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
) -> WindowScores:
    """For ``examples`` and their trained ``turns`` (``safety.scan.TargetTurn`` lists): the
    probe's and its answer-side head's (``probe.answer``) scores of every turn and the
    reference cache of the examples encoded to ``max_len`` tokens with top-``k`` log-probs.
    ``batch_size`` is the probe's batch for turns it scores itself; ``max_tokens`` bounds the
    padded tokens of every batch (``safety.batching``)."""
    encoded = [encode_example(tokenizer, example, max_len) for example in examples]
    flat = [(i, turn) for i, ex_turns in enumerate(turns) for turn in ex_turns]
    merged: dict[int, int] = {}  # flat turn index -> its row among the pooled spans
    prompts: list[list[int]] = []
    owners: list[int] = []
    if probe is not None:
        for j, (i, turn) in enumerate(flat):
            ids = prompt_token_ids(tokenizer, turn.prompt, probe.max_len)
            end = encoded[i].prompt_ends[turn.turn - 1]
            if end <= len(encoded[i].input_ids) and encoded[i].input_ids[:end] == ids:
                merged[j] = len(prompts)
                prompts.append(ids)
                owners.append(i)
    spans = (
        [PooledSpan(i, s, e) for i, (s, e) in zip(owners, pooling_spans(tokenizer, prompts, probe.pool))]
        if probe
        else []
    )
    head = probe.answer if probe is not None else None
    answered: dict[int, int] = {}  # flat turn index -> its row among the spans
    if head is not None:
        for j, (i, turn) in enumerate(flat):
            span = answer_span(encoded[i], turn.turn)
            if span is not None:
                answered[j] = len(spans)
                spans.append(PooledSpan(i, *span))
    wanted = (*probe.layers, *(head.layers if head is not None else ())) if probe is not None else ()
    layers = sorted(set(resolve_layers(wanted, model.config.num_hidden_layers)))
    cache, features = reference_pass(
        model.eval(), encoded, tokenizer.pad_token_id, k, layers=layers, spans=spans, max_tokens=max_tokens
    )
    if probe is None:
        return WindowScores(None, None, cache)
    pooled = [float(p) for p in probe.predict_proba_features(features[: len(prompts)], layers)] if prompts else []
    rest = [j for j in range(len(flat)) if j not in merged]
    unmerged = [flat[j][1].prompt for j in rest]
    own = probe.predict_proba(model, tokenizer, unmerged, batch_size, max_tokens) if rest else []
    by_turn = dict(zip(rest, own))
    scores = [pooled[merged[j]] if j in merged else by_turn[j] for j in range(len(flat))]
    if head is None:
        return WindowScores(scores, None, cache)
    rows = sorted(answered.values())
    head_p = head.predict_proba_features(features[rows], layers).tolist() if rows else []
    by_row = dict(zip(rows, head_p))
    return WindowScores(scores, [by_row[answered[j]] if j in answered else None for j in range(len(flat))], cache)
