"""Aligning a weak base model at onboarding: train (or reuse) its aligned variant with
``safety.align`` and register it as a base model of its own, ``<name>-aligned``.

The variant is a merged model directory (safetensors) under
``GUARDTUNE_MODEL_CACHE_DIR/aligned/<name>``, cached like the converted base model: a second
call with the same source and recipe reuses it without training. Where the project ships the
model's aligned adapter for the same recipe (``safety/prebuilt/``; ``GUARDTUNE_ALIGN_PREBUILT``,
on by default), the first call merges it instead of training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.audit import service as audit
from core.db import session_scope
from core.errors import NotFound
from core.logging import get_logger
from core.models import BaseModelEntry
from core.settings import get_settings
from core.vocab import BaseModelStatus

if TYPE_CHECKING:
    from safety.align import AlignConfig
    from safety.train_metrics import StepMetrics

ALIGNED_SUFFIX = "-aligned"
log = get_logger(__name__)


def aligned_name(model_id: str) -> str:
    return model_id + ALIGNED_SUFFIX


def aligned_dir(model_id: str) -> Path:
    return get_settings().models_dir / "aligned" / model_id.replace("/", "--")


def align_config() -> AlignConfig:
    """``AlignConfig`` with ``GUARDTUNE_ALIGN_OPTIONS`` applied (lists become tuples)."""
    from safety.align import AlignConfig

    options: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in get_settings().align_options.items()
    }
    return AlignConfig(**options)


def logged_progress(
    model_id: str, on_step: Callable[[StepMetrics], None] | None = None
) -> Callable[[StepMetrics], None]:
    """An ``on_step`` for the alignment's training: logs ``align_progress`` (step, total steps,
    loss) at every tenth of its steps and its last, so that logs without a terminal show it
    moving, then calls ``on_step`` (a CLI's progress bar) with every step's metrics."""

    def step(metrics: StepMetrics) -> None:
        every = max(1, metrics.total_steps // 10)
        if metrics.step % every == 0 or metrics.step == metrics.total_steps:
            log.info(
                "align_progress",
                model=model_id,
                step=metrics.step,
                total_steps=metrics.total_steps,
                loss=round(metrics.loss, 4),
            )
        if on_step is not None:
            on_step(metrics)

    return step


def align_base_model(
    model_id: str,
    actor: str = audit.SYSTEM,
    onboard: bool = False,
    on_step: Callable[[StepMetrics], None] | None = None,
) -> dict[str, Any]:
    """Align registered base model ``model_id`` and register (or refresh) its variant.

    A newly trained variant loses any earlier onboarding (probe, baseline: they belong to the
    old weights); with ``onboard`` the variant is onboarded right away. Training logs its
    progress (``logged_progress``) and calls ``on_step`` with each step's ``StepMetrics``.
    Returns the variant's name, path, where the variant came from (``origin``: cached,
    prebuilt or trained), the alignment report and the onboarding result."""
    from safety.align import ensure_aligned, prebuilt_dir

    with session_scope() as session:
        entry = session.get(BaseModelEntry, model_id)
        if entry is None:
            raise NotFound(f"No base model named {model_id!r} in the registry.", code="model_not_found")
        source = entry.source
    settings = get_settings()
    meta = ensure_aligned(
        source,
        aligned_dir(model_id),
        align_config(),
        cache_dir=settings.models_dir,
        device=settings.device,
        prebuilt=prebuilt_dir(source) if settings.align_prebuilt else None,
        on_step=logged_progress(model_id, on_step),
    )
    name = aligned_name(model_id)
    with session_scope() as session:
        variant = session.get(BaseModelEntry, name)
        if variant is None:
            variant = BaseModelEntry(id=name, source=meta["path"], status=BaseModelStatus.REGISTERED)
            session.add(variant)
        elif variant.source != meta["path"] or meta["origin"] != "cached":
            variant.source, variant.status = meta["path"], BaseModelStatus.REGISTERED
            variant.probe_prefix, variant.baseline = None, None
        audit.record(
            session,
            actor=actor,
            action="model.aligned",
            target=name,
            details={
                "from": model_id,
                "key": meta["key"],
                "origin": meta["origin"],
                "examples": meta["report"]["examples"],
                "steps": meta["report"]["steps"],
            },
        )
    result = {
        "model": name,
        "from": model_id,
        "path": meta["path"],
        "origin": meta["origin"],
        "report": meta["report"],
    }
    if onboard:
        from worker.pipeline.onboard import onboard_base_model

        result["onboard"] = onboard_base_model(name, actor=actor)
    return result
