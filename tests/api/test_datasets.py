"""``core.datasets``: streaming JSONL validation shared by the API and the worker."""

from __future__ import annotations

import io
import json

import pytest

from core.datasets import Limits, Validator, iter_examples, validate_chunks, validate_stream
from tests.api.helpers import chat, jsonl

MIXED = jsonl(
    chat(),
    '{"messages": [',
    {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
    "",
    {"messages": [{"role": "user", "content": "q"}]},
    chat("a", "b", system="s"),
)


def test_the_same_report_whatever_the_chunking():
    whole = validate_chunks([MIXED])
    for size in (1, 2, 7, 64):
        pieces = [MIXED[i : i + size] for i in range(0, len(MIXED), size)]
        assert validate_chunks(pieces) == whole
    assert validate_stream(io.BytesIO(MIXED)) == whole
    assert whole.n_lines == 6
    assert whole.n_examples == 2
    assert whole.format == "chat"
    assert [(i.line, i.message.split(":")[0]) for i in whole.errors] == [
        (2, "Invalid JSON"),
        (3, "messages[0].role is 'bot'; it must be one of system, user, assistant, tool."),
        (5, "The example has no assistant message with content to train on."),
    ]


def test_an_over_long_line_is_never_buffered_whole():
    limits = Limits(max_example_chars=100)
    v = Validator(limits)
    v.feed(jsonl(chat()))
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * 1024
    v.feed(huge)
    for _ in range(5000):  # ~5 MB on one line
        v.feed(b"x" * 1024)
        assert len(v._buf) <= limits.max_line_bytes
    v.feed(b'"}]}\n')
    v.feed(jsonl(chat()))
    report = v.finish()
    assert report.n_examples == 2
    assert report.error_count == 1
    assert report.errors[0].line == 2
    assert "too long" in report.errors[0].message


def test_limits_on_examples_and_errors():
    report = validate_chunks([jsonl(*[chat()] * 4)], Limits(max_examples=3))
    assert report.error_count == 1
    assert report.errors[0].line == 4
    assert "more than 3 examples" in report.errors[0].message
    report = validate_chunks([b"x\n" * 30], Limits(max_errors=5))
    assert report.error_count == 30
    assert len(report.errors) == 5
    assert report.details().startswith("Validation failed: 30 errors (showing the first 5):\nline 1: ")
    long = chat("q" * 60, "a" * 50)
    assert "110 characters, over the limit of 100" in validate_chunks([jsonl(long)], Limits(100)).errors[0].message


TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}


@pytest.mark.parametrize(
    "example",
    [
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "assistant", "content": "It is sunny."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "a", "weight": 0},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "b", "weight": 1},
            ]
        },
        {
            "messages": [{"role": "user", "content": "hi", "name": "ann"}, {"role": "assistant", "content": "yo"}],
            "tools": [],
        },
        {"prompt": "p", "completion": "c"},
        {  # a turn that only calls a tool is trained: its arguments are answer text
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        },
        {
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "function_call": TOOL_CALL["function"]},
            ],
            "functions": [{"name": "get_weather"}],
        },
    ],
)
def test_accepted_examples(example):
    report = validate_chunks([jsonl(example)])
    assert report.ok, report.details()


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"messages": []}, "'messages' must be a non-empty list."),
        ({"messages": "hi"}, "'messages' must be a non-empty list."),
        (
            {"messages": [chat()["messages"][0], {"role": "assistant", "content": "x", "weight": 2}]},
            "messages[1].weight must be 0 or 1.",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
            "messages[0].weight is only allowed on assistant messages.",
        ),
        (
            {"messages": [{"role": "user", "content": "x", "colour": 1}, {"role": "assistant", "content": "y"}]},
            "messages[0] has an unrecognized key 'colour'.",
        ),
        (
            {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},
            "messages[0].role is missing; it must be one of system, user, assistant, tool.",
        ),
        (
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},
            "messages[0].content must be a string (missing).",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": [{}]},
            "tools[0] must be an object with type 'function'.",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                "tools": [{"type": "function", "function": {"description": "no name"}}],
            },
            "tools[0].function must be an object with a non-empty 'name'.",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": "y",
                        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{oops"}}],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments is not valid JSON.",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "tool_calls": [TOOL_CALL]},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "messages[0] calls a tool; only assistant messages may.",
        ),
        ({"prompt": "p"}, "Missing 'completion'."),
        ({"prompt": "p", "completion": ""}, "'completion' is empty: there is nothing to train on."),
        ({"prompt": 1, "completion": "c"}, "'prompt' must be a string, not a number."),
        ("null", "Each line must be a JSON object, not null."),
    ],
)
def test_refused_examples(example, message):
    report = validate_chunks([jsonl(example)])
    assert [str(i) for i in report.errors] == [f"line 1: {message}"]


def test_iter_examples_streams_valid_files_with_line_numbers():
    data = jsonl(chat("a", "b"), "", {"prompt": "p", "completion": "c"}).rstrip(b"\n")  # no final newline
    got = list(iter_examples([data[i : i + 5] for i in range(0, len(data), 5)]))
    assert [line for line, _ in got] == [1, 3]
    assert got[1][1] == {"prompt": "p", "completion": "c"}
    with pytest.raises(ValueError, match="line 2"):
        list(iter_examples([jsonl(chat(), "{bad")]))
    assert json.loads(json.dumps(got[0][1])) == chat("a", "b")


NESTED = b"[" * 1000 + b"]" * 1000  # a 2 KB line deeper than the JSON parser recurses


def test_a_deeply_nested_line_is_a_validation_error_with_its_line_number():
    deep_content = (
        b'{"messages": [{"role": "user", "content": ' + NESTED + b'}, {"role": "assistant", "content": "x"}]}'
    )
    report = validate_chunks([jsonl(chat()) + NESTED + b"\n" + jsonl(chat()) + deep_content + b"\n"])
    assert [(i.line, i.message) for i in report.errors] == [
        (2, "Invalid JSON: the value is nested too deeply."),
        (4, "Invalid JSON: the value is nested too deeply."),
    ]


def test_the_workers_reader_names_the_line_of_a_deeply_nested_one():
    with pytest.raises(ValueError, match=r"^line 2: Invalid JSON: the value is nested too deeply\.$"):
        list(iter_examples([jsonl(chat()) + NESTED + b"\n"]))
