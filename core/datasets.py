"""Streaming validation of OpenAI fine-tuning JSONL files (shared by the API and the worker).

A file is read line by line (or fed in arbitrary byte chunks); only one line is held in
memory at a time, and a line longer than the per-example limit allows is never buffered
whole. Two formats are accepted, one per file:

* chat: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...]}``
  (OpenAI's optional ``name``, ``weight`` (0 or 1), ``tool_calls``, ``tool_call_id``,
  ``function_call`` keys too, and top-level ``tools`` / ``functions`` / ``parallel_tool_calls``);
* prompt/completion: ``{"prompt": "...", "completion": "..."}``;
* preference (OpenAI's DPO format): ``{"input": {"messages": [...], "tools": [...]},
  "preferred_output": [{"role": "assistant", ...}], "non_preferred_output": [...]}``, each
  output a list of exactly one assistant message (content or tool calls), the input's
  messages checked as a chat example's and ending with a user or tool message.

Which method a file suits is not known at upload (files carry no method): the report's
``format`` is stored on the file, and a job refuses a file whose format its method cannot
train (``api.jobs.build``; the worker's validation checks it again).

Each example needs at least one assistant turn that is trained on (``weight`` not 0) with
non-empty content or tool calls (a call's arguments are answer text); ``tools`` and tool
calls must have OpenAI's shape (:mod:`core.tool_format`); a prompt/completion example
needs a non-empty completion. Errors carry
1-based line numbers; the first ``max_errors`` are kept and all are counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol, cast

from core.quoting import quoted
from core.tool_format import calls_problems, tools_problems

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
CHAT_TOP_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls", "metadata"})
CHARS_PER_TOKEN = 4  # the estimate used before a tokenizer is at hand (the worker counts exactly)
READ_CHUNK = 1024 * 1024

Format = Literal["chat", "prompt_completion", "preference"]
PREFERENCE_KEYS = ("preferred_output", "non_preferred_output")
PREFERENCE_TOP_KEYS = frozenset({"input", *PREFERENCE_KEYS, "metadata"})
PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})


# The defaults of the operator's GUARDTUNE_MAX_EXAMPLE_CHARS / _MAX_EXAMPLES / _VALIDATION_MAX_ERRORS.
MAX_EXAMPLE_CHARS = 100_000  # per example (the sum of its message contents)
MAX_EXAMPLES = 500_000  # per file
MAX_ERRORS = 20  # errors reported before validation stops


class LimitSettings(Protocol):
    """The operator's limits (``core.settings.Settings``, which reads this module's defaults)."""

    max_example_chars: int
    max_examples: int
    validation_max_errors: int


@dataclass(frozen=True)
class Limits:
    max_example_chars: int = MAX_EXAMPLE_CHARS
    max_examples: int = MAX_EXAMPLES
    max_errors: int = MAX_ERRORS

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> Limits:
        return cls(settings.max_example_chars, settings.max_examples, settings.validation_max_errors)

    @property
    def max_line_bytes(self) -> int:
        # A JSON-escaped character takes up to 12 bytes (a \\uXXXX surrogate pair), plus
        # room for keys and structure: a longer line cannot hold a valid example.
        return self.max_example_chars * 12 + 64 * 1024


def parse_line(text: str | bytes) -> Any:
    """One JSON value, or ``ValueError`` with a message for the customer. Nesting too deep
    for the parser (a short line of thousands of ``[``) is such an error, not a crash."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Invalid JSON: {exc.msg} (column {exc.colno}).") from None
    except RecursionError:
        raise ValueError("Invalid JSON: the value is nested too deeply.") from None


@dataclass(frozen=True)
class Issue:
    """One validation error. ``line`` is 1-based; None for a whole-file problem."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass
class Report:
    n_lines: int = 0
    n_examples: int = 0
    n_chars: int = 0
    format: Format | None = None
    errors: list[Issue] = field(default_factory=list)  # the first ``max_errors``
    error_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def est_tokens(self) -> int:
        return math.ceil(self.n_chars / CHARS_PER_TOKEN)

    def details(self) -> str | None:
        """The human summary (the file's ``status_details``): None when the file is valid."""
        if self.ok:
            return None
        shown = len(self.errors)
        noun = "error" if self.error_count == 1 else "errors"
        head = f"Validation failed: {self.error_count} {noun}"
        if shown < self.error_count:
            head += f" (showing the first {shown})"
        return head + ":\n" + "\n".join(str(issue) for issue in self.errors)


class Validator:
    """Incremental validator: :meth:`feed` bytes in any chunking, then :meth:`finish`."""

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.report = Report()
        self._buf = bytearray()
        self._overlong = False  # the current line already exceeded max_line_bytes
        self._line = 0
        self._excess_reported = False
        self._finished = False

    # -- feeding ---------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if not self._overlong:
                if len(self._buf) + len(piece) > self.limits.max_line_bytes:
                    self._overlong = True
                    self._buf.clear()
                else:
                    self._buf += piece
            if nl < 0:
                return
            self._end_line()
            start = nl + 1

    def finish(self) -> Report:
        if not self._finished:
            self._finished = True
            if self._buf or self._overlong:
                self._end_line()
            if self.report.n_examples == 0 and self.report.error_count == 0:
                self._error(None, "The file contains no training examples.")
        return self.report

    def _end_line(self) -> None:
        self._line += 1
        self.report.n_lines = self._line
        if self._overlong:
            self._overlong = False
            self._error(
                self._line,
                f"The example is too long: the line exceeds {self.limits.max_line_bytes} bytes "
                f"(limit {self.limits.max_example_chars} characters per example).",
            )
            return
        raw = bytes(self._buf)
        self._buf.clear()
        self.check_line(self._line, raw)

    # -- one line --------------------------------------------------------------------
    def check_line(self, lineno: int, raw: bytes) -> None:
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._error(lineno, f"The line is not valid UTF-8 (byte {exc.start + 1}).")
            return
        if not text.strip():
            return  # blank lines are skipped
        try:
            obj = parse_line(text)
        except ValueError as exc:
            self._error(lineno, str(exc))
            return
        fmt, problems, chars = check_example(obj)
        if problems:
            for problem in problems:
                self._error(lineno, problem)
            return
        if self.report.format is None:
            self.report.format = fmt
        elif fmt is not None and fmt != self.report.format:
            self._error(
                lineno,
                f"The example uses the {_FORMAT_NAMES[fmt]} format but earlier lines use the "
                f"{_FORMAT_NAMES[self.report.format]} format; a file must use one format.",
            )
            return
        if chars > self.limits.max_example_chars:
            self._error(
                lineno,
                f"The example is too long: {chars} characters, over the limit of {self.limits.max_example_chars}.",
            )
            return
        self.report.n_examples += 1
        self.report.n_chars += chars
        if self.report.n_examples > self.limits.max_examples and not self._excess_reported:
            self._excess_reported = True
            self._error(lineno, f"The file has more than {self.limits.max_examples} examples (the limit).")

    def _error(self, lineno: int | None, message: str) -> None:
        self.report.error_count += 1
        if len(self.report.errors) < self.limits.max_errors:
            self.report.errors.append(Issue(lineno, message))


_FORMAT_NAMES = {
    "chat": "chat (messages)",
    "prompt_completion": "prompt/completion",
    "preference": "preference (input, preferred_output, non_preferred_output)",
}


def check_example(obj: Any) -> tuple[Format | None, list[str], int]:
    """Check one parsed example: ``(format, problems, characters of content)``."""
    if not isinstance(obj, dict):
        return None, [f"Each line must be a JSON object, not {_json_type(obj)}."], 0
    if "messages" in obj:
        problems, chars = _check_chat(obj)
        return "chat", problems, chars
    if "prompt" in obj or "completion" in obj:
        problems, chars = _check_prompt_completion(obj)
        return "prompt_completion", problems, chars
    if "input" in obj or any(key in obj for key in PREFERENCE_KEYS):
        problems, chars = _check_preference(obj)
        return "preference", problems, chars
    return (
        None,
        [
            "Missing 'messages' (chat format), 'prompt' and 'completion' (prompt/completion format) or "
            "'input', 'preferred_output' and 'non_preferred_output' (preference format)."
        ],
        0,
    )


def _check_chat(obj: dict[str, Any]) -> tuple[list[str], int]:
    problems: list[str] = []
    unknown = sorted(set(obj) - CHAT_TOP_KEYS)
    if unknown:
        problems.append(f"Unrecognized key {quoted(unknown[0])} next to 'messages'.")
    problems += tools_problems(obj)
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        return [*problems, "'messages' must be a non-empty list."], 0
    message_problems, chars, trained = _check_messages(messages, "messages")
    problems += message_problems
    if not problems and not trained:
        problems.append("The example has no assistant message with content to train on.")
    return problems, chars


def _check_messages(messages: list[Any], name: str) -> tuple[list[str], int, bool]:
    """``(problems, characters, whether an assistant turn is trained)`` of a message list
    whose entries are named ``name[i]`` in the problems."""
    problems: list[str] = []
    chars, trained = 0, False
    for i, msg in enumerate(messages):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            problems.append(f"{where} must be an object with 'role' and 'content', not {_json_type(msg)}.")
            continue
        extra = sorted(set(msg) - MESSAGE_KEYS)
        if extra:
            problems.append(f"{where} has an unrecognized key {quoted(extra[0])}.")
        role = msg.get("role")
        if role not in ROLES:
            shown = "missing" if role is None else quoted(role)
            problems.append(f"{where}.role is {shown}; it must be one of {', '.join(ROLES)}.")
            continue
        content = msg.get("content")
        call_problems = calls_problems(where, msg)
        problems += call_problems
        calls = None if call_problems else (msg.get("tool_calls") or msg.get("function_call"))
        if content is None and role == "assistant" and calls:
            pass  # an assistant turn that only calls tools
        elif not isinstance(content, str):
            shown = "missing" if "content" not in msg else f"{_json_type(content)}"
            problems.append(f"{where}.content must be a string ({shown}).")
            continue
        else:
            chars += len(content)
        if "weight" in msg:
            if msg["weight"] not in (0, 1) or isinstance(msg["weight"], bool):
                problems.append(f"{where}.weight must be 0 or 1.")
            elif role != "assistant":
                problems.append(f"{where}.weight is only allowed on assistant messages.")
        if calls:
            chars += len(json.dumps(calls))
        answers = calls or (isinstance(content, str) and content.strip())
        if role == "assistant" and answers and msg.get("weight", 1) != 0:
            trained = True  # a tool call is answer text too
    return problems, chars, trained


def _check_preference(obj: dict[str, Any]) -> tuple[list[str], int]:
    """A preference pair: its ``input`` as a chat example's context (ending with the user
    or tool message the outputs answer) and each output one trained assistant message."""
    problems: list[str] = []
    unknown = sorted(set(obj) - PREFERENCE_TOP_KEYS)
    if unknown:
        problems.append(f"Unrecognized key {quoted(unknown[0])} in a preference example.")
    chars = 0
    inp = obj.get("input")
    if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list) or not inp["messages"]:
        problems.append("'input' must be an object with a non-empty 'messages' list.")
    else:
        extra = sorted(set(inp) - PREFERENCE_INPUT_KEYS)
        if extra:
            problems.append(f"Unrecognized key {quoted(extra[0])} in 'input'.")
        problems += tools_problems(inp)
        message_problems, chars, _ = _check_messages(inp["messages"], "input.messages")
        problems += message_problems
        last = inp["messages"][-1]
        if not message_problems and last.get("role") not in ("user", "tool"):
            problems.append("input.messages must end with a user (or tool) message for the outputs to answer.")
    for key in PREFERENCE_KEYS:
        output = obj.get(key)
        if not isinstance(output, list) or len(output) != 1:
            problems.append(f"{key!r} must be a list of exactly one assistant message.")
            continue
        message_problems, n, trained = _check_messages(output, key)
        chars += n
        problems += message_problems
        if not message_problems and (output[0]["role"] != "assistant" or not trained):
            problems.append(f"{key}[0] must be an assistant message with content or tool calls to train on.")
    return problems, chars


def _check_prompt_completion(obj: dict[str, Any]) -> tuple[list[str], int]:
    problems: list[str] = []
    for key in ("prompt", "completion"):
        if key not in obj:
            problems.append(f"Missing {key!r}.")
        elif not isinstance(obj[key], str):
            problems.append(f"{key!r} must be a string, not {_json_type(obj[key])}.")
    if not problems and not obj["completion"].strip():
        problems.append("'completion' is empty: there is nothing to train on.")
    chars = sum(len(obj[k]) for k in ("prompt", "completion") if isinstance(obj.get(k), str))
    return problems, chars


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- entry points ------------------------------------------------------------------------
def validate_chunks(chunks: Iterable[bytes], limits: Limits | None = None) -> Report:
    """Validate a file given as an iterable of byte chunks (e.g. ``store.iter_chunks(key)``)."""
    validator = Validator(limits)
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()


def validate_stream(stream: IO[bytes], limits: Limits | None = None) -> Report:
    """Validate a readable binary stream, reading it in 1 MiB chunks."""
    return validate_chunks(iter(lambda: stream.read(READ_CHUNK), b""), limits)


def iter_examples(chunks: Iterable[bytes], limits: Limits | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, example)`` of a file that passed validation, streaming.

    Blank lines are skipped; a line that does not parse raises ``ValueError`` naming it
    (validate first to get every problem at once)."""
    limits = limits or Limits()
    buf = bytearray()
    lineno = 0

    def parse(raw: bytes) -> dict[str, Any] | None:
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            return None
        try:
            obj = parse_line(raw)  # UnicodeDecodeError is a ValueError too
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from None
        fmt, problems, _ = check_example(obj)
        if problems:
            raise ValueError(f"line {lineno}: {problems[0]}")
        return cast(dict[str, Any], obj)  # check_example found no problem: a JSON object

    for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            buf += chunk[start:] if nl < 0 else chunk[start:nl]
            if len(buf) > limits.max_line_bytes:
                raise ValueError(f"line {lineno + 1}: the line is too long")
            if nl < 0:
                break
            lineno += 1
            obj = parse(bytes(buf))
            buf.clear()
            if obj is not None:
                yield lineno, obj
            start = nl + 1
    if buf:
        lineno += 1
        obj = parse(bytes(buf))
        if obj is not None:
            yield lineno, obj
