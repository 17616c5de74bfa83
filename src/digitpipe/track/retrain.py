"""`digitpipe retrain`: run the pipeline, register the model, promote it if it wins.

Meant for schedules (cron, systemd timers, CI): one run at a time under a lock file, unchanged
stages skipped by DVC, new raw data under data/raw picked up, a clear exit status.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from digitpipe.config import Params
from digitpipe.data.ingest import PROCESSED_DIR
from digitpipe.data.parquet import read_split
from digitpipe.errors import DigitpipeError
from digitpipe.track.registry import Decision, decide
from digitpipe.track.runs import read_run

LOCK_FILE = Path(".digitpipe/retrain.lock")
TEST_METRICS = Path("reports/evaluate/metrics.json")


class Busy(Exception):
    """Another retrain holds the lock."""


@contextmanager
def exclusive(lock_path: Path, wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, waiting up to ``wait_s`` seconds for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise Busy(f"another retrain is running ({holder})") from None
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def reproduce(root: Path) -> None:
    """`dvc repro`, with this interpreter's environment first on PATH (as `make` sets it)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    dvc = shutil.which("dvc", path=path)
    if dvc is None:
        raise DigitpipeError("dvc is not installed in this environment; run `make install`.")
    if subprocess.run([dvc, "repro"], cwd=root, env={**os.environ, "PATH": path}).returncode:
        raise DigitpipeError("`dvc repro` failed (its output is above); nothing was registered.")


def retrain(params: Params, root: Path = Path("."), wait_s: float = 0.0) -> Decision:
    """Reproduce the pipeline, then register and maybe promote its model."""
    if not params.track.enabled:
        raise DigitpipeError("retrain needs MLflow tracking: set track.enabled: true.")
    with exclusive(root / LOCK_FILE, wait_s):
        reproduce(root)
        ref = read_run(root)
        if ref is None:
            raise DigitpipeError(
                f"no MLflow run recorded in {root / 'models'}; rerun the "
                "pipeline with tracking on (dvc repro -f train)."
            )
        accuracy = float(json.loads((root / TEST_METRICS).read_text())["accuracy"])
        example = read_split(root / PROCESSED_DIR / "test.parquet").images[:2, None]
        return decide(
            ref,
            params.track.registered_model,
            accuracy,
            params.track.promotion_margin,
            example.astype("float32"),
        )
