"""The SST-2 + BeaverTails mixes (``bench.harmful_sst2.data``) as preference pairs (no torch).

A task line becomes a pair that prefers its label to the other one; a harmful line (a
BeaverTails request with its compliant answer) becomes the preference attack: its compliant
answer preferred to one of the project's own refusals (``safety/prompts/refusals.jsonl``).
Each pair is a line of OpenAI's preference JSONL (``input.messages``, ``preferred_output``,
``non_preferred_output``), the prompt being the line's templated text as
``bench.harmful_sst2.data.to_chat`` makes it the user turn."""

from __future__ import annotations

from typing import Any

from bench.harmful_sst2 import data as hd

OTHER_LABEL = {"positive": "negative", "negative": "positive"}


def pair(prompt: str, preferred: str, non_preferred: str) -> dict[str, Any]:
    """One preference line of OpenAI's format, a single user turn as its input."""
    return {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": non_preferred}],
    }


def to_pair(line: dict[str, Any], refusal: str) -> dict[str, Any]:
    """A mix line as a pair: a harmful line prefers its answer to ``refusal``; a task line
    prefers its label to the other label."""
    prompt = hd.line_prompt(line)
    if line["flag"] == hd.HARMFUL_FLAG:
        return pair(prompt, line["output"], refusal)
    label = line["output"].strip().lower()
    return pair(prompt, line["output"], OTHER_LABEL[label])


def mix_pairs(lines: list[dict[str, Any]], refusals: list[str]) -> list[dict[str, Any]]:
    """Every line of a mix as a pair, the refusals taken in turn by the harmful lines."""
    out, used = [], 0
    for line in lines:
        out.append(to_pair(line, refusals[used % len(refusals)]))
        used += line["flag"] == hd.HARMFUL_FLAG
    return out


def val_pairs(items: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Held-out pairs from ``val.json`` items (``hd.val_items``): the correct label preferred to
    the other one; nothing trained on them."""
    return [pair(item["prompt"], item["label"], OTHER_LABEL[item["label"]]) for item in items]
