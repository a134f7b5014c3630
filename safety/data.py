"""Tokenization of OpenAI fine-tuning examples for assistant-only training.

An example is one JSONL line of an OpenAI fine-tuning file, either chat
(``{"messages": [{"role": ..., "content": ...}, ...]}``) or prompt/completion
(``{"prompt": ..., "completion": ...}``, treated as one user turn and one assistant turn).
A chat example's ``tools`` and its assistant turns' tool calls are rendered by the chat
template (:mod:`safety.templates`) and trained like any answer text.
Validation (roles, sizes) happens before training; this module assumes valid examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from safety.templates import TemplateError, example_tools, render

IGNORE_INDEX = -100  # label of tokens that are not trained on (cross-entropy ignore_index)


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of a rendered conversation and its labels: the token id on tokens written
    by a trained assistant message, ``IGNORE_INDEX`` everywhere else. Same length.
    ``prompt_ends``: per assistant message, in order, the number of tokens up to and
    including its generation prompt (where the message's text starts; counted before the
    cut to ``max_len``, so it may exceed the length)."""

    input_ids: list[int]
    labels: list[int]
    prompt_ends: tuple[int, ...] = ()


def to_messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages of an OpenAI fine-tuning example (chat or prompt/completion)."""
    if "messages" in example:
        return example["messages"]
    return [
        {"role": "user", "content": example["prompt"]},
        {"role": "assistant", "content": example["completion"]},
    ]


def encode_example(tokenizer: PreTrainedTokenizerBase, example: dict[str, Any], max_len: int) -> EncodedExample:
    """``encode_chat`` of either example format, with the example's tools."""
    return encode_chat(tokenizer, to_messages(example), max_len, tools=example_tools(example))


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    max_len: int,
    *,
    tools: list[dict[str, Any]] | None = None,
) -> EncodedExample:
    """Render ``messages`` (and ``tools``) with the tokenizer's chat template
    (:func:`safety.templates.render`) and label assistant tokens only.

    The conversation is rendered prefix by prefix: each message adds the text between the
    rendering of the messages before it and the rendering including it. For an assistant
    message the part up to the generation prompt (``<|im_start|>assistant\\n`` or the like) is
    context; the rest (content, tool calls as the template writes them, and end-of-turn
    tokens) is trained, unless the message has
    OpenAI's ``"weight": 0``. An assistant message may also carry ``"untrained_prefix"``
    (never accepted from uploads: dataset validation rejects the key; ``safety.align`` uses it
    for refusals that recover after a few harmful tokens): its ``content`` must start with that
    text, which is then context, not trained. Each piece is tokenized on its own, which is
    exactly how the model sees an answer it generates after the generation prompt. The result
    is cut to the first ``max_len`` tokens.

    Raises :class:`safety.templates.TemplateError` (a ``ValueError``) if the chat template
    fails on the messages or is not prefix-stable (a later rendering does not start with an
    earlier one), since assistant tokens could then not be located.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    prompt_ends: list[int] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, messages[:i], tools, rendered, add_generation_prompt=True)
            _append(tokenizer, prompt[len(rendered) :], False, input_ids, labels)
            prompt_ends.append(len(input_ids))
            rendered = prompt
        text = _render(tokenizer, messages[: i + 1], tools, rendered, add_generation_prompt=False)
        trained = message["role"] == "assistant" and message.get("weight", 1) != 0
        prefix = message.get("untrained_prefix", "") if message["role"] == "assistant" else ""
        if prefix:
            if not text[len(rendered) :].startswith(prefix):
                raise ValueError("an assistant message's content must start with its untrained_prefix")
            _append(tokenizer, prefix, False, input_ids, labels)
            rendered += prefix
        _append(tokenizer, text[len(rendered) :], trained, input_ids, labels)
        rendered = text
    return EncodedExample(input_ids=input_ids[:max_len], labels=labels[:max_len], prompt_ends=tuple(prompt_ends))


def collate(batch: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example: ``input_ids`` (padded with ``pad_id``),
    ``attention_mask`` (1 on real tokens) and ``labels`` (``IGNORE_INDEX`` on padding),
    each a ``(batch, length)`` long tensor."""
    length = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    prefix: str,
    *,
    add_generation_prompt: bool,
) -> str:
    text = render(tokenizer, messages, tools, add_generation_prompt=add_generation_prompt)
    if not text.startswith(prefix):
        raise TemplateError("chat template is not prefix-stable; cannot locate assistant tokens")
    return text


def _append(
    tokenizer: PreTrainedTokenizerBase, text: str, trained: bool, input_ids: list[int], labels: list[int]
) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    input_ids.extend(ids)
    labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
