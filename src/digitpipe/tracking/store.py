"""Where runs are tracked: resolve the MLflow tracking URI and check it answers before work."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from digitpipe.core.config import TrackParams
from digitpipe.core.errors import DigitpipeError

DEFAULT_STORE = "mlflow.db"
REACH_TIMEOUT_S = 5


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
        return f"sqlite:///{repo_root(root) / DEFAULT_STORE}"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return f"{prefix}{repo_root(root) / uri[len(prefix) :]}"
    return uri


def ensure_reachable(uri: str) -> None:
    """Fail fast, naming the URI, when the tracking server or store cannot be used."""
    if uri.startswith(("http://", "https://")):
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
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise DigitpipeError(
                f"MLflow store {uri}: folder {folder} does not exist or is not writable."
            )
