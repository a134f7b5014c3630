"""Where a job's adapter is stored, the id it is released under, and its digest.

Adapter digest (:func:`adapter_sha256`): the adapter's files are listed by their path
*relative to the adapter prefix* (``adapter_config.json``, ``adapter_model.safetensors``)
in sorted order, and the digest is ``sha256(concat(name + "\\n" + sha256(file) + "\\n"))``.
Relative names keep the digest a property of the adapter itself, so a downloaded copy
checks with :func:`dir_sha256` against the stored value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import NotFound
from core.storage import ObjectStore, org_key

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def job_dir(org_id: str, job_id: str) -> str:
    """The prefix of every stored object of a job (scan, reference cache, checkpoints,
    evaluation outputs, adapter), with its trailing slash."""
    return org_key(org_id, "jobs", job_id) + "/"


def adapter_prefix(org_id: str, job_id: str) -> str:
    """Where the pipeline stores a job's final adapter."""
    return org_key(org_id, "jobs", job_id, "adapter")


def model_id(base_model: str, org_id: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<org>:<suffix>:<job-id>`` (an empty suffix stays empty, as OpenAI's)."""
    parts = [base_model, org_id, suffix or "", job_id]
    return "ft:" + ":".join(p.replace(":", "-") for p in parts)


def combine_digests(entries: Iterable[tuple[str, str]]) -> str:
    """The adapter digest from ``(relative name, file sha256)`` pairs, in sorted name order."""
    digest = hashlib.sha256()
    for name, file_sha in sorted(entries):
        digest.update(f"{name}\n{file_sha}\n".encode())
    return digest.hexdigest()


def _sha256_chunks(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def adapter_sha256(store: ObjectStore, prefix: str) -> str:
    """Digest of every object under ``prefix`` (streamed; see the module docstring)."""
    base = prefix.rstrip("/") + "/"
    keys = [k for k in store.list(base) if k.startswith(base)]
    if not keys:
        raise NotFound(f"no adapter files under {prefix!r}", code="adapter_not_found")
    return combine_digests((k[len(base) :], _sha256_chunks(store.iter_chunks(k))) for k in keys)


def dir_sha256(directory: str | Path) -> str:
    """The same digest over the files of a local adapter directory."""
    root = Path(directory)
    files = [p for p in root.rglob("*") if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{root} holds no files")
    entries = []
    for path in files:
        with path.open("rb") as f:
            entries.append((path.relative_to(root).as_posix(), _sha256_chunks(iter(lambda: f.read(1 << 20), b""))))
    return combine_digests(entries)
