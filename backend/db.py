"""Engine, sessions and migrations.

SQLite is the embedded store: WAL so readers never wait for the writer, a long busy timeout, and
``BEGIN IMMEDIATE`` for write sessions so a transaction that reads before it writes queues for the write lock
instead of failing with "database is locked" (SQLite cannot upgrade a deferred read to a write under WAL once
another writer committed). Read sessions use a plain ``BEGIN``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, create_engine, event, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

BUSY_TIMEOUT_S = 60.0
MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x616E6F6465  # "anode": one PostgreSQL advisory lock for migrations


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def json_dumps(value: Any) -> str:
    """JSON columns store NaN and ±inf as ``null`` on every backend: PostgreSQL rejects them, and a summary
    (e.g. a slope fitted to one point) may hold them."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite, creates the folder and sets WAL, busy timeout and transaction modes."""
    if not url.startswith("sqlite"):  # pooled as for SQLite: the API's routes run on up to 40 threads (anyio's
        # default), and a connection beyond the pool is closed when returned, so each would pay a new handshake
        return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20, json_serializer=json_dumps)
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
                           pool_size=20, max_overflow=20, json_serializer=json_dumps)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver's own BEGIN handling is off; `_on_begin` emits ours
        cursor = dbapi_conn.cursor()
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # every statement is its own transaction and sees the latest commit
        conn.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")

    return engine


class Database:
    """Sessions for one process. ``session(write=True)`` is the unit of work: it commits on success, rolls back
    on error, then runs the callbacks registered with :func:`after_commit` (e.g. enqueue a run id)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        # PostgreSQL reads in autocommit: under READ COMMITTED (its default) each statement of a transaction takes
        # its own snapshot anyway, so a read's BEGIN and COMMIT were two round trips that bought nothing. SQLite's
        # read transaction does hold one snapshot (WAL), and costs no round trip: it keeps it.
        reads = self.engine if self.engine.dialect.name == "sqlite" else \
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read = sessionmaker(reads, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False)

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        session = self.open(write=write)
        try:
            yield session
        except BaseException:
            self.end(session, ok=False)
            raise
        self.end(session, ok=True)

    def open(self, *, write: bool = False) -> Session:
        """A unit of work's session, not yet connected (no I/O: safe on an event loop); :meth:`end` ends it."""
        return (self._write if write else self._read)()

    def end(self, session: Session, *, ok: bool) -> None:
        """Commit (``ok``) or roll back ``session``, close it, then run its :func:`after_commit` hooks if it
        committed. Blocking: off the event loop."""
        try:
            if ok:
                session.commit()
            else:
                session.rollback()
        except BaseException:
            session.rollback()
            ok = False
            raise
        finally:
            hooks: list[Callable[[], None]] = session.info.pop("after_commit", [])
            session.close()
        if ok:
            for hook in hooks:
                hook()

    def autocommit(self) -> Connection:
        """A connection whose every statement is its own transaction: for a worker's frequent one-row polls
        (the cancel flag), a tenth of the cost of a session each time."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        self.engine.dispose()


def after_commit(session: Session, hook: Callable[[], None]) -> None:
    """Run ``hook`` once the unit of work holding ``session`` has committed (never if it rolls back)."""
    session.info.setdefault("after_commit", []).append(hook)


class DamagedStore(RuntimeError):
    """The SQLite file failed its integrity check: the API refuses to start on it."""


def check_integrity(url: str) -> None:
    """``PRAGMA quick_check`` of an existing SQLite store (PostgreSQL checks its own pages): a damaged file stops
    the API at start with what to do, instead of serving 500s and "ok" health. O(size of the file): about a
    second per few hundred MB."""
    import sqlite3

    path = url.split("///", 1)[1] if url.startswith("sqlite") and "///" in url else ""
    if not path or path == ":memory:" or not Path(path).exists():
        return
    fix = (f"stop every anode-lab process, move {path} aside (and its -wal and -shm files) and restore it from a "
           f"backup, or start empty; `sqlite3 {path} .recover` may save its rows")
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        raise DamagedStore(f"the store {path} is not a readable SQLite database ({exc}): {fix}") from None
    if problems != ["ok"]:
        raise DamagedStore(f"the store {path} is damaged (PRAGMA quick_check: {'; '.join(problems)}): {fix}")


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, lock_dir: Path) -> None:
    """Bring the schema to the newest Alembic revision (the API does this at start; workers never do). A file
    lock serialises processes starting together on one host; on PostgreSQL an advisory lock held by the
    migrating transaction serialises API processes on several hosts. ``lock_dir`` is the data folder: revision
    0007 moves the artifact files kept under its ``runs`` folder before into the store."""
    from alembic import command

    lock_dir.mkdir(parents=True, exist_ok=True)
    config = _alembic_config(url)
    with open(lock_dir / "migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                config.attributes["connection"] = conn
                config.attributes["data_dir"] = lock_dir
                command.upgrade(config, "head")
        finally:
            engine.dispose()


def schema_is_current(engine: Engine) -> bool:
    """True when the store is at the newest Alembic revision, i.e. the API has migrated it."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(_alembic_config("")).get_heads())
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads
