"""Fixtures for the ops CLI tests: a fresh database per test on SQLite (the embedded
default) and on Postgres (a database of its own, so tampering with its audit log
never touches another test's chain), and a CliRunner wrapper."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from typer.testing import CliRunner

from cli.ops import app
from migrations import migrate
from tests.conftest import PG_ADMIN_URL, _pg_admin, apply_env, clear_caches

ACTOR = "tester"


@dataclass
class Backend:
    name: str  # sqlite | postgres
    url: str
    env: dict[str, str]
    engine: Engine

    def tamper(self, sql: str, **params) -> None:
        """Change the audit table the way a superuser would: around the append-only trigger."""
        with self.engine.begin() as conn:
            if self.name == "postgres":
                conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            else:
                conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
                conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
            conn.execute(text(sql), params)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_ops(*args: str, ok: bool = True) -> Result:
    """Invoke ``guardtune-ops`` in-process; with ``ok`` assert it exited 0."""
    # COLUMNS unset, as in a pipe (pytest-xdist workers inherit COLUMNS=80): tables print at full width.
    result = CliRunner(env={"COLUMNS": None}).invoke(app, list(args), catch_exceptions=False)
    out = Result(result.exit_code, result.stdout, result.stderr)
    if ok:
        assert result.exit_code == 0, (
            f"guardtune-ops {' '.join(args)} → {result.exit_code}\n{result.stdout}\n{result.stderr}"
        )
    return out


@pytest.fixture
def ops():
    return run_ops


def _fresh_pg() -> tuple[str, str]:
    name = f"gt_ops_{secrets.token_hex(4)}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg(name: str) -> None:
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path, monkeypatch) -> Iterator[Backend]:
    """This process configured against a fresh, migrated database of either kind.

    SQLite: the embedded default (local-folder object store). Postgres: a fresh
    database with the deployment's S3 store (moto server).
    """
    if request.param == "sqlite":
        env = {"GUARDTUNE_HOME": str(tmp_path / "var"), "GUARDTUNE_LOG_JSON": "false"}
        apply_env(monkeypatch, env)
        monkeypatch.setenv("GUARDTUNE_OPS_ACTOR", ACTOR)
        url = f"sqlite:///{tmp_path / 'var' / 'guardtune.db'}"
        (tmp_path / "var").mkdir()
        migrate.upgrade()
        engine = create_engine(url)
        yield Backend("sqlite", url, env, engine)
        engine.dispose()
        clear_caches()
        return
    deployment = request.getfixturevalue("deployment_env")
    name, url = _fresh_pg()
    env = {
        **deployment,
        "GUARDTUNE_DATABASE_URL": url,
        "GUARDTUNE_STORAGE_URL": f"{deployment['GUARDTUNE_STORAGE_URL']}/{name}",
    }
    apply_env(monkeypatch, env)
    monkeypatch.setenv("GUARDTUNE_OPS_ACTOR", ACTOR)
    try:
        migrate.upgrade(url)
        engine = create_engine(url)
        yield Backend("postgres", url, env, engine)
        engine.dispose()
    finally:
        clear_caches()
        _drop_pg(name)


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    """A stand-in PEFT adapter (two files with fixed bytes)."""
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": "tiny"}))
    (d / "adapter_model.safetensors").write_bytes(b"\x00\x01not-really-safetensors" * 100)
    return d
