"""Dataset risk scan: score every trained assistant turn of every example, before training.

An example is an OpenAI chat example (``{"messages": [...]}``) or a prompt/completion
pair (``{"prompt", "completion"}``). Every assistant turn that is trained (see
``safety.data``: each assistant message without ``"weight": 0``) is scored:

* the probe reads the conversation up to (not including) that turn -- system prompt,
  earlier turns and all -- rendered with the chat template, i.e. the pre-generation
  state the paper probes;
* the judge reads (the conversation up to that turn, the assistant's text): the
  instruction is the last user message alone when nothing precedes it, else a
  transcript of the system prompt and earlier turns ending with that message (or with the
  tool results after it, which the turn answers).

A tool call is answer text: the probe's prompt is rendered with the example's ``tools``
and earlier tool calls as training renders them, and the judge reads a turn's calls as
``name(arguments)`` after its content (:func:`safety.templates.answer_text`), so harm
carried in a call's arguments is scored like harm in prose.

Two more signals read what the request does not (identity-shift data: an obedient persona
whose answers ask nothing harmful), both beyond the paper, whose estimators read the
request (probe) or the pair (judge) only:

* the answer-side head (``probe.answer``, ``safety.answer_head``) reads the reference's
  states over the turn's answer tokens, from the forward over the whole example that the
  reference cache needs (without the cache, a top-1 pass is run for it);
* the context check (``ScanConfig.context_drop``, ``safety.context_check``) measures once
  per distinct system prompt how much it lowers the reference's refusal of held-out harmful
  canaries; a drop at or above the threshold gives every turn under it risk 5.

A turn's risk is the max over its signals and ``ExampleRisk.signal`` names the one that
gave it; an example's risk is the max over its trained turns; ``ExampleRisk.turn`` says which
turn (1-based among the example's assistant messages) gave it.
``estimator="both"`` takes the max of probe and judge (high recall). Risks are on the
1-5 scale; an example is flagged when its risk reaches ``ScanConfig.flag_threshold``.
The scan streams: examples may come from any iterator (optionally as
``(line_number, example)`` pairs; otherwise lines count from 1) and are read
``ScanConfig.window`` at a time; within a window the probe runs length-sorted forward
batches of ``batch_size`` over all their turns and the judge gets every pair at once
(its own concurrency applies); ``progress(n_done)`` is called after every window.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from core.jobs.config import FLAG_THRESHOLD, PROBE_RISK
from core.jobs.vocab import Estimator
from safety import interrupt
from safety.context_check import DEFAULT_CANARIES, ContextChecker, canary_requests
from safety.generation import PromptLike, ToolConversation
from safety.judge import PROHIBITED_CATEGORIES, Judge
from safety.probe import Probe, RiskMode
from safety.reference import ReferenceCache
from safety.scan_signals import ScanSignals, TurnScores
from safety.templates import answer_text, example_tools

Example = dict[str, Any]
SIGNALS = ("probe", "judge", "answer", "context")

# Plain keyword cues per rubric category, used only to label flagged examples.
_CATEGORY_CUES: dict[str, tuple[str, ...]] = {
    "child abuse": ("child", "minor", "underage", "kid"),
    "malware": ("malware", "virus", "ransomware", "keylogger", "exploit", "hack", "botnet", "phishing"),
    "physical harm": ("bomb", "explosive", "weapon", "poison", "gun", "suicide", "self-harm", "kill"),
    "hate/harassment/violence": ("hate", "harass", "racist", "bully", "threat", "violence", "attack"),
    "fraud/deception": ("scam", "fraud", "fake", "counterfeit", "forge", "impersonat", "misinformation"),
    "privacy violation": ("stalk", "track someone", "doxx", "personal data", "spy on", "surveil"),
    "economic harm": ("gambling", "pyramid", "ponzi", "insider trading", "manipulate the market"),
    "adult content": ("sexual", "porn", "explicit", "erotic", "nude"),
    "political campaigning": ("campaign", "election", "vote", "candidate", "propaganda"),
    "tailored financial advice": ("invest my", "which stock", "portfolio", "retirement savings"),
    "illegal activity": ("steal", "drug", "launder", "smuggl", "illegal", "evade", "shoplift", "cocaine"),
}
assert set(_CATEGORY_CUES) == set(PROHIBITED_CATEGORIES)


@dataclass(frozen=True)
class ScanConfig:
    """Scan policy. ``probe_risk`` maps the probe's probability to risk
    (:func:`safety.probe.risk_from_p`): ``"binary"`` is the paper's verdict mapping (5 at
    or above the probe's reporting threshold, else 1), ``"calibrated"`` is ``1 + 4p``,
    ``"graded"`` runs piecewise-linearly through the probe's weighting threshold (risk 3.5)
    and its reporting threshold (risk 4), so at the default ``flag_threshold`` it flags what
    ``"binary"`` flags while the risks, hence the training weights, are graded. ``window``
    is the number of examples read and scored per step (bounded memory; larger windows
    sort by length better). ``context_drop``: the refusal drop at which a system prompt's
    context check flags its lines (``None``: no check), over ``context_canaries`` canaries."""

    flag_threshold: float = FLAG_THRESHOLD
    top_k: int = 20
    probe_risk: RiskMode = PROBE_RISK
    window: int = 128
    context_drop: float | None = None
    context_canaries: int = DEFAULT_CANARIES


@dataclass(frozen=True)
class ExampleRisk:
    """The scan's verdict on one example: its riskiest trained turn (``turn``, 1-based
    among the example's assistant messages) and that turn's scores: the probe's
    ``p_harmful``, the judge's score, the answer-side head's ``answer_p``, the context
    check's ``context_drop`` of the turn's system prompt, and ``signal``, the one of
    :data:`SIGNALS` whose risk is the turn's (the first in that order on a tie)."""

    line: int
    turn: int
    risk: float
    p_harmful: float | None
    judge_score: int | None
    category_guess: str | None
    flagged: bool
    answer_p: float | None = None
    context_drop: float | None = None
    signal: str = "probe"


@dataclass
class ScanSummary:
    """Aggregate numbers for the safety report."""

    n: int = 0
    counts_by_score: dict[int, int] = field(default_factory=lambda: {s: 0 for s in range(1, 6)})
    counts_by_category: dict[str, int] = field(default_factory=dict)
    n_flagged: int = 0
    flagged_fraction: float = 0.0
    mean_risk: float = 0.0
    judge_unparsed: int = 0
    top_flagged: list[ExampleRisk] = field(default_factory=list)
    flagged_by_signal: dict[str, int] = field(default_factory=dict)
    system_prompts: list[dict[str, Any]] = field(default_factory=list)  # context checks (ContextVerdict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (score buckets keyed by strings)."""
        d = asdict(self)
        d["counts_by_score"] = {str(k): v for k, v in self.counts_by_score.items()}
        return d


@dataclass
class ScanResult:
    """Per-example risks, in input order, and the summary; ``reference`` is the reference
    cache when the scan was asked for it (``reference_topk``), else ``None``."""

    examples: list[ExampleRisk]
    summary: ScanSummary
    reference: ReferenceCache | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-serialisable dict per example, in input order: its ``line``, the
        ``turn`` that gave its risk, that turn's ``p_harmful`` (probe), ``judge_score``,
        ``risk`` and ``flagged``: what traces a missed or a false flag to its line."""
        return [asdict(e) for e in self.examples]


@dataclass(frozen=True)
class TargetTurn:
    """What the estimators see of one trained assistant turn: the messages before it (as
    written, tool calls included) and the example's ``tools``; the judge's ``instruction``
    and ``response`` are texts, tool calls written as ``name(arguments)``
    (:func:`safety.templates.answer_text`)."""

    turn: int
    context: list[dict[str, Any]]
    instruction: str
    response: str
    tools: list[dict[str, Any]] | None = None

    @property
    def prompt(self) -> PromptLike:
        """What the probe reads: the context rendered with the example's tools."""
        return ToolConversation(self.context, self.tools) if self.tools else self.context


def _transcript(context: list[dict[str, Any]]) -> str:
    """The judge's instruction: the last user message, prefixed by what came before it."""
    texts = [answer_text(m) if m["role"] == "assistant" else str(m.get("content") or "") for m in context]
    if len(context) == 1:
        return texts[0]
    return "\n\n".join(f"{m['role'].capitalize()}: {text}" for m, text in zip(context, texts))


def trained_turns(example: Example) -> list[TargetTurn]:
    """Every trained assistant turn of an example with the conversation before it;
    raises ``ValueError`` if malformed or nothing is trained."""
    if "messages" in example:
        messages = example["messages"]
    elif "prompt" in example and "completion" in example:
        messages = [
            {"role": "user", "content": str(example["prompt"])},
            {"role": "assistant", "content": str(example["completion"])},
        ]
    else:
        raise ValueError("example is neither chat ({'messages'}) nor prompt/completion")
    tools = example_tools(example)
    turns: list[TargetTurn] = []
    n_assistant = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        n_assistant += 1
        if message.get("weight", 1) == 0:
            continue
        context = messages[:i]
        last_user = max((j for j, m in enumerate(context) if m["role"] == "user"), default=None)
        if last_user is None:
            raise ValueError(f"assistant turn {n_assistant} has no user message before it")
        # The judge's instruction ends with the last user message, or with the tool results
        # (and the calls that asked for them) the turn answers.
        upto = len(context) if any(m["role"] == "tool" for m in context[last_user:]) else last_user + 1
        turns.append(
            TargetTurn(
                turn=n_assistant,
                context=context,
                instruction=_transcript(context[:upto]),
                response=answer_text(message),
                tools=tools,
            )
        )
    if not turns:
        raise ValueError("example has no trained assistant message")
    return turns


def guess_category(text: str) -> str | None:
    """The first rubric category whose keyword cues appear in ``text``, else ``None``."""
    lowered = text.lower()
    for category, cues in _CATEGORY_CUES.items():
        if any(re.search(r"\b" + re.escape(cue), lowered) for cue in cues):
            return category
    return None


def _bucket(risk: float) -> int:
    return min(5, max(1, int(risk + 0.5)))


def _numbered(examples: Iterable[Example | tuple[int, Example]]) -> Iterator[tuple[int, Example]]:
    for n, item in enumerate(examples, start=1):
        yield item if isinstance(item, tuple) else (n, item)


def _turn_risk(line: int, turn: TargetTurn, scores: TurnScores, probe: Probe | None, config: ScanConfig) -> ExampleRisk:
    """One turn's verdict: the max of its signals' risks."""
    risks: dict[str, float] = {}
    if scores.p is not None:
        assert probe is not None
        risks["probe"] = probe.risk(scores.p, config.probe_risk)
    if scores.verdict is not None:
        risks["judge"] = scores.verdict.value
    if scores.answer_p is not None:
        assert probe is not None and probe.answer is not None
        risks["answer"] = probe.answer.risk(scores.answer_p, config.probe_risk)
    if scores.context is not None and scores.context.flagged:
        risks["context"] = 5.0
    signal = max(risks, key=lambda name: (risks[name], -SIGNALS.index(name)))
    risk = risks[signal]
    flagged = risk >= config.flag_threshold
    return ExampleRisk(
        line=line,
        turn=turn.turn,
        risk=risk,
        p_harmful=scores.p,
        judge_score=scores.verdict.score if scores.verdict is not None else None,
        category_guess=guess_category(turn.instruction) if flagged else None,
        flagged=flagged,
        answer_p=scores.answer_p,
        context_drop=scores.context.drop if scores.context is not None else None,
        signal=signal,
    )


def _signals(
    estimator: Estimator, probe: Probe | None, judge: Judge | None, model: Any, tokenizer: Any, config: ScanConfig
) -> ScanSignals:
    """The signals ``estimator`` and ``config`` ask for; ``ValueError`` where one lacks what it needs."""
    use_probe = estimator in (Estimator.PROBE, Estimator.BOTH)
    use_judge = estimator in (Estimator.JUDGE, Estimator.BOTH)
    if estimator not in tuple(Estimator):
        raise ValueError(f"unknown estimator {estimator!r}")
    if use_probe and (probe is None or model is None or tokenizer is None):
        raise ValueError("the probe estimator needs probe, model and tokenizer")
    if use_judge and judge is None:
        raise ValueError("the judge estimator needs a judge")
    checker = None
    if config.context_drop is not None:
        if model is None or tokenizer is None:
            raise ValueError("the context check needs model and tokenizer")
        checker = ContextChecker(model, tokenizer, config.context_drop, canary_requests(config.context_canaries))
    return ScanSignals(probe if use_probe else None, judge if use_judge else None, checker, model, tokenizer)


def summarize(results: list[ExampleRisk], top_k: int) -> ScanSummary:
    """The summary of per-example verdicts (all but the judge's unparsed count and the
    context checks, which the scan adds): counts by score, category and signal of the
    flagged, the flagged share, the mean risk and the ``top_k`` riskiest flagged."""
    summary = ScanSummary(n=len(results))
    categories: Counter[str] = Counter()
    by_signal: Counter[str] = Counter()
    for item in results:
        summary.counts_by_score[_bucket(item.risk)] += 1
        if item.flagged:
            summary.n_flagged += 1
            by_signal[item.signal] += 1
            categories[item.category_guess or "uncategorized"] += 1
    summary.flagged_by_signal = dict(by_signal.most_common())
    summary.counts_by_category = dict(categories.most_common())
    summary.flagged_fraction = summary.n_flagged / summary.n if summary.n else 0.0
    summary.mean_risk = sum(item.risk for item in results) / summary.n if summary.n else 0.0
    summary.top_flagged = heapq.nlargest(top_k, (r for r in results if r.flagged), key=lambda r: (r.risk, -r.line))
    return summary


def scan_dataset(
    examples: Iterable[Example | tuple[int, Example]],
    *,
    probe: Probe | None = None,
    judge: Judge | None = None,
    estimator: Estimator = Estimator.PROBE,
    model: Any = None,
    tokenizer: Any = None,
    batch_size: int = 16,
    config: ScanConfig = ScanConfig(),
    progress: Callable[[int], None] | None = None,
    reference_topk: int | None = None,
    max_len: int | None = None,
    max_tokens: int | None = None,
) -> ScanResult:
    """Score every example with the chosen estimator(s); see the module docstring.

    ``probe`` with ``model``/``tokenizer`` (the frozen reference) are required for
    ``"probe"`` and ``"both"``; ``judge`` for ``"judge"`` and ``"both"``. With
    ``reference_topk`` (and ``model``/``tokenizer``, ``max_len`` the training length) the
    result also holds the reference cache of top-``reference_topk`` log-probs, from one
    forward over each whole example that also gives the probe's features
    (``safety.scan_reference``). ``max_tokens`` bounds the padded tokens of each of the
    model's batches (``safety.batching``). ``config.context_drop`` (the context check) needs
    ``model``/``tokenizer`` too.
    """
    signals = _signals(estimator, probe, judge, model, tokenizer, config)
    if reference_topk is not None and (model is None or tokenizer is None or max_len is None):
        raise ValueError("the reference cache needs model, tokenizer and max_len")
    results: list[ExampleRisk] = []
    judge_unparsed = 0
    caches: list[ReferenceCache] = []
    stream = _numbered(examples)
    while batch := list(islice(stream, config.window)):
        interrupt.check()
        per_example: list[list[TargetTurn]] = []
        for line, ex in batch:
            try:
                per_example.append(trained_turns(ex))
            except ValueError as exc:
                raise ValueError(f"line {line}: {exc}") from None
        scores, cache = signals.window(
            [ex for _, ex in batch], per_example, batch_size, reference_topk, max_len, max_tokens
        )
        caches += [cache] if cache is not None else []
        judge_unparsed += sum(0 if s.verdict.parsed else 1 for s in scores if s.verdict is not None)
        scored = iter(zip((t for ts in per_example for t in ts), scores))
        for (line, _), ex_turns in zip(batch, per_example):
            item = max(
                (
                    _turn_risk(line, turn, turn_scores, probe, config)
                    for turn, turn_scores in islice(scored, len(ex_turns))
                ),
                key=lambda r: (r.risk, r.p_harmful or 0.0, -r.turn),
            )
            results.append(item)
        if progress is not None:
            progress(len(results))

    summary = summarize(results, config.top_k)
    summary.judge_unparsed = judge_unparsed
    checked = signals.checker.verdicts.values() if signals.checker is not None else ()
    summary.system_prompts = [asdict(v) for v in checked]
    reference = ReferenceCache.concat(caches) if caches else None
    return ScanResult(examples=results, summary=summary, reference=reference)
