"""A small ChatML chat template that renders tools and tool calls (the tiny test model's
SmolLM2 template renders neither), and a tiny model directory carrying it."""

from __future__ import annotations

import shutil
from pathlib import Path

TOOL_TEMPLATE = """
{%- if tools or messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\n' }}{%- endif %}
    {%- if tools %}
        {{- 'Tools:\n' }}
        {%- for tool in tools %}{{- tool | tojson }}{{- '\n' }}{%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- if message.content %}{{- message.content }}{%- endif %}
        {%- for call in message.tool_calls or [] %}
            {{- '<tool_call>{"name": "' + call.function.name + '", "arguments": ' }}
            {{- call.function.arguments | tojson }}
            {{- '}</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role != 'system' %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""


def with_tool_template(model_dir: Path, dest: Path) -> Path:
    """A copy of ``model_dir`` whose tokenizer's chat template is :data:`TOOL_TEMPLATE`."""
    from transformers import AutoTokenizer

    shutil.copytree(model_dir, dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    tokenizer.chat_template = TOOL_TEMPLATE
    tokenizer.save_pretrained(dest)
    return dest
