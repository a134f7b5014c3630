"""What a job request carries besides its body: the ``metadata[KEY]=VALUE`` list filter and
the create body's fingerprint (the idempotency check's SHA-256).

Contracts: :func:`metadata_filter` refuses, with a 400 naming the parameter, anything but
well-formed ``metadata[...]`` parameters within the metadata limits; :func:`fingerprint` is
stable across key order and omits fields the client did not send.
"""

from __future__ import annotations

import hashlib
import json
import re

from api.jobs.schemas import JobCreate
from core.errors import InvalidRequest

METADATA_PARAM = re.compile(r"^metadata\[([^\[\]]+)\]$")
MAX_METADATA_KEYS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


def metadata_filter(query: list[tuple[str, str]]) -> dict[str, str] | None:
    """``metadata[key]=value`` query parameters (as the SDK sends ``metadata={...}``) as a
    dict; several keys are AND-ed. The literal ``metadata=null`` (OpenAI's) selects jobs
    without metadata and returns ``None``. Any other ``metadata…`` parameter, a key given
    twice, or a key or value over the metadata limits is refused (400 naming the parameter)."""
    wanted: dict[str, str] = {}
    names = [name for name, _ in query if name.startswith("metadata")]
    if names == ["metadata"] and dict(query)["metadata"] == "null":
        return None
    for name, value in query:
        if not name.startswith("metadata"):
            continue
        match = METADATA_PARAM.match(name)
        if match is None:
            raise InvalidRequest(
                f"Malformed metadata filter {name!r}: use metadata[KEY]=VALUE (one parameter per key).",
                code="invalid_metadata_filter",
                param=name,
            )
        key = match.group(1)
        if key in wanted:
            raise InvalidRequest(
                f"The metadata filter {name!r} is given twice.", code="invalid_metadata_filter", param=name
            )
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"Metadata keys have at most {MAX_METADATA_KEY} characters and values at most "
                f"{MAX_METADATA_VALUE}; {name!r} is longer.",
                code="invalid_metadata_filter",
                param=name,
            )
        wanted[key] = value
    if len(wanted) > MAX_METADATA_KEYS:
        raise InvalidRequest(
            f"At most {MAX_METADATA_KEYS} metadata filters (got {len(wanted)}).",
            code="invalid_metadata_filter",
            param="metadata",
        )
    return wanted


def fingerprint(body: JobCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
