"""Models: the registry's base models plus the organization's released fine-tuned models,
and the download of a released model's PEFT adapter as a tar archive built on the fly."""

from __future__ import annotations

import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from api.deps import Caller
from api.models.repository import ModelRepository
from api.models.schemas import Model
from core import inference
from core.audit import service as audit
from core.errors import NotFound, PermissionDenied
from core.models import BaseModelEntry, ReleasedModel
from core.releases import service as releases
from core.releases.repository import ReleaseRepository
from core.storage import ObjectStore

BASE_MODEL_OWNER = "system"
BLOCK = tarfile.BLOCKSIZE  # 512


def base_model_object(row: BaseModelEntry) -> Model:
    return Model(id=row.id, created=row.created_at, owned_by=BASE_MODEL_OWNER)


def released_model_object(row: ReleasedModel) -> Model:
    return Model(id=row.id, created=row.created_at, owned_by=row.org_id)


@dataclass(frozen=True)
class AdapterArchive:
    model: ReleasedModel
    filename: str
    members: list[tuple[str, str, int]]  # (store key, name in the archive, size)

    @property
    def size(self) -> int:
        total = 0
        for _, name, size in self.members:
            total += len(_header(name, size, 0)) + size + (-size % BLOCK)
        return total + 2 * BLOCK

    def stream(self, store: ObjectStore) -> Iterator[bytes]:
        mtime = int(self.model.created_at or time.time())
        for key, name, size in self.members:
            yield _header(name, size, mtime)
            sent = 0
            for chunk in store.iter_chunks(key):
                sent += len(chunk)
                yield chunk
            if sent != size:  # the object changed under us: never emit a corrupt archive silently
                raise OSError(f"adapter object {key} changed size while streaming ({sent} != {size})")
            if size % BLOCK:
                yield b"\0" * (BLOCK - size % BLOCK)
        yield b"\0" * (2 * BLOCK)


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT)


def archive_root(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-") or "adapter"


class ModelService:
    def __init__(self, session: Session):
        self.session = session
        self.models = ModelRepository(session)

    def _released(self, caller: Caller) -> ReleaseRepository:
        """The caller's organization's released models."""
        return ReleaseRepository(self.session, caller.org_id)

    def list(self, caller: Caller) -> list[Model]:
        return [base_model_object(r) for r in self.models.base_models()] + [
            released_model_object(r) for r in self._released(caller).serving_list()
        ]

    def get(self, caller: Caller, model_id: str) -> Model:
        released = self._released(caller).serving(model_id)
        if released is not None:
            return released_model_object(released)
        base = self.models.base_model(model_id)
        if base is not None:
            return base_model_object(base)
        raise NotFound(f"The model {model_id!r} does not exist.", code="model_not_found", param="model")

    def delete(self, caller: Caller, model_id: str, store: ObjectStore) -> ReleasedModel:
        """Revoke the organization's released model ``model_id`` (:func:`core.releases.service.revoke_model`, audited
        with the caller as actor); committed, then unloaded from the inference backend and its
        stored objects deleted (:func:`core.releases.service.delete_model_files`)."""
        if self._released(caller).serving(model_id) is None:
            if self.models.base_model(model_id) is not None:
                raise PermissionDenied(
                    f"{model_id!r} is a base model; only your organization's fine-tuned models can be deleted.",
                    code="model_not_deletable",
                    param="model",
                )
            raise NotFound(
                f"No fine-tuned model {model_id!r} in this organization.", code="model_not_found", param="model"
            )
        revoked = releases.revoke_model(
            self.session, model_id, actor=caller.actor, reason="deleted by its organization (DELETE /v1/models)"
        )
        self.session.commit()
        inference.adapter_revoked(model_id)
        releases.delete_model_files(self.session, revoked, store)
        return revoked

    def adapter(self, caller: Caller, model_id: str, store: ObjectStore) -> AdapterArchive:
        """The archive of a released, non-revoked model of the caller's organization, whose
        files are in ``store``.

        The download is recorded in the audit log (committed before the first byte)."""
        model = self._released(caller).serving(model_id)
        if model is None:
            raise NotFound(
                f"No released fine-tuned model {model_id!r} in this organization.",
                code="model_not_found",
                param="model",
            )
        prefix = model.storage_prefix.rstrip("/") + "/"
        root = archive_root(model.id)
        members = [(key, f"{root}/{key[len(prefix) :]}", store.size(key)) for key in store.list(prefix)]
        if not members:
            raise NotFound(
                f"The adapter files of {model_id!r} are missing from storage; contact your operator.",
                code="adapter_not_found",
                param="model",
            )
        audit.record(
            self.session,
            actor=caller.actor,
            action="model.adapter_download",
            target=model.id,
            details={"org_id": caller.org_id, "job_id": model.job_id, "sha256": model.sha256, "files": len(members)},
        )
        self.session.commit()
        return AdapterArchive(model=model, filename=f"{root}.tar", members=members)
