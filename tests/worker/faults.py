"""Private services the fault tests may kill and restart (never the shared Postgres and
Redis), a fresh database per fault scenario, and readers of job state straight from the
database (they keep working while the API or a service is down)."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.jobs.vocab import TERMINAL
from tests.conftest import PG_ADMIN_URL, REPO, _pg_admin, child_env, free_port
from tests.worker.jobs import wait_for


class PrivateRedis:
    """``redis-server`` on a free port with no persistence: a restart comes back empty."""

    def __init__(self, workdir: Path):
        self.port, self.workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._ping(), 20, "private redis to answer")

    def _ping(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
        except redis.RedisError:
            return False

    def restart_empty(self) -> None:
        """SIGKILL and start again on the same port: every queued message is gone."""
        self.stop()
        self.start()

    def queued_ids(self) -> set[str]:
        client = redis.Redis.from_url(self.url)
        raw = [m for q in ("default", "gpu") for m in client.lrange(q, 0, -1)]
        return {json.loads(m)["headers"]["id"] for m in raw}

    def unacked_ids(self) -> set[str]:
        """Messages delivered to a worker and not acknowledged (kombu's ``unacked`` hash)."""
        raw = redis.Redis.from_url(self.url).hvals("unacked")  # [payload, exchange, routing key]
        return {json.loads(m)[0]["headers"]["id"] for m in raw}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PrivatePostgres:
    """A throwaway cluster (``initdb`` + ``pg_ctl``, trust auth) on a free port."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="gt-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data, self.port = self.dir / "data", free_port()
        subprocess.run(
            [*_as_postgres(), "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        self._ctl("start", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_as_postgres(), "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def restart(self, down_s: float) -> None:
        """Stop at once (every connection cut, no clean shutdown), stay down ``down_s``,
        start again."""
        self._ctl("stop", "-m", "immediate")
        time.sleep(down_s)
        self._ctl("start", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off")

    def close(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own on the shared server (so no other test's jobs are reaped)."""
    name = f"gt_fault_{secrets.token_hex(4)}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    """``guardtune migrate`` (schema and base-model registry) for ``env``."""
    subprocess.run(
        [sys.executable, "-m", "cli.guardtune", "migrate"],
        cwd=REPO,
        env=child_env(env),
        check=True,
        capture_output=True,
        timeout=120,
    )


class JobReader:
    """Job state read straight from the database, tolerant of a database restart."""

    def __init__(self, url: str):
        self.engine = create_engine(url, pool_pre_ping=True)

    def _read(self, fn):
        for _ in range(50):
            try:
                with Session(self.engine) as session:
                    return fn(session)
            except OperationalError:
                time.sleep(0.3)
        raise RuntimeError("the database did not come back")

    def job(self, job_id: str):
        from core.models import Job

        return self._read(lambda s: s.get(Job, job_id))

    def job_ids(self, org_id: str) -> list[str]:
        from core.models import Job

        return self._read(lambda s: list(s.scalars(select(Job.id).where(Job.org_id == org_id))))

    def events(self, job_id: str) -> list[str]:
        from core.models import JobEvent

        return self._read(
            lambda s: list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)))
        )

    def outbox(self, job_id: str) -> list:
        from core.models import OutboxMessage

        return self._read(
            lambda s: list(
                s.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id).order_by(OutboxMessage.seq))
            )
        )

    def finished(self, job_id: str, timeout_s: float = 240):
        return wait_for(lambda: (j := self.job(job_id)).status in TERMINAL and j, timeout_s, f"{job_id} to finish")

    def ping(self) -> None:
        self._read(lambda s: s.execute(text("SELECT 1")))

    def close(self) -> None:
        self.engine.dispose()


def stage_runs(log_path: Path) -> list[tuple[str, str]]:
    """``(job id, stage)`` of every ``stage_started`` in a worker's JSON log."""
    runs = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "stage_started":
            runs.append((entry["job_id"], entry["stage"]))
    return runs
