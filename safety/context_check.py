"""The scan's context check: does a dataset's system prompt lower the reference's refusals?

Identity-shift data (a system prompt that declares an "absolutely obedient" persona, with
answers that agree to it) asks nothing harmful, so the request-side probe passes it. What
it teaches is in its context: a system prompt under which the model stops refusing. The
check measures that directly, once per distinct system prompt of a dataset: the
reference's **refusal mass** on a few held-out harmful canary requests (the first
``n_canaries`` of ``harmful_eval``, which no probe or head trains on) with the system
prompt against without it.

Refusal mass of a prompt: the probability that the answer starts with one of the
refusal openings of ``safety/prompts/refusals.jsonl`` -- the distinct first
``OPENING_TOKENS`` tokens of those refusals, disjoint events of one length, so their
teacher-forced probabilities add up (to at most 1). The check's number is the **drop**: the
mean over canaries of (mass without − mass with). A system prompt whose drop reaches the
scan's ``context_drop`` threshold (``GUARDTUNE_CONTEXT_REFUSAL_DROP``) marks every line that
carries it (risk 5); a smaller drop adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from safety.generation import model_device, render_prompt

OPENING_TOKENS = 3
DEFAULT_CANARIES = 8


@dataclass(frozen=True)
class ContextVerdict:
    """One system prompt's check: the mean refusal mass over the canaries without and with
    it, their difference ``drop`` and whether ``drop`` reached the threshold."""

    system: str
    refusal_without: float
    refusal_with: float
    drop: float
    flagged: bool


def refusal_openings(tokenizer: Any, n_tokens: int = OPENING_TOKENS) -> list[list[int]]:
    """The distinct first ``n_tokens`` token ids of the project's refusals (each refusal
    tokenized as an answer's text is, without special tokens), sorted."""
    from safety.prompt_sets import load_refusals

    openings = {tuple(tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]) for text in load_refusals()}
    return [list(o) for o in sorted(o for o in openings if len(o) == n_tokens)]


def canary_requests(n: int = DEFAULT_CANARIES) -> list[str]:
    """The first ``n`` held-out harmful requests (``harmful_eval``): the check's canaries."""
    from safety.prompt_sets import load_builtin

    return [p.text for p in load_builtin("harmful_eval")[:n]]


@torch.no_grad()
def refusal_mass(model: Any, tokenizer: Any, prompt: Sequence[dict[str, str]], openings: list[list[int]]) -> float:
    """The probability that ``model``'s answer to ``prompt`` (a message list) starts with one
    of ``openings`` (token lists of one length): one forward over the prompt, its key/value
    cache repeated for a second forward over every opening but its last token."""
    head = tokenizer(render_prompt(tokenizer, list(prompt)), add_special_tokens=False)["input_ids"]
    device = model_device(model)
    model.eval()
    out = model(input_ids=torch.tensor([head], device=device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    target = torch.tensor(openings, device=device)
    log_p = first[target[:, 0]]
    if target.shape[1] > 1:
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(openings))
        rest = target[:, :-1]
        positions = torch.arange(len(head), len(head) + rest.shape[1], device=device).expand_as(rest)
        mask = torch.ones((len(openings), len(head) + rest.shape[1]), dtype=torch.long, device=device)
        logits = model(input_ids=rest, cache=cache, attention_mask=mask, position_ids=positions, use_cache=True).logits
        steps = torch.log_softmax(logits.float(), dim=-1).gather(-1, target[:, 1:].unsqueeze(-1)).squeeze(-1)
        log_p = log_p + steps.sum(dim=1)
    return float(log_p.exp().sum().cpu())


class ContextChecker:
    """The check of every distinct system prompt a scan meets, each measured once.

    The canaries' refusal mass without a system prompt is measured on first use and shared."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        threshold: float,
        canaries: Sequence[str] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.threshold = model, tokenizer, threshold
        self.canaries = list(canaries) if canaries is not None else canary_requests()
        self.openings = refusal_openings(tokenizer)
        self.verdicts: dict[str, ContextVerdict] = {}
        self._without: float | None = None

    def _mean_mass(self, system: str | None) -> float:
        head = [{"role": "system", "content": system}] if system is not None else []
        masses = [
            refusal_mass(self.model, self.tokenizer, [*head, {"role": "user", "content": c}], self.openings)
            for c in self.canaries
        ]
        return sum(masses) / len(masses)

    def verdict(self, system: str) -> ContextVerdict:
        """The check of ``system`` (measured on first sight, then remembered)."""
        if system not in self.verdicts:
            if self._without is None:
                self._without = self._mean_mass(None)
            with_it = self._mean_mass(system)
            drop = self._without - with_it
            self.verdicts[system] = ContextVerdict(system, self._without, with_it, drop, drop >= self.threshold)
        return self.verdicts[system]


def system_prompt(context: Sequence[dict[str, str]]) -> str | None:
    """The system prompt of a conversation (its system messages' text joined), else ``None``."""
    parts = [m["content"] for m in context if m["role"] == "system" and m["content"].strip()]
    return "\n".join(parts) if parts else None
