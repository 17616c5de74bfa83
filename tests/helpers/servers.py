"""Real servers on 127.0.0.1 for the tests: free ports, `mlflow server` in a process group of
its own, and a PostgreSQL cluster's handle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from digitpipe.core.lifetime import end_group
from helpers.processes import wait_until

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's PostgreSQL 15


def answers(url: str) -> bool:
    """Whether an HTTP server answers ``url``."""
    try:
        urllib.request.urlopen(url, timeout=2)
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(backend: str, artifacts: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:``port`` serving artifacts from ``artifacts``, in a
    process group of its own (its workers die with it); returns once it answers."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--serve-artifacts",
            "--artifacts-destination",
            str(artifacts),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Without MLflow 3's job runner: seven huey workers per server that digitpipe never uses
        # (they kept a 2-core machine's load above 10 while tests ran).
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    started = wait_until(lambda: answers(f"{uri}/health"), 90, lambda: process.poll() is not None)
    if not started:
        stop_mlflow_server(process)
        pytest.fail(f"the mlflow server on {backend} did not start")
    return process


def stop_mlflow_server(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """End the server and its workers (its process group) with ``sig``, then SIGKILL if it
    lingers (a busy machine's uvicorn can take longer than 10 s to stop)."""
    end_group(process, sig, grace_s=10)


class Postgres:
    """A PostgreSQL cluster on 127.0.0.1:``port``, user ``postgres``, no password."""

    def __init__(self, port: int, run_as: list[str]) -> None:
        self.port, self.run_as = port, run_as

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create(self, database: str) -> str:
        """A new, empty database; its URI."""
        createdb = [str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
        subprocess.run([*createdb, "-U", "postgres", database], check=True)
        return self.uri(database)
