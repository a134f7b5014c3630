"""A create request to a new ``Job`` row: the checks that refuse it and the values it is
resolved to (the base model's registry id, ``"auto"`` hyperparameters, the safety config
the organization allows, a seed).

Contracts: :func:`build_job` queries but writes nothing (the caller adds the row, under
the organization's lock); it raises 404 ``model_not_found`` / ``file_not_found`` and 400s
naming the offending parameter (``invalid_model`` for an ``ft:`` model training cannot
continue from (:func:`resolve_model`), ``unsupported_method``, ``invalid_value``,
``invalid_training_file`` / ``invalid_validation_file`` for a file in a format the method
cannot train (``core.preference.format_problem``),
``unsupported_integration`` for W&B on a deployment without its key, ``invalid_file_purpose``, ``invalid_<param>``,
``file_not_ready``, ``insufficient_worker_memory``, ``job_too_large``).
"""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from api.deps import Caller
from api.files.repository import FileRepository
from api.jobs.safety_policy import resolve_safety
from api.jobs.schemas import HyperparametersIn, JobCreate
from api.models.repository import ModelRepository
from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from core.jobs.config import Hyperparameters
from core.jobs.memory_plan import (
    GIB,
    ModelShape,
    example_tokens,
    micro_batch_tokens_that_fit,
    training_memory,
    worker_layout,
)
from core.jobs.vocab import JobStatus, ReferenceMode
from core.models import BaseModelEntry, File, Job, ReleasedModel, now
from core.orgs.repository import OrgRepository
from core.preference import METHOD_FORMATS, format_problem
from core.quoting import quoted
from core.releases.repository import ReleaseRepository
from core.settings import Settings
from core.vocab import FileStatus


def build_job(
    session: Session, settings: Settings, caller: Caller, body: JobCreate, idempotency_key: str | None
) -> Job:
    """The job ``body`` asks for, checked and resolved; not added to the session."""
    entry, parent = resolve_model(session, caller, body.model)
    training = usable_file(session, caller, body.training_file, "training_file")
    validation = usable_file(session, caller, body.validation_file, "validation_file") if body.validation_file else None

    method = body.method.type if body.method is not None else "supervised"
    if method not in METHOD_FORMATS:
        raise InvalidRequest(
            f"The {quoted(method)} method is not supported; use 'supervised' or 'dpo'.",
            code="unsupported_method",
            param="method.type",
        )
    for param, row in (("training_file", training), ("validation_file", validation)):
        problem = format_problem(method, row.format) if row is not None else None
        if row is not None and problem is not None:
            raise InvalidRequest(f"File {row.id}: {problem}", code=f"invalid_{param}", param=param)
    method_hp = method_hyperparameters(body)
    if method_hp is not None and body.hyperparameters is not None:
        raise InvalidRequest(
            f"Give hyperparameters either at the top level or in method.{method}, not both.",
            code="invalid_value",
            param="hyperparameters",
        )
    if body.integrations and settings.wandb_mode == "online" and not settings.wandb_api_key:
        raise InvalidRequest(
            "The W&B integration is not configured on this deployment.",
            code="unsupported_integration",
            param="integrations",
        )
    requested = (method_hp or body.hyperparameters or HyperparametersIn()).model_dump()
    if method == "dpo":
        requested.setdefault("beta", "auto")
    resolved = Hyperparameters.resolve(**requested, n_examples=training.n_examples)
    check_compute(settings, training, resolved)
    hp = resolved.model_dump(exclude_none=True)
    org = OrgRepository(session).get(caller.org_id)
    safety = resolve_safety(body.safety, settings, caller, org.allowed_modes if org else None)
    if method == "dpo":  # DPO's own term needs the reference's log-probs of whole answers: no top-k cache
        safety = safety.model_copy(update={"reference": ReferenceMode.EXACT})
    exact = method == "dpo" or (safety.regularized and safety.reference == ReferenceMode.EXACT)
    check_worker_memory(settings, entry, method, exact_reference=exact)
    return Job(
        id=new_id("ftjob"),
        org_id=caller.org_id,
        created_by=caller.key_id,
        model=entry.id,
        parent_model=parent.id if parent is not None else None,
        training_file_id=training.id,
        validation_file_id=body.validation_file or None,
        status=JobStatus.VALIDATING_FILES,
        hyperparameters=hp,
        method={"type": method, method: {"hyperparameters": hp}},
        safety=safety.model_dump(),
        suffix=body.suffix or None,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        metadata_=body.metadata,
        integrations=[integration.model_dump() for integration in body.integrations or []] or None,
        result_files=[],
        idempotency_key=idempotency_key,
        created_at=now(),
    )


def resolve_model(session: Session, caller: Caller, model: str) -> tuple[BaseModelEntry, ReleasedModel | None]:
    """``(base model, released model)`` of a job's ``model``: a base model of the registry
    (404 ``model_not_found`` otherwise), or ``ft:…``, a released model of the caller's
    organization that is not revoked and whose base is still in the registry, which training
    continues from (400 ``invalid_model`` otherwise, the same answer for an unknown, a revoked
    and another organization's model)."""
    if not model.startswith("ft:"):
        entry = ModelRepository(session).base_model(model)
        if entry is None:
            raise NotFound(
                f"The model {quoted(model)} does not exist or is not available for fine-tuning. "
                "GET /v1/models lists the base models.",
                code="model_not_found",
                param="model",
            )
        return entry, None
    parent = ReleaseRepository(session, caller.org_id).serving(model)
    entry = ModelRepository(session).base_model(parent.base_model) if parent is not None else None
    if parent is None or entry is None:
        raise InvalidRequest(
            f"The model {quoted(model)} cannot be fine-tuned further: it is not a released, "
            "unrevoked model of your organization. GET /v1/models lists the models you can use.",
            code="invalid_model",
            param="model",
        )
    return entry, parent


def method_hyperparameters(body: JobCreate) -> HyperparametersIn | None:
    """The hyperparameters given under ``method.<type>``, if any."""
    if body.method is None:
        return None
    given = body.method.dpo if body.method.type == "dpo" else body.method.supervised
    return given.hyperparameters if given is not None else None


def check_compute(settings: Settings, training: File, hp: Hyperparameters) -> None:
    """Refuse (400 ``job_too_large``, param ``training_file``) a job whose training would take
    more than ``GUARDTUNE_MAX_JOB_STEPS`` optimizer steps (``ceil(examples / batch_size) ×
    n_epochs``) or ``GUARDTUNE_MAX_JOB_TRAINING_TOKENS`` trained tokens (the file's tokens ×
    ``n_epochs``); 0 leaves that bound off."""
    steps = -(-training.n_examples // hp.batch_size) * hp.n_epochs
    tokens = training.n_tokens * hp.n_epochs
    for amount, limit, what, setting in (
        (steps, settings.max_job_steps, "training steps", "GUARDTUNE_MAX_JOB_STEPS"),
        (tokens, settings.max_job_training_tokens, "trained tokens", "GUARDTUNE_MAX_JOB_TRAINING_TOKENS"),
    ):
        if limit and amount > limit:
            raise InvalidRequest(
                f"The job is too large for this deployment: {training.n_examples} examples "
                f"({training.n_tokens} tokens) at batch size {hp.batch_size} for {hp.n_epochs} epochs "
                f"make {amount} {what}, above the limit of {limit} ({setting}). "
                "Use a smaller file or fewer epochs.",
                code="job_too_large",
                param="training_file",
            )


def check_worker_memory(settings: Settings, entry: BaseModelEntry, method: str, *, exact_reference: bool) -> None:
    """Refuse (400 ``insufficient_worker_memory``, param ``model``) a job whose base model
    cannot train on the workers: by ``core.jobs.memory_plan``'s estimate, a step on one example
    of ``method`` at the token limit (a DPO pair: both its sequences) does not fit
    ``GUARDTUNE_WORKER_GPU_MEMORY_GB``. Nothing is checked without that setting or for a model
    onboarded before its shape was recorded."""
    shape = (entry.baseline or {}).get("shape")
    if settings.worker_gpu_memory_gb is None or shape is None:
        return
    model = ModelShape(**shape)
    longest = min(entry.context_length or settings.max_example_tokens, settings.max_example_tokens)
    layout = worker_layout(settings, exact_reference=exact_reference)
    budget = settings.worker_gpu_memory_gb
    tokens = example_tokens(longest, method)
    if micro_batch_tokens_that_fit(model, layout, int(budget * GIB), tokens) is not None:
        return
    need = training_memory(model, layout, tokens).total / GIB
    one = "one preference pair of two sequences" if method == "dpo" else "one example"
    raise InvalidRequest(
        f"The model {entry.id!r} cannot be fine-tuned on this deployment's workers: training it on {one} of "
        f"{longest} tokens needs an estimated {need:.1f} GB, above the {budget:g} GB a worker "
        "has (GUARDTUNE_WORKER_GPU_MEMORY_GB). Choose a smaller base model.",
        code="insufficient_worker_memory",
        param="model",
    )


def usable_file(session: Session, caller: Caller, file_id: str, param: str) -> File:
    """The organization's processed ``fine-tune`` file ``file_id``, or the error naming ``param``."""
    row = FileRepository(session, caller.org_id).get(file_id)
    if row is None:
        raise NotFound(f"No such file: {quoted(file_id)}.", code="file_not_found", param=param)
    if row.purpose != "fine-tune":
        raise InvalidRequest(
            f"File {file_id} has purpose {row.purpose!r}; fine-tuning needs purpose 'fine-tune'.",
            code="invalid_file_purpose",
            param=param,
        )
    if row.status == FileStatus.ERROR:
        details = (row.status_details or "").strip()
        raise InvalidRequest(
            f"File {file_id} failed validation and cannot be used for fine-tuning. {details}".strip(),
            code=f"invalid_{param}",
            param=param,
        )
    if row.status != FileStatus.PROCESSED:
        raise InvalidRequest(
            f"File {file_id} is still being processed; retry when its status is 'processed'.",
            code="file_not_ready",
            param=param,
        )
    return row
