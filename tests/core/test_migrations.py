"""Alembic migrations run up and down on SQLite and on Postgres."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from migrations import migrate
from tests.conftest import PG_ADMIN_URL, _pg_admin

TABLES = {
    "organizations",
    "api_keys",
    "files",
    "jobs",
    "job_events",
    "checkpoints",
    "safety_reports",
    "base_models",
    "released_models",
    "audit_log",
    "pending_deletions",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "uploads",
    "upload_parts",
}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = f"gt_mig_{secrets.token_hex(4)}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_upgrade_head_then_downgrade_base(empty_db):
    migrate.upgrade(empty_db)
    engine = create_engine(empty_db)
    assert TABLES <= set(inspect(engine).get_table_names())
    migrate.downgrade(empty_db, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    migrate.upgrade(empty_db)  # and up again from base
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_audit_table_refuses_update_and_delete(empty_db):
    migrate.upgrade(empty_db)
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (created_at, actor, action, target, details, prev_hash, hash) "
                "VALUES (1.0, 'system', 'test', NULL, '{}', :p, :h)"
            ),
            {"p": "0" * 64, "h": "1" * 64},
        )
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT actor FROM audit_log")).scalars().all() == ["system"]
    engine.dispose()
