"""One vocabulary for a fine-tuning job: its statuses, stages, error codes, typed safety and
hyperparameter configuration, and the pipeline as one ordered table.

* :mod:`core.jobs.vocab` — ``JobStatus``, ``JobStage``, ``ErrorCode``; the terminal / active sets.
* :mod:`core.jobs.pipeline` — ``Stage`` and ``PIPELINE``: each stage's task, queue and the
  ``stage`` a running job shows, in order.
* :mod:`core.jobs.config` — ``SafetyConfig`` and ``Hyperparameters`` with their defaults
  (defined here once; the API's wire schemas, the worker, ops and ``safety/`` read them).
* :mod:`core.jobs.transitions` — the one function that moves a job between statuses.

This package and its first three modules import nothing but pydantic, so ``safety/`` (which
knows no database) may read the defaults; :mod:`core.jobs.transitions` needs the database
and is imported explicitly, never from here.
"""

from core.jobs.config import Hyperparameters, KlWeightBounds, SafetyConfig
from core.jobs.pipeline import PIPELINE, Stage
from core.jobs.vocab import ACTIVE, LIVE, TERMINAL, ErrorCode, JobStage, JobStatus

__all__ = [
    "ACTIVE",
    "LIVE",
    "PIPELINE",
    "TERMINAL",
    "ErrorCode",
    "Hyperparameters",
    "JobStage",
    "JobStatus",
    "KlWeightBounds",
    "SafetyConfig",
    "Stage",
]
