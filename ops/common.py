"""What every ops command shares: who is acting, and a database session."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from core.db import session_scope

ActorOpt = Annotated[
    str | None,
    typer.Option(
        "--actor",
        envvar="GUARDTUNE_OPS_ACTOR",
        help="Who is acting, for the audit log (default: $USER). Recorded as ops:<actor>.",
    ),
]


def ops_actor(actor: str | None = None) -> str:
    """``ops:<name>``: the given name, else $USER, else the login name."""
    name = (actor or os.environ.get("USER") or "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry in some containers
            name = "unknown"
    return name if name.startswith("ops:") else f"ops:{name}"


@contextmanager
def db() -> Iterator[Session]:
    """One transaction on ``GUARDTUNE_DATABASE_URL``: commits on success, else rolls back."""
    with session_scope() as session:
        yield session
