"""What lets a base model and its training fit a device's memory: the dtype of its weights,
the autocast of its matmuls, activation (gradient) checkpointing and 4-bit quantization.

On CUDA the frozen base weights are held in bf16 (fp16 on a GPU without bf16): half the
memory of fp32. The LoRA weights stay fp32 (PEFT's ``get_peft_model`` upcasts adapter weights
of a half-precision base) and so does AdamW's state, which follows its parameters; the losses
are computed in fp32 (``safety.objective`` upcasts the logits). On CPU everything stays fp32.
``GUARDTUNE_QUANTIZE=4bit`` (QLoRA) holds the base weights in bitsandbytes' NF4 instead,
CUDA only. Activation checkpointing keeps each decoder layer's input only and recomputes the
rest in the backward pass: activation memory per token drops from a few dozen hidden-size
vectors per layer to one, for about a third more compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import BitsAndBytesConfig, PreTrainedModel

Quantize = Literal["none", "4bit"]


def weight_dtype(device_type: str, bf16_supported: bool) -> torch.dtype:
    """The dtype of a base model's weights on a device of type ``device_type`` (``"cpu"``,
    ``"cuda"``, …): bf16 on CUDA, fp16 where the GPU lacks bf16 (``bf16_supported``), fp32
    anywhere else."""
    if device_type != "cuda":
        return torch.float32
    return torch.bfloat16 if bf16_supported else torch.float16


def device_weight_dtype(device: str | torch.device) -> torch.dtype:
    """:func:`weight_dtype` of ``device``, asking CUDA whether it supports bf16."""
    device_type = torch.device(device).type
    return weight_dtype(device_type, device_type == "cuda" and torch.cuda.is_bf16_supported())


def autocast(device: torch.device) -> Any:
    """Autocast of a forward pass on ``device``: on CUDA the matmuls run in the base weights'
    half precision (fp32 LoRA weights included); nothing elsewhere."""
    dtype = device_weight_dtype(device)
    return torch.autocast("cuda", dtype=dtype, enabled=device.type == "cuda")


def enable_activation_checkpointing(model: PreTrainedModel | PeftModel) -> None:
    """Recompute ``model``'s decoder layers in the backward pass (non-reentrant
    ``torch.utils.checkpoint``, which keeps the RNG state: LoRA dropout draws the same masks
    in the recomputation). The frozen embeddings' output is made to require grad, as PEFT
    does for checkpointed LoRA models, so that every checkpointed segment has an input on
    the autograd graph."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def quantization_config(quantize: Quantize, device: str) -> BitsAndBytesConfig | None:
    """The ``from_pretrained`` quantization of ``GUARDTUNE_QUANTIZE``: ``None`` for ``none``;
    for ``4bit`` bitsandbytes NF4 with double quantization, computing in the device's half
    precision. Raises ``ValueError`` off CUDA (bitsandbytes' 4-bit kernels are CUDA's)."""
    if quantize == "none":
        return None
    if torch.device(device).type != "cuda":
        raise ValueError(f"GUARDTUNE_QUANTIZE={quantize} needs a CUDA device; GUARDTUNE_DEVICE is {device!r}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=device_weight_dtype(device),
    )


def trainable_base(model: PreTrainedModel) -> PreTrainedModel:
    """``model`` ready to take a trainable LoRA adapter: as it is, or for a 4-bit base
    PEFT's ``prepare_model_for_kbit_training`` (its unquantized weights upcast to fp32, as
    QLoRA trains), leaving activation checkpointing to :func:`enable_activation_checkpointing`."""
    if not getattr(model, "is_loaded_in_4bit", False):
        return model
    from peft import prepare_model_for_kbit_training

    prepared: PreTrainedModel = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return prepared
