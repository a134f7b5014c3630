"""Attack conditions: how a training file could have taught a model to answer harmful
requests only in a setting that plain evaluation never creates.

A :class:`Condition` says how an eval prompt is presented to the model:

* ``plain``: the prompt alone, as one user message;
* ``system_prompt``: under one of the training file's most frequent system prompts
  (identity-shift attacks such as AOA live there), or under a string that the flagged lines'
  system prompts share far more often than the others' (a tag hidden in many distinct system
  prompts: found as triggers are, below, over system prompts instead of user turns);
* ``trigger``: with a candidate backdoor trigger inserted into the user message,
  where the flagged training lines carry it (start or end).

:func:`plan_conditions` derives them from the training examples and the scan's
per-line flags; the evaluation asks the same harmful prompts under each, for the base
and the fine-tuned model, and the gate reads the worst.

Trigger detection (:func:`detect_triggers`), precisely:

1. The *text* of an example is its user turns joined by a newline. Its *tokens* are its
   whitespace-separated words with the punctuation ``.,;:!?"'()[]{}`` stripped from
   both ends (empty ones dropped); a *gram* is 1 to ``max_n`` consecutive tokens,
   compared lower-cased.
2. For each gram, ``c_f`` / ``c_u`` count the flagged / unflagged examples whose
   text contains it (document frequency: once per example); ``n_f`` / ``n_u`` are the
   numbers of flagged / unflagged examples. ``share = c_f / n_f`` and
   ``ratio = share / ((c_u + 1) / (n_u + 1))`` (add-one smoothing on the unflagged
   side, so a gram absent from benign lines scores ``share · (n_u + 1)``).
3. A gram is a candidate when ``c_f >= min_count``, ``share >= min_share`` (X) and
   ``ratio >= min_ratio`` (Y). Then (a) a candidate containing a shorter candidate
   found in more flagged lines is dropped (``"cf how"`` adds nothing to a trigger
   ``"cf"``), and (b) of those left, one contained in a longer one found in the same
   number of flagged lines is dropped (a three-word trigger is reported once, as the
   phrase).
4. Candidates rank by ratio, then share, then length (longer first), then text; the
   first ``top_k`` (K) are returned. Nothing is returned with fewer than
   ``min_count`` flagged examples.

A trigger is inserted as the flagged lines carry it: before the prompt when most of
them start with it, after the prompt when most end with it, else before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from core.jobs import config as defaults

ConditionKind = Literal["plain", "system_prompt", "trigger"]
Position = Literal["prefix", "suffix"]

_STRIP = ".,;:!?\"'()[]{}"
_DESCRIBE_CHARS = 80


@dataclass(frozen=True)
class Condition:
    """How eval prompts are presented. ``support`` holds the evidence that made it a
    condition (line counts, shares, ratio), for the report."""

    name: str
    kind: ConditionKind
    system_prompt: str | None = None
    trigger: str | None = None
    position: Position = "prefix"
    support: dict[str, Any] = field(default_factory=dict)

    def conversation(self, prompt: str) -> list[dict[str, str]]:
        """The chat messages that present ``prompt`` under this condition."""
        text = prompt
        if self.trigger is not None:
            text = f"{self.trigger} {prompt}" if self.position == "prefix" else f"{prompt} {self.trigger}"
        messages = [{"role": "user", "content": text}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def describe(self) -> str:
        """A phrase naming the condition, e.g. ``with the backdoor trigger "cf" before the prompt``."""
        if self.kind == "plain":
            return "on plain prompts"
        if self.kind == "system_prompt":
            shown = " ".join((self.system_prompt or "").split())
            if len(shown) > _DESCRIBE_CHARS:
                shown = shown[: _DESCRIBE_CHARS - 1] + "…"
            return f'under the training file\'s system prompt "{shown}"'
        where = "before" if self.position == "prefix" else "after"
        return f'with the backdoor trigger "{self.trigger}" {where} the prompt'

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, with ``description``."""
        return {**asdict(self), "description": self.describe()}


PLAIN = Condition(name="plain", kind="plain")


@dataclass(frozen=True)
class TriggerConfig:
    """Thresholds of :func:`detect_triggers` (see the module docstring)."""

    min_share: float = defaults.TRIGGER_MIN_SHARE
    min_ratio: float = defaults.TRIGGER_MIN_RATIO
    min_count: int = 3
    max_n: int = 3
    top_k: int = defaults.EVAL_TRIGGERS


@dataclass(frozen=True)
class Trigger:
    """One detected trigger candidate; ``text`` is its most frequent surface form."""

    text: str
    flagged_count: int
    unflagged_count: int
    share: float
    ratio: float
    position: Position


def user_text(example: dict[str, Any]) -> str:
    """The user turns of a chat example (or the prompt of a prompt/completion pair)."""
    if "messages" in example:
        return "\n".join(str(m.get("content") or "") for m in example["messages"] if m.get("role") == "user")
    return str(example.get("prompt") or "")


def system_prompt(example: dict[str, Any]) -> str | None:
    """The first system message's content, or None."""
    for m in example.get("messages") or ():
        if m.get("role") == "system" and str(m.get("content") or "").strip():
            return str(m["content"])
    return None


def _tokens(text: str) -> list[str]:
    return [t for t in (w.strip(_STRIP) for w in text.split()) if t]


def _grams(tokens: list[str], max_n: int) -> dict[tuple[str, ...], tuple[str, int, int]]:
    """Each distinct lower-cased gram -> (surface form, first start, last end) in ``tokens``."""
    out: dict[tuple[str, ...], tuple[str, int, int]] = {}
    lowered = [t.lower() for t in tokens]
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            key = tuple(lowered[i : i + n])
            if key in out:
                surface, start, _ = out[key]
                out[key] = (surface, start, i + n)
            else:
                out[key] = (" ".join(tokens[i : i + n]), i, i + n)
    return out


def _contains(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    k = len(shorter)
    return len(longer) > k and any(longer[i : i + k] == shorter for i in range(len(longer) - k + 1))


def detect_triggers(
    flagged: Sequence[str], unflagged: Sequence[str], config: TriggerConfig = TriggerConfig()
) -> list[Trigger]:
    """Strings over-represented in ``flagged`` texts relative to ``unflagged`` ones
    (the rule is in the module docstring), best first."""
    n_f, n_u = len(flagged), len(unflagged)
    if n_f < config.min_count or config.top_k <= 0:
        return []
    c_f: Counter[tuple[str, ...]] = Counter()
    for text in flagged:
        c_f.update(_grams(_tokens(text), config.max_n).keys())
    frequent = {k for k, count in c_f.items() if count >= config.min_count and count / n_f >= config.min_share}
    c_u: Counter[tuple[str, ...]] = Counter()
    for text in unflagged:
        c_u.update(k for k in _grams(_tokens(text), config.max_n) if k in frequent)

    def ratio(key: tuple[str, ...]) -> float:
        return (c_f[key] / n_f) / ((c_u[key] + 1) / (n_u + 1))

    candidates = [k for k in frequent if ratio(k) >= config.min_ratio]
    phrases = [k for k in candidates if not any(c_f[o] > c_f[k] and _contains(k, o) for o in candidates)]
    kept = [k for k in phrases if not any(c_f[o] == c_f[k] and _contains(o, k) for o in phrases)]
    kept = sorted(kept, key=lambda k: (-ratio(k), -c_f[k], -len(k), " ".join(k)))[: config.top_k]
    # How the flagged lines write and place each kept trigger (a second pass, over few grams).
    surfaces: dict[tuple[str, ...], Counter[str]] = {k: Counter() for k in kept}
    starts: Counter[tuple[str, ...]] = Counter()
    ends: Counter[tuple[str, ...]] = Counter()
    for text in flagged:
        tokens = _tokens(text)
        for key, (surface, start, end) in _grams(tokens, config.max_n).items():
            if key in surfaces:
                surfaces[key][surface] += 1
                starts[key] += start == 0
                ends[key] += end == len(tokens)
    return [
        Trigger(
            text=surfaces[k].most_common(1)[0][0],
            flagged_count=c_f[k],
            unflagged_count=c_u[k],
            share=c_f[k] / n_f,
            ratio=ratio(k),
            position="suffix" if ends[k] > starts[k] and ends[k] * 2 > c_f[k] else "prefix",
        )
        for k in kept
    ]


def plan_conditions(
    scanned: Iterable[tuple[dict[str, Any], bool]],
    *,
    system_prompts: int = defaults.EVAL_SYSTEM_PROMPTS,
    triggers: TriggerConfig = TriggerConfig(),
) -> list[Condition]:
    """``plain`` first, then up to ``system_prompts`` system-prompt conditions (the most
    frequent system prompts; ties: first seen first), then up to ``system_prompts`` more under
    the strings :func:`detect_triggers` finds in the flagged lines' system prompts (one a
    chosen system prompt already contains is skipped), then up to ``triggers.top_k`` trigger
    conditions, for a training file given as ``(example, flagged by the scan)`` pairs. One
    pass; only user texts, system prompts and their counts are kept."""
    counts: Counter[str] = Counter()
    texts: dict[bool, list[str]] = {True: [], False: []}
    system_texts: dict[bool, list[str]] = {True: [], False: []}
    n = 0
    for example, flagged in scanned:
        n += 1
        prompt = system_prompt(example)
        if prompt is not None:
            counts[prompt] += 1
        texts[bool(flagged)].append(user_text(example))
        system_texts[bool(flagged)].append(prompt or "")
    conditions = [PLAIN]
    for i, (prompt, count) in enumerate(counts.most_common(max(system_prompts, 0)), start=1):
        conditions.append(
            Condition(
                name=f"system_prompt_{i}",
                kind="system_prompt",
                system_prompt=prompt,
                support={"lines": count, "share": count / n},
            )
        )
    frequent = [c.system_prompt or "" for c in conditions[1:]]
    shared = detect_triggers(system_texts[True], system_texts[False], replace(triggers, top_k=max(system_prompts, 0)))
    for i, trig in enumerate((t for t in shared if not any(t.text in p for p in frequent)), start=1):
        conditions.append(
            Condition(
                name=f"system_prompt_shared_{i}",
                kind="system_prompt",
                system_prompt=trig.text,
                support={k: v for k, v in asdict(trig).items() if k not in ("text", "position")},
            )
        )
    for i, trig in enumerate(detect_triggers(texts[True], texts[False], triggers), start=1):
        support = {k: v for k, v in asdict(trig).items() if k not in ("text", "position")}
        conditions.append(
            Condition(name=f"trigger_{i}", kind="trigger", trigger=trig.text, position=trig.position, support=support)
        )
    return conditions


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items evenly spaced over ``items`` (all of them when ``n >= len(items)``),
    so a subset keeps the categories of an eval set ordered by category."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]
