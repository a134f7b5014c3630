"""The scan's signals over one window of examples: the request probe, the judge, the
answer-side head (``Probe.answer``) and the context check, each turn's raw scores in
a :class:`TurnScores`. ``safety.scan`` turns them into risks (the max over signals)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safety.context_check import ContextChecker, ContextVerdict, system_prompt
from safety.judge import Judge
from safety.probe import Probe
from safety.reference import ReferenceCache
from safety.scan_reference import probe_and_reference

ANSWER_PASS_LEN = 2048  # tokens of an example the answer-side head's own pass reads (no training length given)


@dataclass(frozen=True)
class TurnScores:
    """One turn's raw scores, each ``None`` where its signal did not run."""

    p: float | None = None
    verdict: Any = None
    answer_p: float | None = None
    context: ContextVerdict | None = None


@dataclass
class ScanSignals:
    """The signals of a scan and how one window of examples gets their scores."""

    probe: Probe | None
    judge: Judge | None
    checker: ContextChecker | None
    model: Any
    tokenizer: Any

    def window(
        self,
        examples: Sequence[dict[str, Any]],
        per_example: Sequence[Sequence[Any]],
        batch_size: int,
        reference_topk: int | None,
        max_len: int | None,
        max_tokens: int | None = None,
    ) -> tuple[list[TurnScores], ReferenceCache | None]:
        """Every trained turn's scores, in order, and the window's reference cache (with
        ``reference_topk``); ``max_tokens`` bounds the padded tokens of the model's batches. The answer-side head needs the reference pass over whole
        examples: without the cache it runs one with top-1 log-probs, then drops them."""
        turns = [t for ts in per_example for t in ts]
        probs: Sequence[float | None] = [None] * len(turns)
        answers: Sequence[float | None] = [None] * len(turns)
        cache = None
        if reference_topk is not None or (self.probe is not None and self.probe.answer is not None):
            scores = probe_and_reference(
                self.model,
                self.tokenizer,
                examples,
                per_example,
                k=reference_topk or 1,
                max_len=max_len or ANSWER_PASS_LEN,
                probe=self.probe,
                batch_size=batch_size,
                max_tokens=max_tokens,
            )
            cache = scores.cache if reference_topk is not None else None
            probs, answers = scores.probe or probs, scores.answer or answers
        elif self.probe is not None:
            prompts = [t.prompt for t in turns]
            probs = self.probe.predict_proba(self.model, self.tokenizer, prompts, batch_size, max_tokens)
        verdicts = (
            self.judge.score([(t.instruction, t.response) for t in turns])
            if self.judge is not None
            else [None] * len(turns)
        )
        contexts = [self._context(t) for t in turns]
        return [TurnScores(*row) for row in zip(probs, verdicts, answers, contexts)], cache

    def _context(self, turn: Any) -> ContextVerdict | None:
        system = system_prompt(turn.context) if self.checker is not None else None
        return self.checker.verdict(system) if self.checker is not None and system is not None else None
