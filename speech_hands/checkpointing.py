"""Where runs are checkpointed: the one place that reads a checkpointer location and opens its saver.

A location is what ``--checkpointer`` / ``--trace-db`` and ``AgentConfig.trace_db`` hold:

- ``postgres://`` or ``postgresql://`` URL: a LangGraph ``PostgresSaver`` over a psycopg
  ``ConnectionPool`` (extra ``postgres``: ``langgraph-checkpoint-postgres``, ``psycopg[binary,pool]``);
  several processes (``speech-hands serve`` workers) can share one database. The tables are created
  once (``setup()``, under an advisory lock so workers starting together do not race);
- ``':memory:'``: LangGraph's in-memory saver (this process only);
- anything else: a SQLite file path (``~`` expanded), as before.

Other URL schemes (``mysql://``, ``redis://``, ...) are refused, never taken for a file name. Errors and
logs show a location through :func:`redact` (a URL's password replaced by ``***``).

    saver = open_checkpointer("postgresql://user:pw@db.internal:5432/speech_hands")
    ...
    close_checkpointer(saver)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

from speech_hands.errors import CheckpointerUnavailable, ConfigurationError

__all__ = [
    "MEMORY",
    "POSTGRES_SCHEMES",
    "close_checkpointer",
    "is_postgres",
    "open_async_saver",
    "open_checkpointer",
    "postgres_url",
    "redact",
    "resolve_location",
    "sqlite_path",
    "thread_ids",
]

log = logging.getLogger(__name__)

MEMORY = ":memory:"
POSTGRES_SCHEMES = ("postgres", "postgresql")
#: seconds to wait for the database when opening (connect_timeout of libpq)
CONNECT_TIMEOUT_S = 10
#: the pool's size: PostgresSaver serialises its statements with one lock, so a few connections suffice
POOL_MAX_SIZE = 4
_SETUP_LOCK = 0x5348_636B  # pg_advisory_lock key: "SHck", held while the tables are created or migrated
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_postgres(location: str | None) -> bool:
    """Whether ``location`` names a PostgreSQL database (a ``postgres://`` / ``postgresql://`` URL)."""
    return bool(location) and urlsplit(str(location)).scheme.lower() in POSTGRES_SCHEMES


def redact(location: str | None) -> str:
    """``location`` fit for messages and logs: a URL's password (also a ``password=`` query field) is ``***``."""
    text = str(location)
    if not _URL.match(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _scrub(message: str, location: str) -> str:
    """``message`` with the password of ``location`` removed, wherever a library may have echoed it."""
    password = urlsplit(location).password
    return message.replace(password, "***") if password else message


def resolve_location(value: str | None, default: Callable[[], Path]) -> str:
    """The location to open: a Postgres URL or ``':memory:'`` as given, a file path expanded; None:
    ``$SPEECH_HANDS_TRACE_DB`` (which may be a URL too), else ``default()``. Other URL schemes are a
    :class:`~speech_hands.errors.ConfigurationError`."""
    if not value:
        value = os.environ.get("SPEECH_HANDS_TRACE_DB") or str(default())
    if value == MEMORY or is_postgres(value):
        return value
    if _URL.match(value):
        raise ConfigurationError(
            f"unsupported checkpointer {redact(value)!r}: give a postgresql:// URL, a SQLite file path or ':memory:'"
        )
    return str(Path(value).expanduser())


def open_checkpointer(location: str) -> BaseCheckpointSaver:
    """A real LangGraph checkpointer for a resolved location (see the module docstring). A Postgres
    database that cannot be reached, or refuses the login, is a :class:`CheckpointerUnavailable`."""
    if location == MEMORY:
        from langgraph.checkpoint.memory import InMemorySaver

        return InMemorySaver()
    if is_postgres(location):
        return _open_postgres(location)
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One connection shared by the graph's worker threads; SqliteSaver serialises access with a lock.
    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


def _postgres_modules() -> tuple[Any, Any, Any]:
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg_pool import ConnectionPool
    except ImportError as exc:
        raise ConfigurationError(
            f"a postgresql:// checkpointer needs langgraph-checkpoint-postgres and psycopg ({exc.name} is missing): "
            "pip install 'speech-hands[postgres]'"
        ) from exc
    return psycopg, PostgresSaver, ConnectionPool


def _connect_kwargs() -> dict[str, Any]:
    """What langgraph-checkpoint-postgres needs of every connection: autocommit, dict rows, no prepared
    statements (so poolers such as PgBouncer in transaction mode work)."""
    from psycopg.rows import dict_row

    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


def _locked(conn: Any, work: Callable[[], None], timeout_s: float = 120.0) -> None:
    """Run ``work`` holding the setup advisory lock of the database (so processes starting together do
    not run the migrations twice). The lock is *tried* in a loop, not waited for in one statement: a
    session blocked in ``pg_advisory_lock`` holds a transaction open, which the migrations'
    ``CREATE INDEX CONCURRENTLY`` waits for, a deadlock that PostgreSQL breaks by failing one side."""
    deadline = time.monotonic() + timeout_s
    while not conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (_SETUP_LOCK,)).fetchone()["ok"]:
        if time.monotonic() > deadline:
            raise CheckpointerUnavailable(f"another process held the checkpointer's setup lock for {timeout_s:.0f} s")
        time.sleep(0.05)
    try:
        work()
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


def _open_postgres(url: str) -> BaseCheckpointSaver:
    psycopg, PostgresSaver, ConnectionPool = _postgres_modules()
    # One plain connection first: its error names the cause (refused, unknown host, bad password, no
    # such database), where a pool would only time out. It also creates the tables, once per database.
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **_connect_kwargs()) as conn:
            _locked(conn, lambda: PostgresSaver(conn).setup())
    except psycopg.Error as exc:
        reason = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        raise CheckpointerUnavailable(
            f"cannot open the Postgres checkpointer {redact(url)}: {reason}; check the URL, that the server "
            "runs and accepts this user, and that the database exists"
        ) from None
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=POOL_MAX_SIZE,
        kwargs={**_connect_kwargs(), "connect_timeout": CONNECT_TIMEOUT_S},
        check=ConnectionPool.check_connection,  # a connection broken by a server restart is replaced
        name="speech-hands-checkpointer",
        open=False,
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:
        pool.close()
        raise CheckpointerUnavailable(
            f"cannot open the Postgres checkpointer {redact(url)}: {_scrub(str(exc), url)}"
        ) from None
    log.info("checkpointer: Postgres at %s", redact(url))
    return PostgresSaver(pool)


def postgres_url(saver: BaseCheckpointSaver) -> str | None:
    """The connection URL behind a :func:`open_checkpointer` Postgres saver (None for any other saver)."""
    conninfo = getattr(getattr(saver, "conn", None), "conninfo", None)
    if type(saver).__name__ == "PostgresSaver" and isinstance(conninfo, str):
        return conninfo
    return None


def sqlite_path(saver: BaseCheckpointSaver) -> str | None:
    """The file behind a ``SqliteSaver`` (None for an in-memory SQLite database or any other saver)."""
    if type(saver).__name__ != "SqliteSaver":
        return None
    with saver.lock:  # type: ignore[attr-defined]
        rows = saver.conn.execute("PRAGMA database_list").fetchall()  # type: ignore[attr-defined]
    return next((row[2] for row in rows if row[1] == "main" and row[2]), None)


@contextlib.asynccontextmanager
async def open_async_saver(saver: BaseCheckpointSaver) -> AsyncIterator[Any]:
    """The native async saver on the same storage as ``saver``, for one async run: ``AsyncSqliteSaver``
    on the SQLite file, ``AsyncPostgresSaver`` on the Postgres database (one connection for the run),
    the in-memory saver itself; None when there is none (the caller runs the sync graph in a thread)."""
    from langgraph.checkpoint.memory import InMemorySaver

    if isinstance(saver, InMemorySaver):
        yield saver
        return
    url = postgres_url(saver)
    if url is not None:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with await psycopg.AsyncConnection.connect(url, **_connect_kwargs()) as conn:
            yield AsyncPostgresSaver(conn)  # the tables exist: open_checkpointer created them
        return
    path = sqlite_path(saver)
    if path is not None:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(path) as native:
            yield native
        return
    yield None


def thread_ids(saver: BaseCheckpointSaver, limit: int | None = None) -> list[str]:
    """Thread ids in the checkpointer, the most recently written first: one query on SQLite and Postgres
    (checkpoint ids are time-ordered uuid6), the saver's ``list`` otherwise."""
    query = "SELECT thread_id FROM checkpoints GROUP BY thread_id ORDER BY MAX(checkpoint_id) DESC"
    kind = type(saver).__name__
    if kind == "SqliteSaver":
        with saver.lock:  # type: ignore[attr-defined]
            rows = saver.conn.execute(query).fetchall()  # type: ignore[attr-defined]
        ids = [row[0] for row in rows]
        return ids[:limit] if limit else ids
    if kind == "PostgresSaver":
        with saver._cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(query + (" LIMIT %s" if limit else ""), (limit,) if limit else None)
            return [row["thread_id"] for row in cur.fetchall()]
    seen: dict[str, None] = {}
    for item in saver.list(None):
        seen.setdefault(item.config["configurable"]["thread_id"], None)
        if limit and len(seen) >= limit:
            break
    return list(seen)


def close_checkpointer(saver: BaseCheckpointSaver) -> None:
    """Close what :func:`open_checkpointer` opened: the SQLite connection, the Postgres pool."""
    conn = getattr(saver, "conn", None)
    if conn is not None and hasattr(conn, "close"):
        conn.close()
