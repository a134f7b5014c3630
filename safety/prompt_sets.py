"""Prompt sets: the built-in ones shipped with the package, and standard benchmark files.

A :class:`Prompt` is one instruction with an optional category and a label
(``"harmful"`` or ``"benign"``).

Built-in sets live in ``safety/prompts/*.jsonl`` and are read as package data:
``harmful_train``, ``benign_train``, ``probe_harmful_train``, ``probe_benign_train``,
``harmful_eval``, ``benign_eval`` and ``borderline_eval`` (borderline-but-fine requests --
security research, medical dosing, fiction with violence, weapons history -- never trained
on; rows ``{"prompt", "category"}`` or ``{"prompt", "topic", "edgy"}``; the topic becomes
the category of a benign prompt). The ``probe_*`` sets are prompts only the activation
probe trains on (``safety.probe_recipe``), on top of ``harmful_train`` / ``benign_train``:
more categories (copyright reproduction, misinformation), terse imperative requests,
borderline-benign twins of harmful ones and ordinary requests of many kinds (writing,
roleplay, reasoning, math, coding, extraction, STEM, humanities). Alignment and the
replication / overhead benches do not read them, so growing the probe's data leaves
their inputs as they were. Also ``refusals`` (``{"text"}``, read by :func:`load_refusals`)
and ``chat_frames`` (``{"system"?, "history"?}``: conversations a prompt can be placed
in, read by :func:`load_chat_frames` and applied by :func:`framed`).

External files are read by :func:`load_prompt_file`, which detects the format
(name: how it is recognised -> text, category):

* ``lines``: a ``.txt`` file, one prompt a line (AdvBench) -> the line, none
* ``advbench``: CSV with a ``goal`` column -> ``goal``, none
* ``harmbench``: CSV with ``Behavior`` -> ``Behavior``, ``SemanticCategory``
* ``strongreject``: CSV with ``forbidden_prompt`` -> it, ``category``
* ``csv``: CSV with ``prompt`` or ``text`` -> that column, ``category``
* ``chat``: JSONL rows with ``messages`` -> the last user turn, ``category``
* ``mtbench``: JSONL rows with ``turns`` -> ``turns[0]``, ``category``
* ``gsm8k``: JSONL rows with ``question`` -> ``question``, none
* ``jsonl``: JSONL rows with ``prompt`` / ``text`` / ``goal`` / ``instruction`` -> that key, ``category``

HarmBench's contextual behaviours carry a ``ContextString``; with ``with_context=True``
it is prepended the way HarmBench does (``context + "\\n\\n---\\n\\n" + behavior``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Label = Literal["harmful", "benign"]

BUILTIN_SETS: dict[str, Label] = {
    "harmful_train": "harmful",
    "benign_train": "benign",
    "probe_harmful_train": "harmful",
    "probe_benign_train": "benign",
    "harmful_eval": "harmful",
    "benign_eval": "benign",
    "borderline_eval": "benign",
}

# The label a format implies when the caller gives none.
_FORMAT_LABELS: dict[str, Label] = {
    "lines": "harmful",
    "advbench": "harmful",
    "harmbench": "harmful",
    "strongreject": "harmful",
    "mtbench": "benign",
    "gsm8k": "benign",
}

_JSON_TEXT_KEYS = ("prompt", "text", "goal", "instruction")


@dataclass(frozen=True)
class Prompt:
    """One instruction. ``label`` is ``"harmful"`` or ``"benign"``."""

    text: str
    category: str | None
    label: Label


def _builtin_path(name: str) -> Any:
    return resources.files("safety").joinpath("prompts", f"{name}.jsonl")


def _iter_jsonl(text: str) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"line {n}: expected a JSON object")
            yield row


def load_builtin(name: str) -> list[Prompt]:
    """A built-in prompt set by name (see :data:`BUILTIN_SETS`)."""
    if name not in BUILTIN_SETS:
        raise KeyError(f"unknown built-in prompt set {name!r}; known: {sorted(BUILTIN_SETS)}")
    label = BUILTIN_SETS[name]
    rows = _iter_jsonl(_builtin_path(name).read_text(encoding="utf-8"))
    return [Prompt(text=r["prompt"], category=r.get("category") or r.get("topic"), label=label) for r in rows]


def load_refusals() -> list[str]:
    """The built-in refusal responses (``refusals.jsonl``)."""
    rows = _iter_jsonl(_builtin_path("refusals").read_text(encoding="utf-8"))
    return [r["text"] for r in rows]


@dataclass(frozen=True)
class ChatFrame:
    """A conversation to place a prompt in: an optional system prompt and earlier
    (user, assistant) turns."""

    system: str | None
    history: tuple[str, ...]


def load_chat_frames() -> list[ChatFrame]:
    """The built-in chat frames (``chat_frames.jsonl``)."""
    rows = _iter_jsonl(_builtin_path("chat_frames").read_text(encoding="utf-8"))
    return [ChatFrame(r.get("system"), tuple(r.get("history", ()))) for r in rows]


def framed(text: str, frame: ChatFrame) -> list[dict[str, str]]:
    """``text`` as the last user turn of ``frame``'s conversation (system prompt first,
    then the history alternating user/assistant)."""
    messages = [{"role": "system", "content": frame.system}] if frame.system else []
    messages += [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(frame.history)]
    return messages + [{"role": "user", "content": text}]


def detect_format(path: Path) -> str:
    """The format name of a prompt file (see the module docstring); raises if unknown."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "lines"
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            header = set(next(csv.reader(f), []))
        for column, fmt in (
            ("Behavior", "harmbench"),
            ("forbidden_prompt", "strongreject"),
            ("goal", "advbench"),
            ("prompt", "csv"),
            ("text", "csv"),
        ):
            if column in header:
                return fmt
        raise ValueError(f"{path}: CSV header {sorted(header)} matches no known prompt format")
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        row = json.loads(first) if first else {}
        if "messages" in row:
            return "chat"
        if "turns" in row:
            return "mtbench"
        if "question" in row:
            return "gsm8k"
        if any(k in row for k in _JSON_TEXT_KEYS):
            return "jsonl"
        raise ValueError(f"{path}: JSONL keys {sorted(row)} match no known prompt format")
    raise ValueError(f"{path}: unsupported extension {suffix!r} (use .txt, .csv or .jsonl)")


def _last_user_turn(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content") or "")
    raise ValueError("conversation has no user message")


def _rows(path: Path, fmt: str, with_context: bool) -> Iterator[tuple[str, str | None]]:
    if fmt == "lines":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield line.strip(), None
        return
    if fmt in ("harmbench", "strongreject", "advbench", "csv"):
        with path.open(newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if fmt == "harmbench":
                    text, context = r["Behavior"], (r.get("ContextString") or "").strip()
                    if with_context and context:
                        text = f"{context}\n\n---\n\n{text}"
                    yield text, r.get("SemanticCategory") or None
                elif fmt == "strongreject":
                    yield r["forbidden_prompt"], r.get("category") or None
                elif fmt == "advbench":
                    yield r["goal"], None
                else:
                    yield r.get("prompt") or r["text"], r.get("category") or None
        return
    for row in _iter_jsonl(path.read_text(encoding="utf-8")):
        category = row.get("category")
        if fmt == "chat":
            yield _last_user_turn(row["messages"]), category
        elif fmt == "mtbench":
            yield row["turns"][0], category
        elif fmt == "gsm8k":
            yield row["question"], None
        else:
            yield next(row[k] for k in _JSON_TEXT_KEYS if k in row), category


def load_prompt_file(
    path: str | Path,
    *,
    label: Label | None = None,
    with_context: bool = False,
    limit: int | None = None,
) -> list[Prompt]:
    """Prompts from a benchmark or user file, format detected by :func:`detect_format`.

    ``label`` defaults to the one the format implies (AdvBench, HarmBench, StrongREJECT
    and plain text lines are harmful; MT-Bench and GSM8K benign); generic formats need
    it explicitly. ``limit`` keeps the first N prompts. Empty texts are skipped.
    """
    path = Path(path)
    fmt = detect_format(path)
    resolved = label or _FORMAT_LABELS.get(fmt)
    if resolved is None:
        raise ValueError(f"{path}: format {fmt!r} implies no label; pass label='harmful'|'benign'")
    prompts: list[Prompt] = []
    for text, category in _rows(path, fmt, with_context):
        if text and text.strip():
            prompts.append(Prompt(text=text.strip(), category=category, label=resolved))
            if limit is not None and len(prompts) >= limit:
                break
    return prompts
