"""Peak training memory of a job, estimated from its base model's shape before it is queued.

Pure arithmetic (no torch: the API refuses a job that cannot fit before it is queued, and
the worker picks the micro-batch that does). A training step holds

* the frozen base weights: parameters × 4 bytes (fp32, CPU), 2 (bf16 / fp16, CUDA) or
  :data:`NF4_BYTES` (``GUARDTUNE_QUANTIZE=4bit``);
* the LoRA adapter on q, k, v and o of every layer: each parameter with its gradient and
  AdamW's two moments, all fp32 (:data:`LORA_PARAM_BYTES`);
* the activations of one micro-batch kept for the backward pass: per token and layer the
  inputs and outputs of the norms, projections, attention and MLP (:data:`SAVED_PER_TOKEN`
  hidden-size and intermediate-size vectors), or with activation checkpointing one
  hidden-size vector per layer plus one layer's worth recomputed;
* its logits over the vocabulary: the model's output, the fp32 log-softmax of the answer
  positions and both gradients, and with the exact reference its logits and log-softmax too.

A DPO pair is two sequences (the preferred and the other answer after the same input) in one
micro-batch: planned as one example of twice the length (:func:`example_tokens`).

Everything but the weights and the adapter grows linearly with the micro-batch's tokens, so
an estimate is ``fixed + tokens × per_token``. Attention itself is taken as memory-efficient
(PyTorch's SDPA keeps no ``length²`` scores). The estimate is an upper-bound style model of
what is allocated, not a measurement: the CUDA caching allocator's fragmentation and
framework buffers come on top (:data:`HEADROOM`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

LORA_PARAM_BYTES = 16  # fp32 weight, gradient and AdamW's exp_avg / exp_avg_sq
NF4_BYTES = 0.53  # 4 bits per weight plus double-quantized block scales
SAVED_PER_TOKEN = (14, 4)  # hidden-size and intermediate-size vectors a layer keeps per token
HEADROOM = 1.1  # allocator fragmentation, workspaces and framework buffers
GIB = 1024**3  # GUARDTUNE_WORKER_GPU_MEMORY_GB counts these


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a causal LM: its parameter count and its config's sizes
    (``kv_size``: the width of the k and v projections, smaller under grouped-query attention)."""

    parameters: int
    layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    kv_size: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], parameters: int) -> ModelShape:
        """From a transformers ``config.json`` (``PretrainedConfig.to_dict()``) of a
        Llama-like model and its parameter count."""
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or hidden // heads)
        return cls(
            parameters=parameters,
            layers=int(config["num_hidden_layers"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            kv_size=int(config.get("num_key_value_heads") or heads) * head_dim,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingLayout:
    """How a worker trains: ``weight_bytes`` per base parameter, activations in half
    precision (CUDA) or fp32, activation checkpointing, the LoRA rank and whether the KL's
    reference runs live (``exact_reference``) or comes from the cache."""

    weight_bytes: float
    half_precision: bool
    checkpointing: bool
    lora_r: int = 8
    exact_reference: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step's peak, by what holds them."""

    weights: int
    lora_and_optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        """All of it, with :data:`HEADROOM`."""
        return int((self.weights + self.lora_and_optimizer + self.activations + self.logits) * HEADROOM)


def worker_layout(settings: Settings, *, exact_reference: bool) -> TrainingLayout:
    """How workers with ``settings`` train (``GUARDTUNE_DEVICE``, ``GUARDTUNE_QUANTIZE``,
    ``GUARDTUNE_ACTIVATION_CHECKPOINTING``), a job's KL reference being live or cached."""
    cuda = settings.device_type == "cuda"
    weight_bytes = NF4_BYTES if settings.quantize == "4bit" else (2 if cuda else 4)
    return TrainingLayout(weight_bytes, cuda, settings.checkpointing, exact_reference=exact_reference)


def training_memory(shape: ModelShape, layout: TrainingLayout, micro_batch_tokens: int) -> MemoryEstimate:
    """The estimated peak of a step whose micro-batches pad to ``micro_batch_tokens``."""
    act = 2 if layout.half_precision else 4
    h, i = shape.hidden_size, shape.intermediate_size
    per_layer = (SAVED_PER_TOKEN[0] * h + SAVED_PER_TOKEN[1] * i) * act
    if layout.checkpointing:  # each layer's input, and one layer recomputed at a time
        activations = micro_batch_tokens * (shape.layers * h * act + per_layer)
    else:
        activations = micro_batch_tokens * shape.layers * per_layer
    logit_bytes = 2 * act + 8 + (act + 8 if layout.exact_reference else 0)
    lora_params = shape.layers * layout.lora_r * (6 * h + 2 * shape.kv_size)
    return MemoryEstimate(
        weights=int(shape.parameters * layout.weight_bytes),
        lora_and_optimizer=lora_params * LORA_PARAM_BYTES,
        activations=activations,
        logits=micro_batch_tokens * shape.vocab_size * logit_bytes,
    )


def example_tokens(longest_sequence: int, method: str) -> int:
    """The padded tokens one example of ``method`` puts in a micro-batch, its sequences at
    most ``longest_sequence`` tokens: twice that for a ``dpo`` pair, else once."""
    return 2 * longest_sequence if method == "dpo" else longest_sequence


def micro_batch_tokens_that_fit(
    shape: ModelShape, layout: TrainingLayout, budget_bytes: int, longest_example: int
) -> int | None:
    """The largest token budget of a micro-batch, in whole examples of ``longest_example``
    tokens, whose estimate fits ``budget_bytes``; ``None`` when not even one such example
    does (the job cannot train on this worker)."""
    fixed = training_memory(shape, layout, 0).total
    per_example = training_memory(shape, layout, longest_example).total - fixed
    examples = (budget_bytes - fixed) // per_example if budget_bytes > fixed else 0
    return int(examples) * longest_example if examples >= 1 else None
