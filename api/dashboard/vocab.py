"""The dashboard's ``vocab.js``: :mod:`core.jobs`'s words as an ES module, so the page never
spells a status, stage or error code of its own.

:data:`VOCAB` is built once, at import, from the enums; :data:`VOCAB_JS` renders it as one
``export const NAME = Object.freeze(<JSON>);`` line per name (``TERMINAL``:
``new Set(<JSON array>)``), which ``routes.py`` serves as ``/dashboard/static/vocab.js``.

* ``STATUS`` / ``STAGE`` / ``ERROR`` map each enum member's name to its wire value
  (``STATUS.SUCCEEDED === "succeeded"``).
* ``TERMINAL`` — the final statuses; ``STAGES`` — a running job's ``stage`` values in
  pipeline order (:data:`core.jobs.PIPELINE`).
* ``FILE_STATUS`` — an uploaded file's ``status`` (:class:`core.vocab.FileStatus`).
* ``SAFETY`` — the new-job form's safety choices: each enum field of a job's ``safety`` and
  its values, the default first where the API has one of its own (``mode``, ``estimator``);
  ``RANGES`` — the ``[low, high]`` a request's hyperparameters may ask (:mod:`core.jobs.config`).

Display labels are the page's concern and stay in JS, keyed by these values.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from core.jobs import PIPELINE, TERMINAL, ErrorCode, JobStage, JobStatus
from core.jobs import config as job_config
from core.jobs.vocab import Estimator, ReferenceMode, RiskWeighting, SafetyMode
from core.vocab import FileStatus


def _choices(enum: type[StrEnum], default: StrEnum | None = None) -> list[str]:
    """The enum's values, ``default`` first."""
    return sorted((member.value for member in enum), key=lambda value: value != default)


VOCAB: dict[str, object] = {
    "STATUS": {member.name: member.value for member in JobStatus},
    "STAGE": {member.name: member.value for member in JobStage},
    "ERROR": {member.name: member.value for member in ErrorCode},
    "TERMINAL": [status.value for status in TERMINAL],
    "STAGES": [spec.job_stage.value for spec in PIPELINE if spec.job_stage is not None],
    "FILE_STATUS": {member.name: member.value for member in FileStatus},
    "SAFETY": {
        "mode": _choices(SafetyMode, job_config.DEFAULT_MODE),
        "estimator": _choices(Estimator, job_config.DEFAULT_ESTIMATOR),
        "risk_weighting": _choices(RiskWeighting),
        "reference": _choices(ReferenceMode),
    },
    "RANGES": {
        "n_epochs": job_config.N_EPOCHS_RANGE,
        "batch_size": job_config.BATCH_SIZE_RANGE,
        "learning_rate_multiplier": job_config.LR_MULTIPLIER_RANGE,
        "beta": job_config.DPO_BETA_RANGE,
    },
}
_SETS = {"TERMINAL"}


def _line(name: str, value: object) -> str:
    literal = json.dumps(value)
    return f"export const {name} = {'new Set' if name in _SETS else 'Object.freeze'}({literal});"


VOCAB_JS = "\n".join(
    [
        "/* Generated from core.jobs by api/dashboard/vocab.py: edit the Python enums, not this. */",
        *(_line(name, value) for name, value in VOCAB.items()),
        "",
    ]
).encode()
VOCAB_ETAG = f'"{hashlib.sha256(VOCAB_JS).hexdigest()[:32]}"'
