"""Where runs are tracked: resolve the MLflow tracking URI and check it answers before work."""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
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
# MLflow's own HTTP settings retry a dead server for minutes: a few seconds are enough here.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


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


def check_tracking(track: TrackParams, root: Path) -> None:
    """With tracking on, fail now, naming the store, when it cannot be used: a stage that logs
    at its end checks before its work rather than after it."""
    if track.enabled:
        ensure_reachable(tracking_uri(track, root))


def ensure_reachable(uri: str, *, write: bool = True) -> None:
    """Fail fast, naming the URI, when the tracking server or store cannot be used: for logging
    runs (``write``), or only for reading registered models."""
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif (path := sqlite_file(uri)) is not None:
        problem = _sqlite_problem(path, write)
        if problem:
            raise DigitpipeError(f"MLflow store {uri}: {problem}")
        _open_store(uri)


@contextmanager
def bounded_http() -> Iterator[None]:
    """MLflow's HTTP calls in the block give up within seconds on a dead server (settings the
    user has made in the environment are kept)."""
    added = {key: value for key, value in HTTP_LIMITS.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _check_server(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S):
            return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DigitpipeError(
            f"MLflow tracking server {uri} cannot be reached ({reason}). Start it (e.g. "
            "`mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000`), fix "
            "MLFLOW_TRACKING_URI / track.tracking_uri, or set track.enabled: false."
        ) from None


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
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT:
            return None
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
        reason = str(exc).strip().partition("\n")[0][:300] or type(exc).__name__
        raise DigitpipeError(
            f"MLflow store {uri} cannot be opened ({reason}); {STORE_FIX}"
        ) from None
