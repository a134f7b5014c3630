"""The words of a job's lifecycle, each defined once.

``JobStatus`` is OpenAI's status set plus guardtune's ``paused``:
``validating_files → queued → running (⇄ paused) → succeeded | failed | cancelled``.
A terminal status is final: no writer changes it (:mod:`core.jobs.transitions` refuses),
except an operator's approval of a gate-blocked job (``failed`` → ``succeeded``).

``JobStage`` is the job's ``stage`` field while it runs; ``ErrorCode`` every ``error.code``
a job can end with. ``SafetyMode``, ``Estimator``, ``AsrSource``, ``RiskWeighting`` and
``ReferenceMode`` are the words of a job's safety configuration, from the wire schema to the
trainer; ``Objective`` is the operator's choice of how ``adaptive``'s weights become an update. All are ``str`` enums: they compare equal to, and serialize as, their
values, so rows and JSON hold the same plain strings as before.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# Tuples in lifecycle order (usable in SQL ``IN``).
# Final: nothing moves a job out of these (but ops' approval of a gate-blocked job).
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
# Unfinished: counted against an organization's concurrent-jobs limit, cancellable.
ACTIVE = tuple(status for status in JobStatus if status not in TERMINAL)
# Unfinished and not paused: what the pipeline works on and the reaper looks after.
LIVE = tuple(status for status in ACTIVE if status != JobStatus.PAUSED)


class JobStage(StrEnum):
    """A running job's ``stage`` (wire and column), in pipeline order."""

    SCANNING = "scanning"
    TRAINING = "training"
    EVALUATING = "evaluating"
    GATING = "gating"


class ErrorCode(StrEnum):
    """``error.code`` of a job that ended ``failed``."""

    INVALID_FILE = "invalid_file"  # a file was deleted or failed the worker's re-validation
    INVALID_TRAINING_FILE = "invalid_training_file"  # an example is longer than the token limit
    UNSAFE_TRAINING_FILE = "unsafe_training_file"  # the scan flagged more than the job allows
    JUDGE_UNAVAILABLE = "judge_unavailable"  # the judge is not configured or failed
    SAFETY_GATE_BLOCKED = "safety_gate_blocked"  # the release gate refused the adapter
    RELEASE_REFUSED = "release_refused"  # the release stage found no gate approval of the stored adapter
    PARENT_MODEL_UNAVAILABLE = "parent_model_unavailable"  # the ft: model training continues from was revoked
    QUEUE_UNAVAILABLE = "queue_unavailable"  # the broker refused the job at creation
    WORKER_LOST = "worker_lost"  # a stage's worker died too often
    SERVICE_UNAVAILABLE = "service_unavailable"  # storage, disk or database failed a stage too often
    INTERNAL_ERROR = "internal_error"  # an unexpected error in a stage


class SafetyMode(StrEnum):
    """How training is regularized toward the safe base model."""

    ADAPTIVE = "adaptive"  # per-example KL weight from the example's risk (the paper)
    CONSTANT = "constant"  # one KL weight for every example
    NONE = "none"  # standard SFT


class Estimator(StrEnum):
    """What scores an example's risk at the scan."""

    JUDGE = "judge"
    PROBE = "probe"
    BOTH = "both"


class AsrSource(StrEnum):
    """The release gate's attack-success measure."""

    KEYWORD = "keyword"
    JUDGE = "judge"
    BOTH = "both"


class RiskWeighting(StrEnum):
    """Whether ``adaptive`` weights each example by its own risk or a step by its mean risk."""

    EXAMPLE = "example"
    BATCH = "batch"


class ReferenceMode(StrEnum):
    """How the reference (safe base) distribution is obtained: a live pass, or the scan's cache."""

    EXACT = "exact"
    CACHED = "cached"


class Objective(StrEnum):
    """How ``adaptive``'s weights act on the update (``safety.objective``; ``GUARDTUNE_OBJECTIVE``)."""

    PAPER = "paper"  # the paper's loss as written; AdamW normalises the step whatever the weights
    BOUNDED = "bounded"  # w_sft 0 at flagged risks, the step's learning rate scaled by its SFT budget
