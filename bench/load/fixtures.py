"""The scratch database of a load run: a Postgres database of its own (or a SQLite file)
and the rows polled: one organization, API key and training file, ``n_jobs`` jobs (running /
succeeded / failed, each with a safety report) with ``n_events`` events each.

Contracts: :func:`seed` is deterministic for a given ``seed_`` apart from the ids; the rows
are built from the product's vocabulary (``JobStatus``, ``JobStage``, ``ErrorCode``) and
config models; the key is made with :data:`SECRET`, the secret the API is started with.
"""

from __future__ import annotations

import os
import random
import secrets
import time

SECRET = "bench-secret-" + "x" * 40


# -- scratch database ------------------------------------------------------------------------------
def _admin(admin_url: str):
    import psycopg

    return psycopg.connect(
        admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=5
    )


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"gt_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    with _admin(admin_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def pg_sessions(admin_url: str, name: str) -> int | None:
    """Sessions ever opened to database ``name`` (``pg_stat_database.sessions``, PG 14+)."""
    try:
        with _admin(admin_url) as conn:
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
            return int(row[0]) if row and row[0] is not None else None
    except Exception:  # older servers have no such column: the number is optional
        return None


def seed(url: str, n_jobs: int, n_events: int, seed_: int) -> tuple[str, list[str]]:
    """Insert the org, key, file, jobs, reports and events; return (API key, job ids)."""
    from sqlalchemy import create_engine, insert, text
    from sqlalchemy.orm import Session

    from core.ids import new_id
    from core.jobs import ErrorCode, Hyperparameters, JobStage, JobStatus, SafetyConfig
    from core.models import ApiKey, File, Job, JobEvent, Organization, SafetyReport
    from core.orgs.apikeys import generate_key
    from core.vocab import FileStatus, KeyScope

    rng = random.Random(seed_)
    engine = create_engine(url)
    t0 = int(time.time()) - 86_400
    org_id, file_id = new_id("org"), new_id("file")
    plaintext, prefix, digest = generate_key(SECRET)
    job_ids = [new_id("ftjob") for _ in range(n_jobs)]
    hp = Hyperparameters().model_dump(exclude_none=True)
    safety = SafetyConfig().model_dump(include={"mode", "estimator", "kl_weight", "constant_kl_weight"})
    jobs, reports, events = [], [], []
    for j, job_id in enumerate(job_ids):
        status = rng.choices([JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED], weights=[6, 3, 1])[0]
        created = t0 + j * 60
        finished = None if status == JobStatus.RUNNING else created + 3_600
        jobs.append(
            {
                "id": job_id,
                "seq": 10**15 + j,
                "org_id": org_id,
                "created_by": "key-bench",
                "model": "smollm2-135m-instruct",
                "training_file_id": file_id,
                "status": status.value,
                "stage": JobStage.TRAINING.value if status == JobStatus.RUNNING else None,
                "hyperparameters": hp,
                "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
                "safety": safety,
                "suffix": f"bench-{j}",
                "seed": j,
                "metadata_": {"team": "bench", "run": str(j)},
                "error": {
                    "code": ErrorCode.SAFETY_GATE_BLOCKED.value,
                    "message": "ASR rose from 2.0% to 40.0% (allowed: +5 points)",
                    "param": None,
                }
                if status == JobStatus.FAILED
                else None,
                "fine_tuned_model": f"ft:smollm2-135m-instruct:{org_id}:bench-{j}:{job_id}"
                if status == JobStatus.SUCCEEDED
                else None,
                "trained_tokens": 120_000 if finished else None,
                "estimated_finish": created + 3_600,
                "result_files": [],
                "attempts": 1,
                "heartbeat_at": float(created + 1_800),
                "worker_id": "bench-worker",
                "created_at": created,
                "started_at": created + 5,
                "finished_at": finished,
            }
        )
        reports.append(
            {
                "job_id": job_id,
                "updated_at": created + 600,
                "scan": {
                    "n": 48,
                    "counts_by_score": {"1": 40, "2": 0, "3": 0, "4": 0, "5": 8},
                    "n_flagged": 8,
                    "flagged_fraction": 0.167,
                    "mean_risk": 1.67,
                    "counts_by_category": {"malware": 3, "fraud/deception": 5},
                    "top_flagged": [
                        {
                            "line": k,
                            "risk": 5.0,
                            "p_harmful": 0.97,
                            "judge_score": None,
                            "category_guess": "malware",
                            "flagged": True,
                        }
                        for k in range(1, 6)
                    ],
                },
                "training": {"mean_risk": 1.67, "regularized_share": 0.3, "final_kl": 0.021, "steps": 18},
                "evaluation": {
                    "base": {"asr_keyword": 0.02, "over_refusal": 0.1},
                    "tuned": {"asr_keyword": 0.03, "over_refusal": 0.1},
                }
                if finished
                else None,
                "gate": {"released": status == JobStatus.SUCCEEDED, "reasons": []} if finished else None,
            }
        )
        for e in range(n_events):
            at = created + 5 + e * 10
            if e % 10 == 0:
                events.append(
                    {
                        "id": new_id("ftevent"),
                        "job_id": job_id,
                        "created_at": at,
                        "level": "info",
                        "type": "message",
                        "message": f"Stage update {e // 10}",
                        "data": {"stage": JobStage.TRAINING.value},
                    }
                )
            else:
                step = e
                events.append(
                    {
                        "id": new_id("ftevent"),
                        "job_id": job_id,
                        "created_at": at,
                        "level": "info",
                        "type": "metrics",
                        "message": f"Step {step}/{n_events}: training loss=1.2345, kl=0.0123, kl_weight=0.90, risk=5.00",
                        "data": {
                            "step": step,
                            "total_steps": n_events,
                            "train_loss": 1.2345,
                            "sft_loss": 1.3,
                            "kl": 0.0123,
                            "kl_weight": 0.9,
                            "sft_weight": 0.1,
                            "risk": 5.0,
                            "tokens_per_s": 512.3,
                            "learning_rate": 0.0002,
                        },
                    }
                )
    with Session(engine) as session, session.begin():
        session.add(Organization(id=org_id, name="bench-org"))
        session.flush()
        session.add(ApiKey(id=new_id("key"), org_id=org_id, prefix=prefix, key_hash=digest, scope=KeyScope.CUSTOMER))
        session.add(
            File(
                id=file_id,
                org_id=org_id,
                filename="train.jsonl",
                purpose="fine-tune",
                storage_key=f"orgs/{org_id}/files/{file_id}",
                status=FileStatus.PROCESSED,
                n_examples=48,
            )
        )
        session.flush()
        session.execute(insert(Job), jobs)
        session.execute(insert(SafetyReport), reports)
        for start in range(0, len(events), 10_000):
            session.execute(insert(JobEvent), events[start : start + 10_000])
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()
    return plaintext, job_ids
