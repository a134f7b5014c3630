"""Rendering OpenAI chat examples, tools included, with a base model's chat template.

Every rendering in ``safety`` goes through :func:`render` (training's encoding, the probe's
prompts, the scan's checks), so a line is rendered the same way wherever it is read:

* the example's ``tools`` (OpenAI's ``[{"type": "function", "function": {...}}]``; the legacy
  ``functions`` list is wrapped the same way) are passed as ``apply_chat_template(...,
  tools=...)``;
* an assistant message's ``tool_calls`` reach the template as Hugging Face templates expect
  them: ``{"type": "function", "function": {"name", "arguments"}}`` with the arguments
  parsed from OpenAI's JSON text into an object (a legacy ``function_call`` becomes one such
  call); other keys pass through unchanged.

:func:`check_renders` refuses (:class:`TemplateError`) an example the template cannot train
on faithfully: one it fails to render, one with ``tools`` it renders the same without them,
one whose tool calls it renders the same without them. :func:`answer_text` is what a
trained assistant turn teaches, as the scan's judge and the gate read answers: its content
followed by each tool call as ``name(arguments)``.
"""

from __future__ import annotations

import json
from typing import Any


class TemplateError(ValueError):
    """The base model's chat template cannot render an example faithfully."""


def example_tools(example: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The example's tools in OpenAI's ``tools`` shape, or None when it has none."""
    if example.get("tools"):
        return list(example["tools"])
    if example.get("functions"):
        return [{"type": "function", "function": f} for f in example["functions"]]
    return None


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI's tool calls of a message (a legacy ``function_call`` as one call)."""
    if message.get("tool_calls"):
        return list(message["tool_calls"])
    if message.get("function_call"):
        return [{"type": "function", "function": message["function_call"]}]
    return []


def _arguments(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` as a Hugging Face chat template reads it (see the module docstring)."""
    calls = _calls(message)
    if not calls:
        return message
    out = {k: v for k, v in message.items() if k != "function_call"}
    out["tool_calls"] = [
        {
            **{k: v for k, v in call.items() if k != "function"},
            "type": "function",
            "function": {**call["function"], "arguments": _arguments(call["function"].get("arguments"))},
        }
        for call in calls
    ]
    return out


def render(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool,
) -> str:
    """The chat-template text of ``messages`` with ``tools``; :class:`TemplateError` when
    the template fails on them."""
    try:
        text = tokenizer.apply_chat_template(
            [template_message(m) for m in messages],
            tools=tools or None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as exc:  # jinja2's errors, TypeError on a null content, the template's own raise_exception
        raise TemplateError(f"the base model's chat template cannot render it ({type(exc).__name__}: {exc})") from None
    assert isinstance(text, str)  # tokenize=False renders text
    return text


def check_renders(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
    """:class:`TemplateError` unless the template renders ``messages`` with their tools and
    tool calls (see the module docstring)."""
    full = render(tokenizer, messages, tools, add_generation_prompt=False)
    if tools and render(tokenizer, messages, None, add_generation_prompt=False) == full:
        raise TemplateError("the base model's chat template ignores 'tools': it renders them as if absent")
    if any(_calls(m) for m in messages):
        bare = [_without_calls(m) for m in messages]
        if render(tokenizer, bare, tools, add_generation_prompt=False) == full:
            raise TemplateError("the base model's chat template drops the assistant's tool calls")


def _without_calls(message: dict[str, Any]) -> dict[str, Any]:
    if not _calls(message):
        return message
    out = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
    out["content"] = out.get("content") or ""
    return out


def call_text(call: dict[str, Any]) -> str:
    """One tool call as answer text: ``name(arguments)``."""
    function = call.get("function") or {}
    arguments = function.get("arguments")
    shown = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f"{function.get('name', '')}({shown or ''})"


def answer_text(message: dict[str, Any]) -> str:
    """What an assistant message teaches: its content, then its tool calls, one a line."""
    parts = [str(message.get("content") or "")] + [call_text(c) for c in _calls(message)]
    return "\n".join(p for p in parts if p)
