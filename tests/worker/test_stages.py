"""The pipeline's stage functions, run in this process on the embedded stack with a
tiny model: a job goes validate → scan → train → evaluate → gate → release."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.worker.conftest import create_job, demo_lines


def run_all(job_id: str) -> list[str]:
    from worker.tasks import run_stage

    ran, stage = [], "validate"
    while stage is not None:
        ran.append(stage)
        stage = run_stage(stage, job_id)
    return ran


def test_job_runs_every_stage_and_is_released(pipeline_env):
    from core.db import session_scope
    from core.models import AuditRecord, Checkpoint, Job, JobEvent, ReleasedModel, SafetyReport
    from core.storage import get_store

    with session_scope() as session:
        job_id = create_job(session, "org-a", demo_lines(16))
    assert run_all(job_id) == ["validate", "scan", "train", "evaluate", "gate", "release"]
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "succeeded"
        assert job.error is None
        assert job.stage is None
        assert job.fine_tuned_model == f"ft:tiny:org-a::{job_id}"
        assert job.trained_tokens
        assert job.trained_tokens > 0
        report = session.get(SafetyReport, job_id)
        assert report.scan["n"] == 16
        assert sum(report.scan["counts_by_score"].values()) == 16
        assert report.training["steps"] == 4
        assert report.training["mode"] == "adaptive"
        assert set(report.evaluation) >= {"base", "tuned"}
        assert report.evaluation["tuned"]["n"] == 4
        assert report.gate["released"] is True
        steps = [c.step for c in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))]
        assert sorted(steps) == [2, 4]
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)).all()
        metrics = [e.data for e in events if e.type == "metrics"]
        assert [m["step"] for m in metrics] == [1, 2, 3, 4]
        assert all({"train_loss", "kl", "kl_weight", "risk"} <= set(m) for m in metrics)
        # the random tiny probe's risks are saturated, 1 or 5 (which lines, depends on the recipe's
        # prompt sets): an unflagged line is trained at w_kl(1), the operator's floor 0.1, a flagged
        # one at w_kl(5) = 0.9, and each step's means say so
        from core.jobs.config import FLAG_THRESHOLD, KL_WEIGHT_MAX, KL_WEIGHT_MIN
        from worker.pipeline.resources import read_scan_risks

        risks, flagged = read_scan_risks(job)
        assert len(risks) == 16
        assert set(risks) <= {1.0, 5.0}
        assert flagged == [r >= FLAG_THRESHOLD for r in risks]
        assert sum(flagged) < 8
        assert report.scan["n_flagged"] == sum(flagged)
        for m in metrics:
            assert m["kl_weight_flagged"] in (None, pytest.approx(KL_WEIGHT_MAX))
            assert m["kl_weight_unflagged"] in (None, pytest.approx(KL_WEIGHT_MIN))
        steps_with_flagged = sum(m["kl_weight_flagged"] is not None for m in metrics)  # one epoch: each line once
        assert (steps_with_flagged > 0) == any(flagged)
        assert steps_with_flagged <= sum(flagged)
        assert (report.training["mean_kl_weight_flagged"] is None) == (not any(flagged))
        assert report.training["mean_kl_weight_unflagged"] == pytest.approx(KL_WEIGHT_MIN)
        assert report.training["kl_weight"] == {"min": KL_WEIGHT_MIN, "max": KL_WEIGHT_MAX}
        released = session.get(ReleasedModel, job.fine_tuned_model)
        assert get_store().list(released.storage_prefix + "/")
        actions = [a for a in session.scalars(select(AuditRecord.action).where(AuditRecord.target == job_id))]
        assert actions[:1] == ["job.stage"]
        assert "gate.decision" in actions
        assert "job.succeeded" in actions


def test_gate_blocks_when_asr_above_policy(pipeline_env, monkeypatch):
    from core.db import session_scope
    from core.models import File, Job, ReleasedModel, SafetyReport
    from core.storage import get_store

    monkeypatch.setenv("GUARDTUNE_GATE_MAX_ASR", "0.0")  # a random tiny model never refuses
    from tests.conftest import clear_caches

    clear_caches()
    with session_scope() as session:
        job_id = create_job(session, "org-b", demo_lines(8))
    assert run_all(job_id)[-1] == "gate"
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error["code"] == "safety_gate_blocked"
        assert "ASR" in job.error["message"]
        assert job.fine_tuned_model is None
        assert session.get(SafetyReport, job_id).gate["released"] is False
        assert session.scalar(select(ReleasedModel).where(ReleasedModel.job_id == job_id)) is None
        [result] = [session.get(File, file_id) for file_id in job.result_files]  # blocked jobs get it too
        assert (result.org_id, result.purpose, result.filename) == ("org-b", "fine-tune-results", "step_metrics.csv")
        rows = b"".join(get_store().iter_chunks(result.storage_key)).decode().splitlines()
        assert rows[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
        assert [row.split(",")[0] for row in rows[1:]] == ["1", "2"]


def test_cancelled_job_stops_and_is_not_overwritten(pipeline_env):
    from core.db import session_scope
    from core.models import Job
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(session, "org-c", demo_lines(8))
    assert run_stage("validate", job_id) == "scan"
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.status, job.cancel_requested = "cancelled", True
    assert run_stage("scan", job_id) is None
    with session_scope() as session:
        assert session.get(Job, job_id).status == "cancelled"


def test_a_scan_running_when_the_job_is_cancelled_stops_within_seconds(pipeline_env):
    """The cancel arrives while the scan runs (after it entered the stage): it stops at its
    next batch, stores no scan report and lets its lease go, instead of scanning to the end."""
    import threading
    import time

    from core.db import session_scope
    from core.models import Job, SafetyReport
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(session, "org-c", demo_lines(16))
    assert run_stage("validate", job_id) == "scan"
    scan = threading.Thread(target=run_stage, args=("scan", job_id), daemon=True)
    scan.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with session_scope() as session:
            if session.get(Job, job_id).stage == "scanning":
                break
        time.sleep(0.05)
    with session_scope() as session:
        job = session.get(Job, job_id)
        job.status, job.cancel_requested = "cancelled", True
    cancelled_at = time.monotonic()
    scan.join(timeout=120)
    assert not scan.is_alive()
    assert time.monotonic() - cancelled_at < 20  # a model load and one batch at most, on a loaded machine
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.worker_id) == ("cancelled", None)
        report = session.get(SafetyReport, job_id)
        assert report is None or report.scan is None


def test_torch_threads_setting_applies_when_a_stage_loads_its_model(pipeline_env, monkeypatch):
    import torch

    from tests.conftest import clear_caches
    from worker.pipeline.resources import load_model

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        monkeypatch.delenv("GUARDTUNE_TORCH_THREADS")  # (small_pipeline_env sets it)
        clear_caches()
        load_model(str(pipeline_env))  # unset: torch's own setting is kept
        assert torch.get_num_threads() == 3
        monkeypatch.setenv("GUARDTUNE_TORCH_THREADS", "2")
        clear_caches()
        load_model(str(pipeline_env))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _scan_rows(job_id: str) -> list[dict]:
    import json

    from core.db import session_scope
    from core.models import Job
    from core.storage import get_store
    from worker.pipeline.resources import scan_key

    with session_scope() as session:
        key = scan_key(session.get(Job, job_id))
    return [json.loads(line) for line in b"".join(get_store().iter_chunks(key)).decode().splitlines()]


def test_estimator_judge_scans_with_the_local_judge_model(pipeline_env, monkeypatch):
    from core.db import session_scope
    from core.models import SafetyReport
    from tests.conftest import clear_caches
    from worker.tasks import run_stage

    monkeypatch.setenv("GUARDTUNE_JUDGE_LOCAL_MODEL", str(pipeline_env))  # no endpoint configured
    clear_caches()
    with session_scope() as session:
        job_id = create_job(session, "org-j", demo_lines(6), safety={"mode": "adaptive", "estimator": "judge"})
    assert [run_stage("validate", job_id), run_stage("scan", job_id)] == ["scan", "train"]
    rows = _scan_rows(job_id)
    assert len(rows) == 6
    assert all(r["judge_score"] in range(1, 6) and r["p_harmful"] is None for r in rows)
    with session_scope() as session:
        assert session.get(SafetyReport, job_id).scan["estimator"] == "judge"


def test_a_judge_outage_fails_the_job_instead_of_inventing_scores(pipeline_env, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from core.db import session_scope
    from core.models import Job
    from tests.conftest import clear_caches
    from worker.tasks import run_stage

    class Rejecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (stdlib name)
            body = b"judge internals: key sk-judge-123 rejected"
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Rejecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("GUARDTUNE_JUDGE_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
        clear_caches()
        with session_scope() as session:
            job_id = create_job(session, "org-k", demo_lines(4), safety={"mode": "adaptive", "estimator": "judge"})
        assert [run_stage("validate", job_id), run_stage("scan", job_id)] == ["scan", None]
    finally:
        server.shutdown()
        server.server_close()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error["code"] == "judge_unavailable"
        assert "HTTP 401" in job.error["message"]
        assert "sk-judge-123" not in job.error["message"]  # the judge's answer stays in the log
        assert "127.0.0.1" not in job.error["message"]
        assert job.error["param"] == "safety.estimator"


@pytest.mark.parametrize("reference", ["cached", "exact"])
def test_training_takes_its_reference_from_the_scan_artifact_or_runs_it(pipeline_env, monkeypatch, reference):
    """cached (the API's default): the scan stores the reference top-k as a job artifact and training
    runs no reference forward, also when redelivered after a crash; exact: a forward per step."""
    from peft import PeftModel

    import safety.reference
    from core.db import session_scope
    from core.models import Job, SafetyReport
    from core.storage import get_store
    from safety.reference import ReferenceCache
    from worker.pipeline.resources import reference_key
    from worker.tasks import run_stage

    with session_scope() as session:
        job_id = create_job(
            session, "org-r", demo_lines(16), safety={"mode": "adaptive", "estimator": "probe", "reference": reference}
        )
    assert [run_stage("validate", job_id), run_stage("scan", job_id)] == ["scan", "train"]
    with session_scope() as session:
        job = session.get(Job, job_id)
    assert get_store().exists(reference_key(job)) == (reference == "cached")
    disabled = []
    original = PeftModel.disable_adapter
    monkeypatch.setattr(PeftModel, "disable_adapter", lambda self: disabled.append(1) or original(self))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the reference cache was recomputed in training")

    monkeypatch.setattr(safety.reference, "compute_reference_cache", no_rebuild)
    # a worker that dies after the first checkpoint: the redelivered stage resumes from it
    from worker.pipeline import train as train_stage

    real_save = train_stage.Progress.save_checkpoint

    def crash_after_first(self, step, local_dir, m):
        real_save(self, step, local_dir, m)
        raise SystemExit("worker killed")

    monkeypatch.setattr(train_stage.Progress, "save_checkpoint", crash_after_first)
    with pytest.raises(SystemExit):
        run_stage("train", job_id)
    monkeypatch.setattr(train_stage.Progress, "save_checkpoint", real_save)
    assert run_stage("train", job_id) == "evaluate"
    assert (len(disabled) == 0) == (reference == "cached")
    with session_scope() as session:
        report = session.get(SafetyReport, job_id)
        assert report.training["reference"] == reference
        assert report.training["objective"] == "paper"  # GUARDTUNE_OBJECTIVE's default
        assert report.training["steps"] == 4
        assert report.training["final_kl"] is not None
    if reference == "cached":
        cache = ReferenceCache.from_bytes(b"".join(get_store().iter_chunks(reference_key(job))))
        assert cache.k == 32
        assert len(cache.offsets) == 17


def test_an_example_over_the_token_limit_fails_the_scan_naming_its_line(pipeline_env, monkeypatch):
    """One limit for scan and training: the model's context capped by GUARDTUNE_MAX_EXAMPLE_TOKENS."""
    import json

    from core.db import session_scope
    from core.jobs.vocab import ErrorCode
    from core.models import Job
    from core.settings import get_settings
    from worker.pipeline.resources import load_model, token_limit
    from worker.pipeline.train import train_config
    from worker.tasks import run_stage

    monkeypatch.setenv("GUARDTUNE_MAX_EXAMPLE_TOKENS", "200")
    get_settings.cache_clear()
    long_answer = " ".join(["word"] * 400)
    messages = [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": long_answer}]
    long_line = json.dumps({"messages": messages}).encode() + b"\n"
    with session_scope() as session:
        job_id = create_job(session, "org-t", demo_lines(3) + long_line + demo_lines(1))
    assert [run_stage("validate", job_id), run_stage("scan", job_id)] == ["scan", None]
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == "failed"
        assert job.error["code"] == ErrorCode.INVALID_TRAINING_FILE
        assert job.error["param"] == "training_file"
        message = job.error["message"]
        assert "line 4: the example has" in message
        assert "over the limit of 200" in message
        assert "GUARDTUNE_MAX_EXAMPLE_TOKENS" in message
        assert "line 1:" not in message
        assert "line 5:" not in message
        model, _ = load_model(str(pipeline_env))
        assert token_limit(model) == 200
        assert train_config(job, token_limit(model)).max_seq_len == 200


def test_the_trainer_takes_the_operators_objective_with_its_cutoff_at_the_flag_threshold(monkeypatch):
    """GUARDTUNE_OBJECTIVE is an operator option (no request field); bounded's cutoff is the scan's threshold."""
    import dataclasses

    from core.models import Job
    from core.settings import get_settings
    from worker.pipeline.train import train_config

    job = Job(safety={"mode": "adaptive", "estimator": "probe"}, hyperparameters={}, seed=0)
    monkeypatch.setenv("GUARDTUNE_OBJECTIVE", "bounded")
    monkeypatch.setenv("GUARDTUNE_FLAG_THRESHOLD", "3.5")
    get_settings.cache_clear()
    try:
        config = train_config(job, 200)
    finally:
        get_settings.cache_clear()
    assert (config.objective, config.sft_cutoff_risk, config.mode) == ("bounded", 3.5, "adaptive")
    monkeypatch.setenv("GUARDTUNE_OBJECTIVE", "paper")
    get_settings.cache_clear()
    try:  # paper has no cutoff: its config (and so its checkpoints) does not follow the threshold
        assert train_config(job, 200) == dataclasses.replace(config, objective="paper", sft_cutoff_risk=4.0)
    finally:
        get_settings.cache_clear()


@pytest.mark.slow
def test_a_worker_with_two_gpus_trains_each_job_data_parallel(pipeline_env, monkeypatch):
    """``GUARDTUNE_WORKER_GPUS=2`` (gloo on CPU here): the train stage runs two ``torchrun``
    processes; rank 0 reports every step, stores the checkpoints and the adapter, and the
    job goes on to be released."""
    from core.db import session_scope
    from core.models import Checkpoint, Job, JobEvent, SafetyReport
    from tests.conftest import clear_caches

    monkeypatch.setenv("GUARDTUNE_WORKER_GPUS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    clear_caches()
    with session_scope() as session:
        job_id = create_job(session, "org-a", demo_lines(16))
    assert run_all(job_id) == ["validate", "scan", "train", "evaluate", "gate", "release"]
    with session_scope() as session:
        assert session.get_one(Job, job_id).status == "succeeded"
        assert session.get_one(SafetyReport, job_id).training["steps"] == 4
        steps = [c.step for c in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))]
        assert sorted(steps) == [2, 4]
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)).all()
        assert [e.data["step"] for e in events if e.type == "metrics"] == [1, 2, 3, 4]
        assert "Training data-parallel in 2 processes" in [e.message for e in events]
