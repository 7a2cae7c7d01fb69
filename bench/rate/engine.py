"""The campaign database: which URL, and an SQLAlchemy engine set up for it.

SQLite (the default, a file inside the export) runs in WAL mode with a busy timeout and
``synchronous=FULL``, so an acknowledged answer is on disk before the server answers, readers do
not block the writer, and concurrent writers wait their turn instead of failing. A write
transaction starts with ``BEGIN IMMEDIATE`` (it takes the write lock at once rather than failing
halfway when another writer got there first). ``postgresql://`` URLs use psycopg 3.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

DB_NAME = "ratings.db"
BUSY_TIMEOUT_MS = 30_000
IMMEDIATE = "sqlite_begin_immediate"  # execution option of a write transaction on SQLite


class DatabaseURLError(ValueError):
    """A database URL this module does not serve."""


def default_url(pairs_dir: str | os.PathLike) -> str:
    """``sqlite:///DIR/ratings.db`` (absolute), the database of an export unless ``db=`` says otherwise."""
    return f"sqlite:///{(Path(pairs_dir) / DB_NAME).resolve()}"


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` run on psycopg 3; ``sqlite:///FILE`` stays as it is."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith(("postgresql+psycopg://", "sqlite:///")):
        return url
    raise DatabaseURLError(f"db={safe_url(url)!r}: use sqlite:///FILE or postgresql://USER@HOST[:PORT]/DATABASE")


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not parseable as a URL: show nothing of it that could be secret
        return url.split("@")[-1] if "@" in url else url


def is_database_url(text: str) -> bool:
    """Whether a ``ratings=`` entry names a database rather than a rating file."""
    return text.startswith(("sqlite:", "postgresql:", "postgresql+", "postgres:"))


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below), not the driver
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(IMMEDIATE) else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (see the module docstring); the SQLite file's folder must exist."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=8, max_overflow=8, pool_timeout=60,
                               connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_size=8, max_overflow=16, pool_timeout=60, pool_pre_ping=True)
