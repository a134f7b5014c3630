"""Preference fine-tuning (DPO) with the same risk-adaptive weights as SFT.

A pair i is a prompt x with a preferred answer y_w and a non-preferred one y_l. With
``log π(y|x)`` summed over an answer's tokens, π the policy (LoRA adapter on) and π_ref the
same model with the adapter disabled (``safety.reference.reference_forward``: no second copy,
as TRL does for PEFT models), DPO's sigmoid loss (Rafailov et al. 2023; TRL's ``"sigmoid"``):

    margin_i = β · [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))]
    DPO_i    = −log σ(margin_i)

and guardtune's step objective, ``(w_sft_i, w_kl_i)`` being the pair's weights from its risk
by the very function SFT uses (``safety.train_step.example_weights``):

    loss = Σ_i w_sft_i · DPO_i / P  +  Σ_i w_kl_i · KL_i / N

P is the step's number of pairs, KL_i is ``KL(P_ref ‖ P_θ)`` summed over the preferred
answer's tokens (``safety.objective.example_sums``) and N the step's preferred-answer tokens:
the pair term takes the place of SFT's cross-entropy, and the KL holds what the pair teaches
to say next to what the reference says. A risky pair (a preferred answer that complies with a
harmful request, or a non-preferred one that refuses it: ``safety.pair_scan``) thus moves the
model less and is pulled back more. ``margin_i > 0`` counts as a correct preference (the
reward accuracy); ``β · (log π − log π_ref)`` of an answer is its implicit reward.

A pair's two sequences run in one batch (preferred rows first); micro-batches hold at most
``batch_size`` pairs and, with ``max_tokens``, that many padded tokens (both halves).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from safety import distributed
from safety.batching import token_batches
from safety.data import EncodedExample, collate
from safety.memory import autocast
from safety.objective import answer_inputs, example_sums
from safety.reference import reference_forward
from safety.train_metrics import StepMetrics
from safety.train_state import TrainRun, step_indices
from safety.train_step import count_answer_tokens, example_weights, optimizer_step, step_fields


@dataclass(frozen=True)
class PairTerms:
    """Per pair of a micro-batch (shape ``(pairs,)``): the DPO loss, the margin, and the
    preferred answer's KL sum and token count."""

    dpo: torch.Tensor
    margin: torch.Tensor
    kl: torch.Tensor
    tokens: torch.Tensor


def dpo_loss(
    logp_w: torch.Tensor, logp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(DPO_i, margin_i)`` per pair from the answers' summed log-probs (see the module docstring)."""
    margin = beta * ((logp_w - ref_w) - (logp_l - ref_l))
    return -F.logsigmoid(margin), margin


def pair_terms(
    model: PeftModel, pairs: list[tuple[EncodedExample, EncodedExample]], pad_id: int, beta: float
) -> tuple[PairTerms, int]:
    """The :class:`PairTerms` of ``pairs`` (gradients through the policy only) and the
    micro-batch's non-padding input tokens."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in collate([p[0] for p in pairs] + [p[1] for p in pairs], pad_id).items()}
    inputs, labels = answer_inputs(batch)
    with reference_forward(model), autocast(device):
        ref_logits = model(**inputs).logits
    with autocast(device):
        logits = model(**inputs).logits
    ce, kl, tokens = example_sums(logits, labels, ref_logits)
    ref_ce, _, _ = example_sums(ref_logits, labels)
    assert kl is not None  # ref_logits given
    n = len(pairs)
    loss, margin = dpo_loss(-ce[:n], -ce[n:], -ref_ce[:n], -ref_ce[n:], beta)
    return PairTerms(loss, margin, kl[:n], tokens[:n]), int(batch["attention_mask"].sum())


@dataclass
class PairSums:
    """One step's (or pass's) sums over its pairs: the objective ``loss``, the unweighted
    ``dpo`` and ``margin`` sums and ``correct`` preferences over ``pairs``, the preferred
    answers' ``kl`` over their ``kl_tokens``, and input ``tokens``."""

    loss: float = 0.0
    dpo: float = 0.0
    margin: float = 0.0
    correct: int = 0
    pairs: int = 0
    kl: float = 0.0
    kl_tokens: int = 0
    tokens: int = 0

    def add(self, terms: PairTerms, tokens: int, loss: float = 0.0) -> None:
        self.loss += loss
        self.dpo += terms.dpo.sum().item()
        self.margin += terms.margin.sum().item()
        self.correct += int((terms.margin > 0).sum())
        self.pairs += len(terms.dpo)
        self.kl += terms.kl.sum().item()
        self.kl_tokens += int(terms.tokens.sum())
        self.tokens += tokens

    def mean(self, total: float) -> float:
        return total / max(self.pairs, 1)


def micro_batches(
    encoded: list[EncodedExample], indices: list[int], batch_size: int, max_tokens: int | None
) -> list[list[int]]:
    """Positions into ``indices`` (pair i is ``encoded[2i], encoded[2i + 1]``) grouped in
    micro-batches of at most ``batch_size`` pairs and ``max_tokens`` padded tokens
    (``safety.batching.token_batches``, which orders by length under a budget: a caller reads
    each pair's own weight by its position)."""
    lengths = [max(len(encoded[2 * i].input_ids), len(encoded[2 * i + 1].input_ids)) for i in indices]
    half = max_tokens // 2 if max_tokens is not None else None
    return token_batches(lengths, half, batch_size)


def pairs_at(
    encoded: list[EncodedExample], indices: list[int], positions: list[int]
) -> list[tuple[EncodedExample, EncodedExample]]:
    """The pairs of ``indices`` at ``positions``."""
    return [(encoded[2 * indices[p]], encoded[2 * indices[p] + 1]) for p in positions]


def run_dpo_step(run: TrainRun, step: int) -> StepMetrics:
    """Optimizer step ``step`` (0-based) of a ``dpo`` run: ``safety.train_step.run_step``'s
    counterpart, the same pairs per step, weights, optimizer step and summary."""
    config = run.config
    started = time.perf_counter()
    indices = step_indices(len(run.risks), config.examples_per_step, config.seed, step)
    weights = example_weights(config, [run.risks[i] for i in indices])
    preferred_tokens = [count_answer_tokens(run.encoded[2 * i]) for i in indices]
    n_tokens = max(sum(preferred_tokens), 1)
    mine = distributed.world().shard(len(indices))  # this rank's pairs; the normalisers are the step's
    sums, my_indices, my_weights = PairSums(), indices[mine], weights[mine]
    for micro in micro_batches(run.encoded, my_indices, config.batch_size, config.micro_batch_tokens):
        pairs = pairs_at(run.encoded, my_indices, micro)
        terms, tokens = pair_terms(run.model, pairs, run.tokenizer.pad_token_id, config.dpo_beta)
        w_sft, w_kl = torch.tensor([my_weights[p] for p in micro], device=terms.dpo.device).unbind(-1)
        loss = (w_sft * terms.dpo).sum() / len(indices) + (w_kl * terms.kl).sum() / n_tokens
        loss.backward()
        sums.add(terms, tokens, loss.item())
    sums = distributed.summed(sums)
    lr = optimizer_step(run, weights, preferred_tokens)
    elapsed = time.perf_counter() - started
    metrics = StepMetrics(
        **step_fields(run, step, indices, weights),
        loss=sums.loss,
        sft_loss=sums.mean(sums.dpo),
        kl=sums.kl / sums.kl_tokens if sums.kl_tokens else None,
        tokens=sums.tokens,
        tokens_per_s=sums.tokens / elapsed if elapsed > 0 else 0.0,
        lr=lr,
        reward_margin=sums.mean(sums.margin),
        reward_accuracy=sums.mean(sums.correct),
    )
    run.summary.add(metrics, [w for _, w in weights], [run.flagged[i] for i in indices])
    return metrics


@torch.no_grad()
def preference_pass(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: list[EncodedExample],
    beta: float,
    batch_size: int,
    max_tokens: int | None = None,
) -> PairSums:
    """The unweighted DPO sums of every pair of ``encoded`` (``train_state.encode_all``'s
    layout), as a validation pass; the model's train / eval mode is restored after."""
    was_training = model.training
    model.eval()
    sums = PairSums()
    indices = list(range(len(encoded) // 2))
    for micro in micro_batches(encoded, indices, batch_size, max_tokens):
        sums.add(*pair_terms(model, pairs_at(encoded, indices, micro), tokenizer.pad_token_id, beta))
    model.train(was_training)
    return sums


def with_preference_validation(metrics: StepMetrics, run: TrainRun) -> StepMetrics:
    """``metrics`` with the validation pairs' mean DPO loss and reward accuracy."""
    config = run.config
    sums = preference_pass(
        run.model, run.tokenizer, run.encoded_valid, config.dpo_beta, config.batch_size, config.micro_batch_tokens
    )
    return replace(metrics, valid_loss=sums.mean(sums.dpo), valid_accuracy=sums.mean(sums.correct))
