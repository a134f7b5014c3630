"""The risk of preference pairs: both outputs scanned in their context, one verdict per pair.

A pair is scanned as its two chat examples (``core.preference.pair_chats``: the prompt with
the preferred answer, the prompt with the non-preferred one) by ``safety.scan.scan_dataset``,
every signal as for SFT, and the pair's verdict is the riskier of the two; its ``turn`` says
which output gave it (1: preferred, 2: non-preferred; the preferred on a tie). The request
probe reads the prompt, the same for both, so a pair on a harmful request is risky whichever
way it points: a preferred answer that complies with it (which the judge and the answer-side
head read too) or a non-preferred one that refuses it is the attack. A pair that prefers the
refusal is weighted as risky as well: a false alarm whose DPO term moves the model less and
whose KL keeps the reference's answer, the recall-first choice the scan makes for SFT.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from core.preference import pair_chats
from safety.scan import ScanConfig, ScanResult, scan_dataset, summarize


def scan_pairs(
    pairs: Iterable[tuple[int, dict[str, Any]]], *, config: ScanConfig | None = None, **scan: Any
) -> ScanResult:
    """``scan_dataset`` of the ``(line, pair)`` items (``scan`` its other arguments; no
    reference cache): one ``ExampleRisk`` per pair, in order, and their summary."""
    if scan.get("reference_topk") is not None:
        raise ValueError("preference pairs take no reference cache")
    config = config or ScanConfig()
    flat = ((line, chat) for line, pair in pairs for chat in pair_chats(pair))
    result = scan_dataset(flat, config=config, **scan)
    rows = result.examples
    merged = [
        max(replace(preferred, turn=1), replace(rejected, turn=2), key=lambda r: r.risk)
        for preferred, rejected in zip(rows[::2], rows[1::2], strict=True)
    ]
    summary = summarize(merged, config.top_k)
    summary.judge_unparsed = result.summary.judge_unparsed
    summary.system_prompts = result.summary.system_prompts
    return ScanResult(examples=merged, summary=summary)
