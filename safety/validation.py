"""Token accuracy and the validation pass: OpenAI's ``*_mean_token_accuracy`` and
``valid_loss``.

Accuracy is the share of labelled (assistant) next-token positions whose argmax
prediction is the label, computed from logits the caller already has. The validation pass
runs the model in eval mode without gradients over a fixed set of examples; it draws no
random numbers and leaves the model's train/eval mode as it found it, so a training run
that validates stays bit-identical to one that does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safety.batching import token_batches
from safety.data import IGNORE_INDEX, EncodedExample, collate
from safety.objective import sft_loss


def token_accuracy_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """``(correct, labelled)`` next-token positions of a batch (shapes as ``objective``)."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    correct = (logits[:, :-1].argmax(dim=-1) == targets) & mask
    return int(correct.sum()), int(mask.sum())


@dataclass(frozen=True)
class ValidationResult:
    """Token-weighted over the whole set: ``loss`` (mean cross-entropy) and
    ``mean_token_accuracy``; ``tokens`` counts the labelled positions."""

    loss: float
    mean_token_accuracy: float
    tokens: int


@torch.no_grad()
def validation_pass(
    model: torch.nn.Module,
    examples: list[EncodedExample],
    pad_token_id: int,
    batch_size: int,
    max_tokens: int | None = None,
) -> ValidationResult:
    """Loss and token accuracy of ``model`` on ``examples`` (non-empty), in batches of at most
    ``batch_size`` examples and ``max_tokens`` padded tokens (``safety.batching``)."""
    if not examples:
        raise ValueError("no validation examples")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, tokens = 0.0, 0, 0
    try:
        for rows in token_batches([len(e.input_ids) for e in examples], max_tokens, batch_size):
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in rows], pad_token_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            right, labelled = token_accuracy_counts(logits, batch["labels"])
            loss_sum += sft_loss(logits, batch["labels"]).item() * labelled
            correct, tokens = correct + right, tokens + labelled
    finally:
        model.train(was_training)
    n = max(tokens, 1)
    return ValidationResult(loss=loss_sum / n, mean_token_accuracy=correct / n, tokens=tokens)
