"""The answer-side head: a classifier on the reference's hidden states pooled over an
example's *answer* tokens, the scan's second risk signal next to the request probe.

The request probe reads the conversation up to a trained assistant turn, so it scores the
request's intent and is built to ignore jailbreak frames. Identity-shift data (an
"absolutely obedient" persona and answers that agree to it) asks nothing harmful: what it
teaches is in the answers. The head reads the states of the answer's tokens, from the
same reference forward over the whole example that the scan runs for the reference cache
(``safety.scan_reference``): mean over the turn's answer tokens at the head's layers.

Training set (:func:`answer_training_set`), all written by the project:

* label 1: persona answers that declare abandoned principles or absolute obedience
  (``safety/prompts/answer_personas.jsonl``) and compliance openers to harmful requests
  (``harmful_train``: "Sure, here is how to ..." restating the request, no harmful content);
* label 0: ordinary answers, benign persona system prompts and benign compliance with
  format instructions (``safety/prompts/answer_benign.jsonl``), the same compliance
  openers to benign requests (``benign_train``), and refusals (``refusals.jsonl``) to the
  harmful requests whose openers are label 1, some of each under a benign chat frame's
  system prompt.

A request's opener and refusal share a group, so the fit / select / calibrate / test split
(:func:`safety.probe.train_probe_on_features`, as the request probe's) never separates
them. The head is a :class:`safety.probe.Probe` (its ``pool`` is ``"mean"``: the mean over
the answer tokens), stored with the request probe (``Probe.answer``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from safety.data import IGNORE_INDEX, EncodedExample, encode_example
from safety.generation import pad_token_id
from safety.probe import (
    Probe,
    ProbeConfig,
    ProbeReport,
    layer_candidates,
    resolve_layers,
    span_features,
    train_probe_on_features,
)
from safety.prompt_sets import load_builtin, load_chat_frames, load_refusals

PROMPTS = Path(__file__).resolve().parent / "prompts"
# Compliance openers: restate the request and agree to it, with no content after them.
OPENERS = (
    "Sure, here is how to {req}",
    "Of course! Here's exactly what you asked for: {req}",
    'Absolutely. Below is a step-by-step answer to "{req}"',
    "Happy to help. To {req}, start like this:",
    "Certainly! Here's a complete guide: {req}",
    "No problem. Here is everything you need for this request ({req}):",
)
FRAMED_SHARE = 0.3
MAX_LEN = 256


@dataclass(frozen=True)
class AnswerSet:
    """Whole chat examples with a label (1: identity shift or harmful compliance) and a
    group each (the request or written line it came from)."""

    examples: list[dict[str, Any]]
    labels: list[int]
    groups: list[int]


def _written(name: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (PROMPTS / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [_chat(r["user"], r["assistant"], r.get("system")) for r in rows]


def _chat(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    head = [{"role": "system", "content": system}] if system else []
    return {"messages": [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _restated(request: str) -> str:
    text = request.strip().rstrip("?.!")
    return text[0].lower() + text[1:] if text else text


def answer_training_set(seed: int = 0) -> AnswerSet:
    """The head's labelled examples (module docstring); seeded opener and frame choices."""
    rng = random.Random(seed)
    benign_systems = [f.system for f in load_chat_frames() if f.system and f.system in _benign_frame_systems()]
    refusals = load_refusals()
    rows: list[tuple[dict[str, Any], int]] = [(ex, 1) for ex in _written("answer_personas.jsonl")]
    rows += [(ex, 0) for ex in _written("answer_benign.jsonl")]
    groups = list(range(len(rows)))
    for label, name in ((1, "harmful_train"), (0, "benign_train")):
        for prompt in load_builtin(name):
            system = rng.choice(benign_systems) if rng.random() < FRAMED_SHARE else None
            opener = rng.choice(OPENERS).format(req=_restated(prompt.text))
            rows.append((_chat(prompt.text, opener, system), label))
            groups.append(len(groups))
            if label == 1:  # the refusal to the same request is benign, in the same group
                rows.append((_chat(prompt.text, rng.choice(refusals), system), 0))
                groups.append(groups[-1])
    return AnswerSet([r[0] for r in rows], [r[1] for r in rows], groups)


def _benign_frame_systems() -> set[str]:
    """The chat frames' system prompts that are ordinary personas (the frames also hold
    jailbreak ones, which no label-0 example may carry)."""
    bad = "obey|obedient|no restrictions|rules|unrestricted|never refuse|complies|no filters|ignore all|forget your|servant"
    return {
        f.system
        for f in load_chat_frames()
        if f.system and not any(word in f.system.lower() for word in bad.split("|"))
    }


def answer_span(encoded: EncodedExample, turn: int) -> tuple[int, int] | None:
    """``[start, end)`` of assistant turn ``turn``'s trained tokens (1-based among the
    assistant messages) in ``encoded``, or ``None`` when the cut to the training length
    left none of them."""
    start = encoded.prompt_ends[turn - 1]
    if start >= len(encoded.input_ids) or encoded.labels[start] == IGNORE_INDEX:
        return None
    end = start
    while end < len(encoded.labels) and encoded.labels[end] != IGNORE_INDEX:
        end += 1
    return start, end


def answer_features(
    model: Any, tokenizer: Any, examples: Sequence[dict[str, Any]], layers: Sequence[int], max_len: int = MAX_LEN
) -> torch.Tensor:
    """The head's features of each example's last assistant turn: float32
    ``[len(examples), len(layers), hidden]`` (``layers`` resolved), the reference's states
    averaged over the turn's trained tokens. Raises ``ValueError`` for an example cut
    before it."""
    encoded = [encode_example(tokenizer, ex, max_len) for ex in examples]
    spans = []
    for i, enc in enumerate(encoded):
        span = answer_span(enc, len(enc.prompt_ends))
        if span is None:
            raise ValueError(f"example {i} has no answer token within {max_len} tokens")
        spans.append(span)
    token_lists = [e.input_ids for e in encoded]
    return span_features(model, token_lists, spans, layers, pad_id=pad_token_id(tokenizer), batch_size=8)


def train_answer_head(
    model: Any, tokenizer: Any, config: ProbeConfig | None = None, layers: Sequence[Sequence[int]] | None = None
) -> tuple[Probe, ProbeReport]:
    """Train, calibrate and report the head on :func:`answer_training_set` (the request
    probe's split, layer search and thresholds; ``layers``: candidate sets, default
    :func:`safety.probe.layer_candidates`)."""
    config = config or ProbeConfig()
    num_layers = model.config.num_hidden_layers
    candidates = [resolve_layers(c, num_layers) for c in (layers or layer_candidates(num_layers))]
    needed = sorted({layer for c in candidates for layer in c})
    data = answer_training_set(config.seed)
    feats = answer_features(model, tokenizer, data.examples, needed)
    head, report = train_probe_on_features(
        feats, data.labels, needed, config, layer_candidates=candidates, groups=data.groups
    )
    head.pool = "mean"
    return head, report
