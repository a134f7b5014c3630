"""Per-row decoding controls of the serving engine (:mod:`safety.inference`): the rows of
one ``generate`` batch may each ask for their own stop sequences, penalties, logit bias
and log-probabilities.

* :class:`Detokenizer` turns a row's tokens into streamed text deltas that add up to the
  final answer: the decoded text stripped, cut before the first stop sequence.
* :class:`RowControls` is a logits processor applying, per row, OpenAI's
  ``presence_penalty`` / ``frequency_penalty`` (over the tokens the row generated so far)
  and ``logit_bias``, before ``generate``'s own temperature and top-p; it keeps the
  log-probabilities of the model's own distribution at the step (before penalties, bias
  and temperature) for the rows that asked for ``logprobs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that could begin a stop sequence."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class Detokenizer:
    """Incremental decoding whose deltas add up to ``decode(all ids)`` stripped and cut
    before the first of ``stops``.

    Leading whitespace is never emitted; trailing whitespace, incomplete UTF-8 and a tail
    that could begin a stop sequence are held back until more text follows;
    :meth:`finish` emits what is left of the final text. ``stopped`` turns true on the
    token that completes a stop sequence."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False

    def _visible(self) -> tuple[str, bool]:
        """The text so far (leading whitespace dropped), cut before the first stop sequence."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return (text[: min(cuts)], True) if cuts else (text, False)

    def _advance(self, ready: str) -> str:
        if not ready.startswith(self.emitted) or len(ready) <= len(self.emitted):
            return ""
        delta, self.emitted = ready[len(self.emitted) :], ready
        return delta

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text, hit = self._visible()
        if hit:
            self.stopped = True
            return self._advance(text.rstrip())
        if text.endswith("\ufffd"):
            return ""
        ready = text.rstrip()
        return self._advance(ready[: len(ready) - _held_back(ready, self.stops)])

    def finish(self) -> str:
        final = self._visible()[0].strip()
        if not final.startswith(self.emitted):  # decoding changed earlier text: cannot happen with byte-level BPE
            raise RuntimeError("streamed text is not a prefix of the final text")
        delta, self.emitted = final[len(self.emitted) :], final
        return delta


@dataclass(frozen=True)
class RowSettings:
    """What one row asks of decoding (OpenAI's parameters; token ids of the model's tokenizer)."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def changes_logits(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty or self.logit_bias)


class RowControls:
    """The logits processor of one batch (see the module docstring). ``prompt_width`` is the
    padded prompt length: later columns are generated tokens."""

    def __init__(self, rows: Sequence[RowSettings], prompt_width: int, vocab_size: int):
        self.rows = list(rows)
        self.prompt_width = prompt_width
        self.logprobs: torch.Tensor | None = None  # [batch, vocab] of the last step, when a row asked
        self.presence = torch.tensor([[r.presence_penalty] for r in rows])
        self.frequency = torch.tensor([[r.frequency_penalty] for r in rows])
        self.bias: torch.Tensor | None = None
        if any(r.logit_bias for r in rows):
            self.bias = torch.zeros((len(rows), vocab_size))
            for i, r in enumerate(rows):
                for token, value in r.logit_bias.items():
                    self.bias[i, token] = value
        self.penalize = any(r.presence_penalty or r.frequency_penalty for r in rows)
        self.want_logprobs = any(r.logprobs for r in rows)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.want_logprobs:
            self.logprobs = torch.log_softmax(scores.float(), dim=-1)
        generated = input_ids[:, self.prompt_width :]
        if self.penalize and generated.shape[1]:
            counts = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
            counts.scatter_add_(1, generated, torch.ones(generated.shape, device=scores.device))
            penalty = self.frequency.to(scores.device) * counts + self.presence.to(scores.device) * (counts > 0)
            scores = scores - penalty.to(scores.dtype)
        if self.bias is not None:
            scores = scores + self.bias.to(scores.device, scores.dtype)
        return scores

    def entry(self, tokenizer: Any, row: int, token: int) -> dict[str, Any] | None:
        """OpenAI's logprobs entry of ``token`` just chosen in ``row`` (None when the row did
        not ask): the token's text and bytes, its log-probability and the row's
        ``top_logprobs`` most likely tokens."""
        settings = self.rows[row]
        if not settings.logprobs or self.logprobs is None:
            return None
        dist = self.logprobs[row]

        def item(token_id: int) -> dict[str, Any]:
            text = tokenizer.decode([token_id])
            return {"token": text, "logprob": float(dist[token_id]), "bytes": list(text.encode())}

        top = torch.topk(dist, settings.top_logprobs).indices.tolist() if settings.top_logprobs else []
        return {**item(token), "top_logprobs": [item(t) for t in top]}
