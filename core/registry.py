"""The base-model registry: which base models jobs may name."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.models import BaseModelEntry
from core.settings import Settings


def model_sources(settings: Settings) -> dict[str, str]:
    """Name -> source of every model of ``GUARDTUNE_BASE_MODELS`` and the default.

    An entry is ``name`` or ``name=source`` (source: a local path or a Hugging Face id);
    a bare name is its own source, as is the default model unless an entry names it.
    """
    sources: dict[str, str] = {}
    for entry in settings.base_models:
        name, _, source = entry.partition("=")
        sources[name] = source or name
    sources.setdefault(settings.default_base_model, settings.default_base_model)
    return sources


def seed_base_models(session: Session, settings: Settings) -> None:
    """Ensure every model of :func:`model_sources` has a row."""
    for name, source in model_sources(settings).items():
        if session.get(BaseModelEntry, name) is None:
            session.add(BaseModelEntry(id=name, source=source))
