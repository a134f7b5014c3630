"""Chat prompts in, tokens out: batched chat-template encoding and greedy generation.

Contract shared by every caller in ``safety`` (probe, local judge, evaluation):

* A *conversation* is a list of OpenAI-style messages (``{"role", "content"}``); a bare
  string is shorthand for one user message; a :class:`ToolConversation` is one offered tools.
* A prompt is the conversation rendered with the tokenizer's chat template up to the
  assistant turn (``add_generation_prompt=True``), tokenized without adding special
  tokens a second time, and truncated from the left to ``max_len`` tokens so the
  assistant header is always kept.
* Batches are padded on the requested side with an attention mask; forward passes get
  explicit ``position_ids`` derived from the mask, so left- and right-padded batches
  give the same hidden states for the real tokens as an unpadded run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from core.jobs import config as defaults
from safety import interrupt
from safety.batching import token_batches
from safety.templates import render

Conversation = list[dict[str, Any]]


@dataclass(frozen=True)
class ToolConversation:
    """A conversation offered ``tools`` (OpenAI's shape), rendered with them."""

    messages: Conversation
    tools: list[dict[str, Any]]


PromptLike = str | Conversation | ToolConversation
PaddingSide = Literal["left", "right"]


MAX_PROMPT_LEN = 512  # prompt tokens kept (the end of a longer one)


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding settings for evaluation runs."""

    max_new_tokens: int = defaults.EVAL_MAX_NEW_TOKENS
    batch_size: int = defaults.EVAL_BATCH_SIZE
    max_prompt_len: int = MAX_PROMPT_LEN
    # padded tokens of a batch, each prompt counting with its max_new_tokens (safety.batching)
    max_tokens: int | None = None


def as_conversation(prompt: str | Conversation) -> Conversation:
    """A bare string becomes a single user message; a message list is returned as is."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def render_prompt(tokenizer: Any, prompt: PromptLike) -> str:
    """The chat-template text of ``prompt`` ending with the assistant-turn header
    (:func:`safety.templates.render`, as training renders its examples)."""
    if isinstance(prompt, ToolConversation):
        return render(tokenizer, prompt.messages, prompt.tools, add_generation_prompt=True)
    return render(tokenizer, as_conversation(prompt), add_generation_prompt=True)


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, falling back to EOS (many chat tokenizers define no pad)."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ValueError("tokenizer has neither a pad nor an EOS token")
    return int(pid)


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, padding_side: PaddingSide
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into ``(input_ids, attention_mask)`` long tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, cols] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def encode_prompts(
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    *,
    max_len: int,
    padding_side: PaddingSide = "left",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render, tokenize, left-truncate to ``max_len`` and pad a batch of prompts."""
    token_lists = [prompt_token_ids(tokenizer, p, max_len) for p in prompts]
    return pad_batch(token_lists, pad_token_id(tokenizer), padding_side)


def prompt_token_ids(tokenizer: Any, prompt: PromptLike, max_len: int) -> list[int]:
    """The tokens ``prompt`` is read as (probe, generation): its chat-template rendering up to the
    assistant header, tokenized as one text, the last ``max_len`` of them."""
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"][-max_len:]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (0 for padding), as ``generate`` does."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    settings: GenerationSettings = GenerationSettings(),
) -> list[str]:
    """Greedy completions for ``prompts`` (a model or a ``PeftModel``), in input order.

    Prompts are left-padded, in batches of at most ``settings.batch_size`` prompts and, with
    ``settings.max_tokens``, that many padded tokens counting each prompt's
    ``max_new_tokens`` (``safety.batching``); only the newly generated tokens are decoded,
    with special tokens skipped.
    """
    model.eval()
    device = model_device(model)
    pad_id = pad_token_id(tokenizer)
    token_lists = [prompt_token_ids(tokenizer, p, settings.max_prompt_len) for p in prompts]
    lengths = [len(t) + settings.max_new_tokens for t in token_lists]
    out = [""] * len(prompts)
    for rows in token_batches(lengths, settings.max_tokens, settings.batch_size):
        interrupt.check()
        ids, mask = pad_batch([token_lists[i] for i in rows], pad_id, "left")
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        new_tokens = gen[:, ids.shape[1] :]
        for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    return out
