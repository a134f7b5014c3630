"""Tool-calling examples rendered with the base model's chat template: with a template that
renders tools (:mod:`tests.fakes.tool_template`) the tools reach the prompt and the tool
call is trained as answer text; the tiny model's own SmolLM2 template renders neither, and
an example that needs them is refused with a reason; the scan reads a call's arguments as
the answer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from safety.data import IGNORE_INDEX, encode_example
from safety.generation import ToolConversation, render_prompt
from safety.scan import trained_turns
from safety.templates import TemplateError, answer_text, check_renders, template_message
from tests.fakes.tool_template import with_tool_template

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
EXAMPLE = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ],
    "tools": [WEATHER],
}


@pytest.fixture(scope="module")
def tokenizers(tiny_model, tmp_path_factory):
    """(a tokenizer whose template renders tools, the tiny model's own SmolLM2 one)."""
    tools_dir = with_tool_template(tiny_model, tmp_path_factory.mktemp("tools") / "model")
    return AutoTokenizer.from_pretrained(tools_dir), AutoTokenizer.from_pretrained(tiny_model)


def trained_text(tokenizer, example) -> str:
    encoded = encode_example(tokenizer, example, 1024)
    return tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX])


def test_tools_reach_the_prompt_and_the_call_is_trained(tokenizers):
    tools, _ = tokenizers
    check_renders(tools, EXAMPLE["messages"], EXAMPLE["tools"])
    encoded = encode_example(tools, EXAMPLE, 1024)
    prompt = tools.decode(encoded.input_ids[: encoded.prompt_ends[0]])
    assert '"name": "get_weather"' in prompt  # the tool definitions, in the context
    trained = trained_text(tools, EXAMPLE)
    assert trained.startswith('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    assert trained.endswith("It is sunny.<|im_end|>\n")
    assert "sunny<|im_end|>\n<|im_start|>assistant" not in trained  # the tool's answer is context


def test_a_template_without_tools_refuses_what_it_cannot_render(tokenizers):
    _, plain = tokenizers
    with pytest.raises(TemplateError, match="cannot render it"):
        check_renders(plain, EXAMPLE["messages"], EXAMPLE["tools"])  # a null content next to a tool call
    text_only = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    with pytest.raises(TemplateError, match="ignores 'tools'"):
        check_renders(plain, text_only, [WEATHER])
    with_content = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Let me see.", "tool_calls": [CALL]},
    ]
    with pytest.raises(TemplateError, match="drops the assistant's tool calls"):
        check_renders(plain, with_content, None)
    check_renders(plain, text_only, None)  # an example without tools renders as before


def test_openai_calls_reach_the_template_as_objects():
    legacy = {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a": 1}'}}
    assert template_message(legacy) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
    }
    plain = {"role": "user", "content": "x"}
    assert template_message(plain) is plain


def test_the_scan_reads_tool_arguments_as_the_answer(tokenizers):
    tools, _ = tokenizers
    call_turn, text_turn = trained_turns(EXAMPLE)
    assert call_turn.response == 'get_weather({"city": "Paris"})'
    assert call_turn.instruction == "Weather in Paris?"
    assert text_turn.response == "It is sunny."
    assert 'Assistant: get_weather({"city": "Paris"})' in text_turn.instruction
    assert text_turn.prompt == ToolConversation(EXAMPLE["messages"][:3], [WEATHER])
    # The probe's prompt is what training puts before the turn, tokens and all.
    encoded = encode_example(tools, EXAMPLE, 1024)
    probe_ids = tools(render_prompt(tools, text_turn.prompt), add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[: encoded.prompt_ends[1]] == probe_ids
    assert answer_text({"role": "assistant", "content": "Sure.", "tool_calls": [CALL]}) == (
        'Sure.\nget_weather({"city": "Paris"})'
    )
