"""Engine and sessions. One engine per database URL per process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import CursorResult, Delete, Engine, Update, create_engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from core.settings import Settings, get_settings

# Connections beyond one per API thread: sessions whose endpoint has returned keep theirs
# until FastAPI closes them (on a thread of its own limiter), so a few more are in use.
POOL_SLACK = 8


def pool_size(settings: Settings) -> int:
    """Pooled connections per engine: one per thread serving sync endpoints
    (``GUARDTUNE_API_THREADS``) plus :data:`POOL_SLACK`. A request holds a connection only
    while it holds a thread (``api.deps.identify`` releases its own), so with the two
    sized together no request can wait for a connection that waits for a thread."""
    return settings.api_threads + POOL_SLACK


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    settings = get_settings()
    url = url or settings.db_url
    # Opened on demand, never overflow: overflow connections are closed and reopened under load.
    pool = {"pool_size": pool_size(settings), "max_overflow": 0}
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        else:
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, **pool)
    return engine


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def matched_rows(session: Session, statement: Update | Delete) -> int:
    """Execute the UPDATE or DELETE ``statement`` in ``session``: the number of rows its WHERE matched."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)  # what a DML statement returns
    return result.rowcount


def begin_write(session: Session) -> None:
    """On SQLite, take the database's write lock now (``BEGIN IMMEDIATE``), so what this
    transaction reads next cannot change before it commits: SQLite has no row locks and
    ignores ``FOR UPDATE``. Writers queue on ``busy_timeout``. Elsewhere this does nothing
    (use ``with_for_update``). Call it before the transaction has written anything; reads
    before it are fine (the driver runs them outside a transaction)."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None  # a checked-out connection has its driver connection
    if not dbapi.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def read_outside_transaction(session: Session) -> None:
    """Run this session's statements outside a transaction, each in its own snapshot: for a
    request that only reads and needs no snapshot common to its statements. On Postgres that
    saves the BEGIN and ROLLBACK round trips (the connection goes back to the pool in its
    default isolation level); SQLite's driver already runs reads outside a transaction. Call
    it before the session's first statement."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@lru_cache(maxsize=8)
def _factory(url: str | None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def new_session(url: str | None = None) -> Session:
    return _factory(url)()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = new_session(url)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
