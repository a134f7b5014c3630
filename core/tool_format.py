"""Upload checks of the tool-calling parts of an OpenAI chat fine-tuning example (used by
:mod:`core.datasets`): the top-level ``tools`` / ``functions`` definitions and an assistant
message's ``tool_calls`` / ``function_call``. Whether the base model's chat template renders
them is checked by the scan, which has the tokenizer (``worker.pipeline.scan``)."""

from __future__ import annotations

import json
from typing import Any


def _function_problems(where: str, function: Any) -> list[str]:
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        return [f"{where} must be an object with a non-empty 'name'."]
    if "parameters" in function and not isinstance(function["parameters"], dict):
        return [f"{where}.parameters must be a JSON schema object."]
    return []


def tools_problems(obj: dict[str, Any]) -> list[str]:
    """Problems of an example's ``tools`` (``[{"type": "function", "function": {...}}]``)
    and legacy ``functions`` lists."""
    problems: list[str] = []
    for key in ("tools", "functions"):
        if key not in obj:
            continue
        items = obj[key]
        if not isinstance(items, list):
            problems.append(f"'{key}' must be a list.")
            continue
        for i, item in enumerate(items):
            if key == "functions":
                problems += _function_problems(f"functions[{i}]", item)
            elif not isinstance(item, dict) or item.get("type") != "function":
                problems.append(f"tools[{i}] must be an object with type 'function'.")
            else:
                problems += _function_problems(f"tools[{i}].function", item.get("function"))
    return problems


def _call_problems(where: str, function: Any) -> list[str]:
    problems = _function_problems(where, function)
    if problems:
        return problems
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return [f"{where}.arguments must be a string of JSON."]
    try:
        json.loads(arguments)
    except ValueError:
        return [f"{where}.arguments is not valid JSON."]
    return []


def calls_problems(where: str, message: dict[str, Any]) -> list[str]:
    """Problems of a message's ``tool_calls`` (a non-empty list of function calls whose
    ``arguments`` are JSON text) or legacy ``function_call``; only assistants call tools."""
    problems: list[str] = []
    if ("tool_calls" in message or "function_call" in message) and message.get("role") != "assistant":
        return [f"{where} calls a tool; only assistant messages may."]
    if "tool_calls" in message:
        calls = message["tool_calls"]
        if not isinstance(calls, list) or not calls:
            return [f"{where}.tool_calls must be a non-empty list."]
        for i, call in enumerate(calls):
            if not isinstance(call, dict) or call.get("type", "function") != "function":
                problems.append(f"{where}.tool_calls[{i}] must be an object with type 'function'.")
            else:
                problems += _call_problems(f"{where}.tool_calls[{i}].function", call.get("function"))
    if "function_call" in message:
        problems += _call_problems(f"{where}.function_call", message["function_call"])
    return problems
