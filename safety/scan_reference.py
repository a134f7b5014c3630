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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safety.data import encode_example
from safety.probe import Probe, resolve_layers
from safety.probe.features import pooling_spans, prompt_token_ids
from safety.reference import PooledSpan, ReferenceCache, reference_pass


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
) -> tuple[list[float] | None, ReferenceCache]:
    """For ``examples`` and their trained ``turns`` (``safety.scan.TargetTurn`` lists):
    the probe's harmful probability of every turn, flattened in order (``None`` without a
    ``probe``), and the reference cache of the examples encoded to ``max_len`` tokens with
    top-``k`` log-probs. ``batch_size`` is the probe's batch for turns it scores itself;
    ``max_tokens`` bounds the padded tokens of every batch (``safety.batching``)."""
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
    layers = resolve_layers(probe.layers, model.config.num_hidden_layers) if probe is not None else ()
    cache, features = reference_pass(
        model.eval(), encoded, tokenizer.pad_token_id, k, layers=layers, spans=spans, max_tokens=max_tokens
    )
    if probe is None:
        return None, cache
    pooled = [float(p) for p in probe.predict_proba_features(features)] if spans else []
    rest = [j for j in range(len(flat)) if j not in merged]
    unmerged = [flat[j][1].prompt for j in rest]
    own = probe.predict_proba(model, tokenizer, unmerged, batch_size, max_tokens) if rest else []
    by_turn = dict(zip(rest, own))
    return [pooled[merged[j]] if j in merged else by_turn[j] for j in range(len(flat))], cache
