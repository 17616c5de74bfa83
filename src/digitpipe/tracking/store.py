"""Where runs are tracked: resolve the MLflow tracking URI and check it answers before work."""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from digitpipe.core.config import TrackParams
from digitpipe.core.errors import DigitpipeError

DEFAULT_STORE = "mlflow.db"
REACH_TIMEOUT_S = 5
SQLITE = "sqlite:///"
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_HEADER_BYTES = 100
CHECK_BUDGET_S = 1.0  # PRAGMA quick_check stops here: a large store is then taken as sound
STORE_FIX = (
    "move the file aside (a new store is then started) or point MLFLOW_TRACKING_URI / "
    "track.tracking_uri at another store; track.enabled: false runs the stages without tracking."
)
# MLflow waits this long for a lock on its SQLite store (its PRAGMA busy_timeout, per session).
SQLITE_BUSY_WAIT_S = 20
LOCKED_FIX = (
    "another process holds a lock on {} (an open transaction: an sqlite3 shell, a script, "
    "another mlflow process); end that transaction or wait for it to end, or point "
    "MLFLOW_TRACKING_URI / track.tracking_uri at another store"
)
# What to do about the SQLite errors a user can fix (Python's sqlite3 error codes).
SQLITE_FIXES = {
    sqlite3.SQLITE_BUSY: f". Still locked after {SQLITE_BUSY_WAIT_S} s: {LOCKED_FIX}",
    sqlite3.SQLITE_FULL: ". The disk that holds {} is full: free space on it",
}
# MLflow's SQL stores besides SQLite (SQLAlchemy dialect names; a driver may follow a "+").
DATABASES = ("postgresql", "mysql", "mssql")
# MLflow retries a dead server 7 times over about 4 minutes, each read waiting up to 120 s; a
# stage (its process, every call) gives up within seconds instead: 2 retries, 0 s then 2 s
# apart, answer a refused connection in about 3 s and a hung server in about 35 s. PostgreSQL's
# client library waits forever for an unanswered connection without PGCONNECT_TIMEOUT.
STORE_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "PGCONNECT_TIMEOUT": str(REACH_TIMEOUT_S),
}


def repo_root(root: Path) -> Path:
    """The repository whose store runs belong to: for a queued DVC experiment, which runs in a
    temporary copy, DVC points ``DVC_ROOT`` at the original repository."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def tracking_uri(track: TrackParams, root: Path) -> str:
    """$MLFLOW_TRACKING_URI, else track.tracking_uri, else an absolute SQLite store in the repo.

    A relative SQLite path (``sqlite:///mlflow.db``) is made absolute against the repository.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or track.tracking_uri
    if not uri:
        return f"{SQLITE}{repo_root(root) / DEFAULT_STORE}"
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return f"{SQLITE}{repo_root(root) / uri[len(SQLITE) :]}"
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The file of an SQLite store URI; None for other stores."""
    return Path(uri[len(SQLITE) :].partition("?")[0]) if uri.startswith(SQLITE) else None


def shown(uri: str) -> str:
    """``uri`` with its password, if any, masked: what messages print."""
    scheme, netloc, *rest = urllib.parse.urlsplit(uri)
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    masked = f"{userinfo.partition(':')[0]}:***@{host}"
    return urllib.parse.urlunsplit((scheme, masked, *rest))


def database(uri: str) -> bool:
    """Whether ``uri`` names a PostgreSQL, MySQL or SQL Server store (not SQLite)."""
    return uri.partition(":")[0].partition("+")[0] in DATABASES


def local_artifacts(uri: str) -> bool:
    """Whether the client writes a run's artifacts itself (a database store), not a server."""
    return database(uri) or uri.startswith(SQLITE)


def check_tracking(track: TrackParams, root: Path) -> None:
    """With tracking on, fail now, naming the store, when it cannot be used: a stage that logs
    at its end checks before its work rather than after it."""
    if track.enabled:
        ensure_reachable(tracking_uri(track, root))


def ensure_reachable(uri: str, *, write: bool = True) -> None:
    """Fail fast, naming the URI, when the tracking server or store cannot be used: for logging
    runs (``write``), or only for reading registered models. Every MLflow call of this process
    then gives up within seconds (STORE_LIMITS)."""
    bound_store_calls()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif database(uri):
        _check_database(uri)
        _open_store(uri)
    elif (path := sqlite_file(uri)) is not None:
        problem = _sqlite_problem(path, write)
        if problem:
            raise DigitpipeError(f"MLflow store {uri}: {problem}")
        _open_store(uri)


def bound_store_calls() -> None:
    """Make MLflow's calls in this process give up within seconds on a dead server or database
    (settings the user has made in the environment are kept)."""
    for key, value in STORE_LIMITS.items():
        os.environ.setdefault(key, value)


class StoreFailed(DigitpipeError):
    """The tracking store stopped answering, or refused a write, during the work."""


@contextmanager
def store_errors(uri: str, then: str = "rerun once it answers.") -> Iterator[None]:
    """MLflow's failures in the block to reach or write the store ``uri`` as one message
    (:class:`StoreFailed`) naming the store, with what to do ``then``."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, RequestException, SQLAlchemyError) as exc:
        raise StoreFailed(f"{_failure(uri, exc)}; {then}") from None


def _reason(exc: BaseException) -> str:
    """The first line of an exception's text, at most 300 characters."""
    return str(exc).strip().partition("\n")[0][:300] or type(exc).__name__


def root_cause(exc: BaseException) -> BaseException:
    """The error at the root of ``exc``'s causes: MLflow wraps SQLAlchemy's error, which wraps
    the driver's ("database is locked")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def root_reason(exc: BaseException) -> str:
    """The first line of the text of the error at the root of ``exc``'s causes."""
    return _reason(root_cause(exc))


def _failure(uri: str, exc: BaseException) -> str:
    """What went wrong with the store, by its kind, and how to fix it."""
    reason = _reason(exc)
    if uri.startswith(("http://", "https://")):
        return (
            f"MLflow tracking server {shown(uri)} stopped answering ({reason}). Start it again "
            "(or fix MLFLOW_TRACKING_URI / track.tracking_uri)"
        )
    if database(uri):
        return (
            f"MLflow store {shown(uri)} failed ({reason}). Check that the database server is up "
            "and reachable"
        )
    root = root_cause(exc)
    fix = SQLITE_FIXES.get(getattr(root, "sqlite_errorcode", None), "")
    return f"MLflow store {uri} failed ({_reason(root)}){fix.format(sqlite_file(uri))}"


def _check_server(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S):
            return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DigitpipeError(
            f"MLflow tracking server {shown(uri)} cannot be reached ({reason}). Start it (e.g. "
            "`mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000`), fix "
            "MLFLOW_TRACKING_URI / track.tracking_uri, or set track.enabled: false."
        ) from None


def _check_database(uri: str) -> None:
    """Connect to a database store within seconds: a missing driver, server or database is one
    message naming the store (its password masked)."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    dialect = uri.partition(":")[0]
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=_connect_timeout(dialect))
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise DigitpipeError(
            f"MLflow store {shown(uri)}: no database driver for {dialect}:// is installed "
            f"({_reason(exc)}). PostgreSQL needs psycopg (installed with digitpipe: use "
            "postgresql://); MySQL needs `pip install pymysql` and mysql+pymysql://."
        ) from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        raise DigitpipeError(
            f"MLflow store {shown(uri)} cannot be reached ({_reason(exc.orig or exc)}). Start "
            "the database server, create the database (e.g. `createdb NAME`), check the user "
            "and password, or fix MLFLOW_TRACKING_URI / track.tracking_uri; track.enabled: "
            "false runs the stages without tracking."
        ) from None
    finally:
        engine.dispose()


def _connect_timeout(dialect: str) -> dict[str, int]:
    """The driver's connection timeout: psycopg, psycopg2, PyMySQL and mysqlclient take it."""
    return {"connect_timeout": REACH_TIMEOUT_S} if dialect.startswith(DATABASES[:2]) else {}


def _sqlite_problem(path: Path, write: bool) -> str | None:
    """What keeps MLflow from using the SQLite file ``path``, or None; cheap checks first."""
    folder = path.parent
    if write and (not folder.is_dir() or not os.access(folder, os.W_OK)):
        return f"folder {folder} does not exist or is not writable."
    if not path.exists():
        return (
            None
            if write
            else f"{path} does not exist; point MLFLOW_TRACKING_URI / track.tracking_uri at the "
            "store that holds the model."
        )
    if not path.is_file():
        return f"{path} is not a regular file; {STORE_FIX}"
    if not os.access(path, os.R_OK | (os.W_OK if write else 0)):
        access = "readable and writable" if write else "readable"
        return f"{path} is not {access} by this user; fix its permissions, or {STORE_FIX}"
    return _content_problem(path)


def _content_problem(path: Path) -> str | None:
    """Why ``path`` is no usable SQLite database (junk, truncated, damaged), or None."""
    with path.open("rb") as handle:
        header = handle.read(SQLITE_HEADER_BYTES)
    if not header:
        return None  # an empty file: SQLite starts a new database in it
    if len(header) < SQLITE_HEADER_BYTES or not header.startswith(SQLITE_MAGIC):
        return f"{path} is not an SQLite database; {STORE_FIX}"
    page_size = int.from_bytes(header[16:18])  # 1 stands for 65536
    declared = (65536 if page_size == 1 else page_size) * int.from_bytes(header[28:32])
    size = path.stat().st_size
    if header[24:28] == header[92:96] and size < declared:  # the page count is valid
        return f"{path} is truncated ({size:,} of {declared:,} bytes); {STORE_FIX}"
    return _integrity_problem(path)


def _integrity_problem(path: Path) -> str | None:
    """SQLite's PRAGMA quick_check on a read-only connection, within CHECK_BUDGET_S."""
    deadline = time.monotonic() + CHECK_BUDGET_S
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=REACH_TIMEOUT_S)
    db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_INTERRUPT:
            return None
        if code == sqlite3.SQLITE_BUSY:
            return f"{path} is still locked after {REACH_TIMEOUT_S} s: {LOCKED_FIX.format('it')}."
        return f"{path} cannot be read ({exc}); {STORE_FIX}"
    finally:
        db.close()
    return None if verdict == "ok" else f"{path} is damaged ({verdict}); {STORE_FIX}"


def _open_store(uri: str) -> None:
    """Open the store as MLflow will (it keeps the store open for the process), turning its
    errors (an unknown schema version, a locked file) into one message."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from sqlalchemy.exc import SQLAlchemyError

    try:
        MlflowClient(uri)
    except (MlflowException, SQLAlchemyError) as exc:
        fix = STORE_FIX if uri.startswith(SQLITE) else "check the database and its user's rights."
        raise DigitpipeError(
            f"MLflow store {shown(uri)} cannot be opened ({_reason(exc)}); {fix}"
        ) from None
