"""Loading a model for the ``probe`` and ``eval`` commands (imports ``safety`` lazily).

``--model`` is a built-in name (``smollm2-135m-instruct``), a registry entry of
``GUARDTUNE_BASE_MODELS`` written ``name=source``, a local model directory or a Hugging
Face id. Weights are cached under ``GUARDTUNE_MODEL_CACHE_DIR`` (``$GUARDTUNE_HOME/models``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.registry import model_sources
from core.settings import get_settings
from ops.output import err_console


def resolve_source(model: str) -> str:
    """The source the base-model registry gives ``model``, else ``model`` itself."""
    return model_sources(get_settings()).get(model, model)


def safe_name(model: str) -> str:
    """A file-system-safe name for a model (a path's last part, an HF id's slash replaced)."""
    path = Path(model)
    base = path.name if path.exists() else model
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "model"


def default_probe_dir(model: str) -> Path:
    return get_settings().models_dir / "probes" / safe_name(model)


def load_model(model: str, adapter: Path | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in eval mode, loaded as the worker's stages load it
    (``worker.pipeline.resources.load_model``); with ``adapter``, a ``PeftModel`` on top."""
    from worker.pipeline.resources import load_model as load_base

    with err_console().status(f"loading {model}…"):
        base, tokenizer = load_base(resolve_source(model))
        if adapter is None:
            return base, tokenizer
        from peft import PeftModel

        peft_model = PeftModel.from_pretrained(base, str(adapter), is_trainable=False)
        return peft_model.eval(), tokenizer
