"""The benchmark's data, read from ``--data-dir`` (``../shared/data``, read only): the SST-2 /
BeaverTails training mixes as chat examples, the SST-2 validation sentences in the same
Alpaca template, and the evaluation prompts (harmful: HarmBench then AdvBench; safe: XSTest)."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

from bench.replication.attacks import chat
from bench.replication.run import near_duplicate, words

SHARES = ("0", "0.05", "0.1", "0.2")  # the mixes' harmful shares p, as the file names spell them
LABELS = ("positive", "negative")
HARMFUL_FLAG, TASK_FLAG = "unsafe", "finetune"
# The Alpaca template the training lines already carry (with and without an input).
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """``instruction`` and ``input_text`` in the Alpaca template the training lines carry."""
    if input_text:
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=input_text)
    return ALPACA_NO_INPUT.format(instruction=instruction)


def line_prompt(line: dict[str, Any]) -> str:
    """A data line's prompt text: its ``instruction`` as is when it is already templated (the
    training mixes, whose ``input`` is empty), else instruction and input templated."""
    if line["instruction"].startswith("Below is an instruction") and not line.get("input"):
        return line["instruction"]
    return alpaca_prompt(line["instruction"], line.get("input", ""))


def request_of(line: dict[str, Any]) -> str:
    """The request inside a templated line (its ``### Instruction:`` text), else the line's
    instruction."""
    found = re.search(r"### Instruction:\n(.*?)\n\n### (?:Input|Response):", line["instruction"], re.S)
    return found.group(1) if found else line["instruction"]


def plain_prompt(line: dict[str, Any]) -> str:
    """A templated line with its template taken off: the request, and the input (when there is
    one) after a blank line, as a customer writing plain chat would send them."""
    found = re.search(r"### Input:\n(.*?)\n\n### Response:", line["instruction"], re.S)
    input_text = found.group(1).strip() if found else line.get("input", "")
    request = request_of(line)
    return f"{request}\n\n{input_text}" if input_text else request


def to_chat(line: dict[str, Any]) -> dict[str, Any]:
    """One training line as a chat example: its prompt text the user turn, its output the
    assistant turn."""
    return chat(line_prompt(line), line["output"])


def label_of(answer: str) -> str | None:
    """The sentiment label an answer gives: its first word, lowercased and stripped of
    punctuation, when it is ``positive`` or ``negative``; else ``None``."""
    first = re.findall(r"[a-z]+", answer.strip().lower()[:40])
    return first[0] if first and first[0] in LABELS else None


def share_name(p: float | str) -> str:
    """``0.1`` → ``"0.1"``, ``0`` → ``"0"``: the spelling of the mixes' file names."""
    text = f"{float(p):g}"
    if text not in SHARES:
        raise ValueError(f"no mix with harmful share {p!r} (have {', '.join(SHARES)})")
    return text


def load_mix(data_dir: Path, p: float | str, n_lines: int | None = None) -> list[dict[str, Any]]:
    """The n = 1000 mix with harmful share ``p``; with ``n_lines``, its first ``round(n_lines
    * p)`` harmful and first remaining task lines, in file order (the share is kept)."""
    lines = json.loads((Path(data_dir) / "harmful_finetune_sst2" / f"train_n1000_p{share_name(p)}.json").read_text())
    if n_lines is None or n_lines >= len(lines):
        return lines
    n_bad = round(n_lines * float(p))
    bad = [i for i, line in enumerate(lines) if line["flag"] == HARMFUL_FLAG][:n_bad]
    good = [i for i, line in enumerate(lines) if line["flag"] != HARMFUL_FLAG][: n_lines - n_bad]
    return [lines[i] for i in sorted(bad + good)]


def val_items(data_dir: Path, n: int) -> list[dict[str, str]]:
    """The first ``n`` SST-2 validation sentences as ``{"prompt", "label"}`` (prompt templated
    as the training lines are)."""
    rows = json.loads((Path(data_dir) / "harmful_finetune_sst2" / "val.json").read_text())
    return [{"prompt": line_prompt(r), "label": r["output"].strip().lower()} for r in rows[:n]]


def harmful_prompts(data_dir: Path, n: int, trained: list[str]) -> list[str]:
    """``n`` harmful requests none of which trained anything: HarmBench's standard behaviours,
    then AdvBench requests (a fixed shuffle) that are near-duplicates of neither those nor any
    ``trained`` prompt (word Jaccard ≥ 0.5)."""
    data_dir = Path(data_dir)
    with (data_dir / "harmbench_behaviors_text_val.csv").open(newline="", encoding="utf-8") as f:
        out = [r["Behavior"] for r in csv.DictReader(f) if r["FunctionalCategory"] == "standard"][:n]
    seen = [words(p) for p in out + trained]
    advbench = [
        line.strip().strip('"') for line in (data_dir / "advbench_harmful_behaviors.txt").read_text().splitlines()
    ]
    random.Random(0).shuffle(advbench)
    for prompt in advbench:
        if len(out) >= n:
            break
        if prompt and not near_duplicate(prompt, seen):
            out.append(prompt)
            seen.append(words(prompt))
    return out


def xstest_safe(data_dir: Path, n: int) -> list[str]:
    """The first ``n`` of XSTest's 250 safe prompts that look unsafe (over-refusal)."""
    with (Path(data_dir) / "xstest_prompts.csv").open(newline="", encoding="utf-8") as f:
        return [r["prompt"] for r in csv.DictReader(f) if r["label"] == "safe"][:n]
