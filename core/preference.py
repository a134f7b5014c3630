"""Preference (DPO) examples as the chat examples the rest of the pipeline reads.

A preference line (``core.datasets``' ``preference`` format) is one prompt and two answers.
Everything that reads chat examples — the template and token checks, the risk scan, the
evaluation's attack conditions, the validation loss — reads a pair as its two chat examples
(:func:`pair_chats`: the input's messages and tools followed by one output), or, where one
example per line is wanted, as its preferred one (:func:`as_chat`).
"""

from __future__ import annotations

from typing import Any

from core.datasets import PREFERENCE_KEYS, Format

Example = dict[str, Any]
METHOD_FORMATS: dict[str, tuple[Format, ...]] = {
    "supervised": ("chat", "prompt_completion"),
    "dpo": ("preference",),
}


def is_preference(example: Example) -> bool:
    """Whether ``example`` is a preference pair (a validated line of that format)."""
    return "input" in example and PREFERENCE_KEYS[0] in example


def pair_chats(example: Example) -> tuple[Example, Example]:
    """``(preferred, non_preferred)``: the pair's input followed by each output, as chat
    examples whose only trained turn is the output (the input's assistant messages get
    ``"weight": 0``: they are context, the same in both)."""
    inp = example["input"]
    tools = {key: inp[key] for key in ("tools", "functions") if key in inp}
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in inp["messages"]]
    preferred, rejected = ({"messages": [*context, *example[key]], **tools} for key in PREFERENCE_KEYS)
    return preferred, rejected


def as_chat(example: Example) -> Example:
    """The chat example a line stands for: a pair's preferred one, any other line as it is."""
    return pair_chats(example)[0] if is_preference(example) else example


def job_method(method: dict[str, Any] | None) -> str:
    """The method type of a stored ``Job.method`` (``supervised`` for a row without one)."""
    return str((method or {}).get("type") or "supervised")


def format_problem(method: str, file_format: str | None) -> str | None:
    """Why a file of ``file_format`` cannot train a job of ``method`` (None: it can, or the
    format is unknown, as for a file uploaded before formats were recorded)."""
    allowed = METHOD_FORMATS.get(method, ())
    if file_format is None or file_format in allowed:
        return None
    wanted = " or ".join(allowed)
    return f"The {method} method trains on {wanted} files; this file is in the {file_format} format."
