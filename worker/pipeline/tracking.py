"""Experiment tracking: a job's step metrics and its scan, evaluation and gate summaries,
logged to the job's W&B integration (OpenAI's ``integrations: [{"type": "wandb", ...}]``,
with the operator's ``GUARDTUNE_WANDB_API_KEY``) and to the operator's MLflow tracking server
(``GUARDTUNE_MLFLOW_TRACKING_URI``: every job).

Callers are explicit, nothing hooks into anything: the training stage opens the job's
trackers and its ``Progress.on_step`` calls :meth:`JobTracking.log_step` with each step's
``metrics`` event data; the gate stage logs the summaries with :meth:`JobTracking.log_summary`
and closes the run. Both tracker kinds find the job's run again from its id (the W&B run id
is the job id; the MLflow run carries the tag ``guardtune.job_id``), so a job's stages, on
whichever workers, and a resumed training stage add to one run.

Contract: a tracker never fails a job. Opening a tracker, and every call on one, is guarded:
an exception is logged (``tracker_failed``: the tracker, the call, the error) and that tracker
is dropped for the rest of the stage while the others carry on.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from core.logging import get_logger
from core.models import Job
from core.settings import Settings, get_settings

log = get_logger(__name__)

JOB_TAG = "guardtune.job_id"  # the MLflow tag that names a run's job
UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow refuses in a metric's name


class Tracker(Protocol):
    """One experiment-tracking run of a job."""

    name: str

    def log_step(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_summary(self, summary: dict[str, Any]) -> None: ...

    def close(self, *, finished: bool) -> None: ...


def numeric_leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, value)`` of every number in a nested dict (booleans and ``None`` left out)."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from numeric_leaves(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield name, float(value)


def job_params(job: Job) -> dict[str, Any]:
    """What a tracker records of the job's configuration."""
    return {
        "job_id": job.id,
        "model": job.parent_model or job.model,
        "base_model": job.model,
        "method": (job.method or {}).get("type", "supervised"),
        "hyperparameters": job.hyperparameters or {},
        "safety": job.safety or {},
        "seed": job.seed,
    }


class WandbTracker:
    """The job's W&B run (id: the job id), online with the operator's key (to the server at
    ``GUARDTUNE_WANDB_BASE_URL`` where set: a self-hosted W&B) or offline under
    ``GUARDTUNE_HOME/wandb``."""

    name = "wandb"

    def __init__(self, job: Job, integration: dict[str, Any], settings: Settings):
        import wandb

        directory = settings.home_dir / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        server = {"base_url": settings.wandb_base_url} if settings.wandb_base_url else {}
        self.run = wandb.init(
            id=job.id,
            resume="allow",
            reinit="create_new",
            project=integration["project"],
            entity=integration.get("entity"),
            name=integration.get("name") or job.id,
            tags=integration.get("tags") or None,
            config=job_params(job),
            dir=str(directory),
            settings=wandb.Settings(
                mode=settings.wandb_mode,
                api_key=settings.wandb_api_key,
                **server,
                silent=True,
                console="off",
                save_code=False,
                disable_git=True,
                x_disable_stats=True,
                x_save_requirements=False,
            ),
        )

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(summary)

    def close(self, *, finished: bool) -> None:
        self.run.finish()


class MlflowTracker:
    """The job's MLflow run (tag :data:`JOB_TAG`) in ``GUARDTUNE_MLFLOW_EXPERIMENT``; its
    parameters at creation, step metrics at their step, summaries as ``<part>.<key>`` metrics
    and as JSON artifacts (``<part>_summary.json``)."""

    name = "mlflow"

    def __init__(self, job: Job, settings: Settings):
        from mlflow.tracking import MlflowClient

        assert settings.mlflow_tracking_uri is not None
        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        experiment = self.client.get_experiment_by_name(settings.mlflow_experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(settings.mlflow_experiment)
        )
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job.id}'", max_results=1)
        if runs:
            self.run_id = runs[0].info.run_id
            return
        self.run_id = self.client.create_run(experiment_id, run_name=job.id, tags={JOB_TAG: job.id}).info.run_id
        params = {
            key: json.dumps(value) if isinstance(value, dict) else value for key, value in job_params(job).items()
        }
        for key, value in params.items():
            self.client.log_param(self.run_id, key, value)

    def _log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(UNSAFE_KEY_CHARS.sub("_", key), value, stamp, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self._log_metrics(metrics, step)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self._log_metrics(dict(numeric_leaves(summary)), 0)
        for part, value in summary.items():
            self.client.log_dict(self.run_id, value, f"{part}_summary.json")

    def close(self, *, finished: bool) -> None:
        if finished:
            self.client.set_terminated(self.run_id, "FINISHED")


class JobTracking:
    """The job's trackers for one stage, every call guarded (see the module docstring)."""

    def __init__(self, job_id: str, trackers: list[Tracker]):
        self.job_id, self.trackers = job_id, trackers

    def _each(self, call: str, action: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                action(tracker)
            except Exception as exc:
                log.warning("tracker_failed", job_id=self.job_id, tracker=tracker.name, call=call, error=repr(exc))
                self.trackers.remove(tracker)

    def log_step(self, data: dict[str, Any]) -> None:
        """A ``metrics`` event's data (``worker.pipeline.train.metrics_data``): its numbers, at its step."""
        metrics = dict(numeric_leaves({k: v for k, v in data.items() if k != "step"}))
        self._each("log_step", lambda tracker: tracker.log_step(int(data["step"]), metrics))

    def log_summary(self, summary: dict[str, Any]) -> None:
        """Summaries by part (``scan``, ``evaluation``, ``gate``), each a JSON-able dict (a
        part that is ``None`` is left out)."""
        parts = {part: value for part, value in summary.items() if value is not None}
        self._each("log_summary", lambda tracker: tracker.log_summary(parts))

    def close(self, *, finished: bool = False) -> None:
        """End this stage's use of the runs; ``finished``: the job's last report was logged."""
        self._each("close", lambda tracker: tracker.close(finished=finished))


def open_tracking(job: Job) -> JobTracking:
    """The trackers ``job`` logs to: its W&B integration, if any, and the operator's MLflow
    server, if configured; one that fails to open is logged and left out."""
    settings = get_settings()
    openers: list[tuple[str, Callable[[], Tracker]]] = [
        ("wandb", functools.partial(WandbTracker, job, integration["wandb"], settings))
        for integration in job.integrations or []
        if integration.get("type") == "wandb"
    ]
    if settings.mlflow_tracking_uri:
        openers.append(("mlflow", lambda: MlflowTracker(job, settings)))
    trackers: list[Tracker] = []
    for name, opener in openers:
        try:
            trackers.append(opener())
        except Exception as exc:
            log.warning("tracker_failed", job_id=job.id, tracker=name, call="open", error=repr(exc))
    return JobTracking(job.id, trackers)
