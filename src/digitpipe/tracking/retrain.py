"""`digitpipe retrain`: run the pipeline, register the model, promote it if it wins.

Meant for schedules (cron, systemd timers, CI): one run at a time under a lock file, unchanged
stages skipped by DVC, new raw data under data/raw picked up, a clear exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from digitpipe.core.config import Params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.paths import EVALUATE_REPORTS, STATE_DIR, split_file
from digitpipe.dataset.parquet import read_split
from digitpipe.tracking.registry import Decision, decide
from digitpipe.tracking.runs import find_training_run

LOCK_FILE = STATE_DIR / "retrain.lock"


class Busy(Exception):
    """Another retrain holds the lock."""


@contextmanager
def exclusive(lock_path: Path, wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, waiting up to ``wait_s`` seconds for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"another retrain is running (it holds {lock_path})") from None
    try:
        yield
    finally:
        lock.release()


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
        ref = find_training_run(params.track, root)
        if ref is None:
            raise DigitpipeError(
                "no MLflow run in the tracking store trained the model in models/; retrain it "
                "here with tracking on (dvc repro -f train)."
            )
        accuracy = float(
            json.loads((root / EVALUATE_REPORTS / "metrics.json").read_text())["accuracy"]
        )
        example = read_split(root / split_file("test")).images[:2, None]
        return decide(
            ref,
            params.track.registered_model,
            accuracy,
            params.track.promotion_margin,
            example.astype("float32"),
        )
