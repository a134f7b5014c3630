"""Clients of the inference backends the API forwards chat completions to (no torch here).

* ``embedded`` — ``guardtune infer`` (:mod:`worker.inference_server`): the forwarded body
  carries a ``guardtune`` target naming the base model's source and the adapter's storage
  prefix and digest; the process fetches and caches adapters itself.
* ``vllm`` — vLLM's OpenAI-compatible server started with ``--enable-lora`` and
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``. A released adapter is copied into
  ``GUARDTUNE_VLLM_ADAPTER_DIR/<sha256>`` (a volume vLLM mounts at the same path; the
  digest is checked) and
  registered with ``POST /v1/load_lora_adapter {"lora_name": <ft: id>, "lora_path": …}``;
  revocation calls ``POST /v1/unload_lora_adapter {"lora_name": …}``. Requests name the
  ``ft:`` id as ``model`` (base models: vLLM's ``--served-model-name``). When vLLM answers
  404 for an adapter it lost (a restart), the adapter is loaded again and the request
  retried once.

:func:`adapter_released` / :func:`adapter_revoked` are the hooks release and revocation
call after their commit; they never raise (the lazy load above repairs a missed hook).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.chat import AdapterRef, InferenceTarget
from core.errors import GuardtuneError
from core.logging import get_logger
from core.releases.digests import dir_sha256
from core.settings import Settings, get_settings
from core.storage import ObjectStore, download_dir, get_store

log = get_logger(__name__)
CHAT_PATH = "/v1/chat/completions"


class InferenceUnavailable(GuardtuneError):
    status_code = 503
    type = "server_error"


@dataclass(frozen=True)
class ServingTarget:
    """What a request may be served by: a registry base model, optionally with the
    caller's released adapter."""

    model: str  # the id the client asked for
    base_id: str
    base_source: str
    adapter: AdapterRef | None = None


def auth_headers(settings: Settings) -> dict[str, str]:
    """The headers every request to the inference backend carries: ``GUARDTUNE_INFERENCE_API_KEY``
    as a bearer token (vLLM started with ``--api-key`` refuses requests without it)."""
    return {"Authorization": f"Bearer {settings.inference_api_key}"} if settings.inference_api_key else {}


class EmbeddedBackend:
    def __init__(self, settings: Settings):
        self.url = settings.inference
        self.headers = auth_headers(settings)

    def body(self, target: ServingTarget, body: dict[str, Any]) -> dict[str, Any]:
        extension = InferenceTarget(base=target.base_source, adapter=target.adapter)
        return {**body, "guardtune": extension.model_dump()}

    async def recover(self, target: ServingTarget, response: httpx.Response) -> bool:
        return False


class VllmBackend:
    def __init__(self, settings: Settings, store: ObjectStore | None = None):
        self.url = settings.inference
        self.headers = auth_headers(settings)
        self.adapter_dir = settings.vllm_adapters
        self.timeout_s = settings.inference_timeout_s
        self._store = store

    @property
    def store(self) -> ObjectStore:
        return self._store or get_store()

    def body(self, target: ServingTarget, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": target.adapter.id if target.adapter else target.base_id}

    def place(self, adapter: AdapterRef) -> Path:
        """The adapter's files in ``adapter_dir/<sha256>`` (see :func:`fetch_adapter`)."""
        return fetch_adapter(self.store, adapter, self.adapter_dir)

    def load(self, adapter: AdapterRef) -> None:
        """Place the adapter and register it with vLLM (already loaded counts as done)."""
        try:
            path = self.place(adapter)
        except (OSError, ValueError) as exc:
            raise InferenceUnavailable(
                f"cannot place the adapter of {adapter.id}: {exc}", code="adapter_unavailable"
            ) from None
        response = httpx.post(
            f"{self.url}/v1/load_lora_adapter",
            json={"lora_name": adapter.id, "lora_path": str(path)},
            headers=self.headers,
            timeout=self.timeout_s,
        )
        if response.status_code != 200 and "already" not in response.text:
            raise InferenceUnavailable(
                f"vLLM refused to load {adapter.id}: {response.status_code} {response.text[:300]}",
                code="adapter_load_failed",
            )

    def unload(self, model_id: str) -> None:
        """Unregister an adapter (one vLLM no longer has counts as done)."""
        response = httpx.post(
            f"{self.url}/v1/unload_lora_adapter",
            json={"lora_name": model_id},
            headers=self.headers,
            timeout=self.timeout_s,
        )
        gone = response.status_code == 404 or "cannot be found" in response.text
        if response.status_code != 200 and not gone:
            raise InferenceUnavailable(
                f"vLLM refused to unload {model_id}: {response.status_code} {response.text[:300]}",
                code="adapter_unload_failed",
            )

    async def recover(self, target: ServingTarget, response: httpx.Response) -> bool:
        """After a 404 for an adapter: load it again; True when the request should be retried."""
        if response.status_code != 404 or target.adapter is None:
            return False
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.load, target.adapter)
        return True


Backend = EmbeddedBackend | VllmBackend

_fetch_lock = threading.Lock()


def fetch_adapter(store: ObjectStore, adapter: AdapterRef, root: Path) -> Path:
    """``root/<sha256>/`` holding the adapter's files: downloaded once into a temporary
    sibling, checked against the recorded digest, then renamed into place (so a directory
    that exists is complete and right). Raises ``ValueError`` on a digest mismatch."""
    dest = root / adapter.sha256
    with _fetch_lock:
        if dest.is_dir():
            return dest
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
        try:
            download_dir(store, adapter.storage_prefix, tmp)
            if dir_sha256(tmp) != adapter.sha256:
                raise ValueError(f"the stored adapter of {adapter.id} does not match its recorded sha256")
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def embedded_adapter_root(settings: Settings) -> Path:
    """Where ``guardtune infer`` keeps the adapters it fetched (one folder per digest)."""
    return settings.home_dir / "infer-adapters"


def remove_placed_adapter(sha256: str, settings: Settings | None = None) -> None:
    """Delete the copies of the adapter ``sha256`` placed on this host for vLLM and for the
    embedded ``guardtune infer`` (after its model was revoked; absent copies are fine)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not an adapter digest: {sha256!r}")
    settings = settings or get_settings()
    for root in (settings.vllm_adapters, embedded_adapter_root(settings)):
        with _fetch_lock:
            shutil.rmtree(root / sha256, ignore_errors=True)


def get_backend(settings: Settings | None = None) -> Backend:
    settings = settings or get_settings()
    return VllmBackend(settings) if settings.inference_backend == "vllm" else EmbeddedBackend(settings)


def adapter_ref(released: Any) -> AdapterRef:
    """The :class:`AdapterRef` of a :class:`core.models.ReleasedModel` row."""
    return AdapterRef(id=released.id, storage_prefix=released.storage_prefix, sha256=released.sha256)


def adapter_released(adapter: AdapterRef) -> None:
    """Release hook: with vLLM, place and register the adapter now (logged, never raised)."""
    backend = get_backend()
    if isinstance(backend, VllmBackend):
        try:
            backend.load(adapter)
        except Exception as exc:  # the first request loads it again
            log.warning("vllm_adapter_load_failed", model=adapter.id, error=str(exc))


def adapter_revoked(model_id: str) -> None:
    """Revocation hook: with vLLM, unload the adapter (the API already answers 404)."""
    backend = get_backend()
    if isinstance(backend, VllmBackend):
        try:
            backend.unload(model_id)
        except Exception as exc:
            log.warning("vllm_adapter_unload_failed", model=model_id, error=str(exc))
