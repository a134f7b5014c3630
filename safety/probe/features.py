"""Probe features: the reference model's pooled hidden states at chosen layers.

Each prompt is rendered with the chat template up to the assistant turn
(``add_generation_prompt=True``) and run through the frozen reference model. The
residual stream after decoder block ``i`` (``0`` = token embeddings, negative indices
count from the last block) is averaged over the prompt's tokens (``pool="mean"``: all
real tokens; ``pool="content"``: only the tokens between the chat template's fixed
prefix and suffix, so the constant system prompt and headers do not dilute the mean).
Forward hooks capture the pooled states; the hook on the deepest layer needed stops the
forward pass, so a middle-layer probe costs less than a full forward pass. The hooks are
removed before :func:`extract_features` (and :func:`span_features`, which pools any
spans of any token sequences) returns, also on an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from safety import interrupt
from safety.batching import token_batches
from safety.generation import (
    PromptLike,
    model_device,
    pad_batch,
    pad_token_id,
    position_ids_from_mask,
    prompt_token_ids,
    render_prompt,
)

Pooling = Literal["mean", "content"]


class _StopForward(Exception):
    """Raised by the hook on the deepest needed layer to skip the rest of the model."""


def _decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    n = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError("could not find the decoder layer list of the model")


def resolve_layers(layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """Normalise layer indices to ``0..num_layers`` (negative ones count from the end)."""
    out = []
    for layer in layers:
        idx = layer + num_layers + 1 if layer < 0 else layer
        if not 0 <= idx <= num_layers:
            raise ValueError(f"layer {layer} out of range for a {num_layers}-layer model")
        out.append(idx)
    return tuple(out)


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Blocks from 40 % to 80 % of the depth (12-24 of 30), averaged by the probe."""
    first = max(1, round(num_layers * 0.4))
    return tuple(range(first, max(first, round(num_layers * 0.8)) + 1))


def layer_candidates(num_layers: int) -> list[tuple[int, ...]]:
    """Layer sets worth trying, chosen among by validation AUROC: the default band first,
    then other middle-to-late ranges, then single layers every 4 blocks."""
    ranges = [default_layers(num_layers)] + [
        tuple(range(round(num_layers * a), round(num_layers * b) + 1))
        for a, b in ((0.27, 0.53), (0.33, 0.67), (0.5, 0.83))
    ]
    singles = [(layer,) for layer in range(round(num_layers * 0.2), num_layers, 4)]
    return ranges + singles


def _template_bounds(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids of the chat template's fixed prefix and suffix around a user message."""
    a = tokenizer(render_prompt(tokenizer, "\u00a7"), add_special_tokens=False)["input_ids"]
    b = tokenizer(render_prompt(tokenizer, "\u00b6 x"), add_special_tokens=False)["input_ids"]
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    return a[:pre], a[len(a) - suf :]


def _content_span(ids: list[int], prefix: list[int], suffix: list[int]) -> tuple[int, int]:
    """``[start, end)`` of the tokens not matching the template prefix/suffix (never empty)."""
    start = 0
    while start < min(len(ids), len(prefix)) and ids[start] == prefix[start]:
        start += 1
    suf = 0
    while (
        suf < len(suffix) and len(ids) - suf - 1 >= start and ids[len(ids) - 1 - suf] == suffix[len(suffix) - 1 - suf]
    ):
        suf += 1
    end = len(ids) - suf
    if end <= start:
        return 0, len(ids)
    return start, end


def extract_features(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[PromptLike],
    layers: Sequence[int],
    *,
    pool: Pooling = "content",
    batch_size: int = 16,
    max_len: int = 512,
    padding_side: Literal["left", "right"] = "right",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Pooled hidden states, float32 ``[len(prompts), len(layers), hidden]``.

    Prompts longer than ``max_len`` tokens keep their last ``max_len`` tokens (so the
    assistant header stays). Batched as :func:`span_features` batches.
    """
    encoded = [prompt_token_ids(tokenizer, p, max_len) for p in prompts]
    spans = pooling_spans(tokenizer, encoded, pool)
    return span_features(
        model,
        encoded,
        spans,
        layers,
        pad_id=pad_token_id(tokenizer),
        batch_size=batch_size,
        padding_side=padding_side,
        max_tokens=max_tokens,
    )


def span_features(
    model: Any,
    token_lists: Sequence[Sequence[int]],
    spans: Sequence[tuple[int, int]],
    layers: Sequence[int],
    *,
    pad_id: int,
    batch_size: int = 16,
    padding_side: Literal["left", "right"] = "right",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """The hidden states after each of ``layers`` averaged over ``spans[i]`` (``[start,
    end)`` within ``token_lists[i]``, non-empty): float32 ``[len(token_lists), len(layers),
    hidden]``. The sequences run in order of length, in batches of at most ``batch_size``
    and, with ``max_tokens``, that many padded tokens (``safety.batching``); the forward
    stops after the deepest layer needed (no logits). Runs under ``torch.no_grad`` in eval
    mode."""
    wanted = resolve_layers(layers, model.config.num_hidden_layers)
    deepest = max(wanted)
    device = model_device(model)
    captured: dict[int, torch.Tensor] = {}
    weights: torch.Tensor | None = None

    def pool_states(index: int, hidden: torch.Tensor) -> None:
        assert weights is not None
        captured[index] = torch.einsum("bt,bth->bh", weights, hidden.float())
        if index == deepest:
            raise _StopForward

    # Batches of similar length waste less compute on padding; results go back in order.
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    model.eval()
    out = torch.zeros((len(token_lists), len(wanted), model.config.hidden_size), dtype=torch.float32)
    with layer_outputs(model, wanted, pool_states):
        for batch in token_batches([len(token_lists[i]) for i in order], max_tokens, batch_size):
            interrupt.check()
            rows = [order[p] for p in batch]
            ids_t, mask = pad_batch([token_lists[i] for i in rows], pad_id, padding_side)
            pool_mask = torch.zeros(mask.shape, dtype=torch.float32)
            for row, i in enumerate(rows):
                offset = mask.shape[1] - len(token_lists[i]) if padding_side == "left" else 0
                start, end = spans[i]
                pool_mask[row, offset + start : offset + end] = 1.0
            weights = (pool_mask / pool_mask.sum(dim=1, keepdim=True)).to(device)
            captured.clear()
            with torch.no_grad():
                try:
                    model(
                        input_ids=ids_t.to(device),
                        attention_mask=mask.to(device),
                        position_ids=position_ids_from_mask(mask).to(device),
                        use_cache=False,
                    )
                except _StopForward:
                    pass
            out[rows] = torch.stack([captured[i] for i in wanted], dim=1).cpu()
    return out


def pooling_spans(tokenizer: Any, token_lists: Sequence[Sequence[int]], pool: Pooling) -> list[tuple[int, int]]:
    """``[start, end)`` of the tokens each prompt of ``token_lists`` pools over (``pool``)."""
    if pool != "content":
        return [(0, len(ids)) for ids in token_lists]
    prefix, suffix = _template_bounds(tokenizer)
    return [_content_span(list(ids), prefix, suffix) for ids in token_lists]


@contextmanager
def layer_outputs(
    model: PreTrainedModel, layers: Sequence[int], on_output: Callable[[int, torch.Tensor], None]
) -> Iterator[None]:
    """Within the block, every forward of ``model`` calls ``on_output(layer, hidden)`` with
    the residual stream after each of ``layers`` (resolved indices, ``0`` = embeddings); an
    exception ``on_output`` raises ends the forward. The hooks are removed on exit."""
    modules = {0: model.get_input_embeddings()}
    modules.update({i + 1: m for i, m in enumerate(_decoder_layers(model))})

    def hook_for(index: int):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            on_output(index, output[0] if isinstance(output, tuple) else output)

        return hook

    handles = [modules[i].register_forward_hook(hook_for(i)) for i in sorted(set(layers))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def feature_columns(feature_layers: Sequence[int], layers: Sequence[int]) -> list[int]:
    """Positions in ``feature_layers`` of each of ``layers`` (all must be there)."""
    position = {layer: j for j, layer in enumerate(feature_layers)}
    missing = [layer for layer in layers if layer not in position]
    if missing:
        raise ValueError(f"features lack layers {missing}; they hold {list(feature_layers)}")
    return [position[layer] for layer in layers]
