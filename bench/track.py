"""Benchmark: how fast `train` stops when the MLflow tracking server cannot be reached.

The README promises it "stops within seconds, naming the URI". A tiny project (600 MNIST
digits from data/raw/mnist) is ingested in a temporary folder, its track section points at a
closed port on 127.0.0.1, and the train stage runs as DVC runs it (a new Python process, imports
included) and in this process (the stage's own work, imports already done). The tests check the
behaviour (exit status 2, the URI in the message); the time is measured here.
Run: `.venv/bin/python bench/track.py` (or `make bench`).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import yaml
from record import Row, record
from timing import median_time

from digitpipe.core.config import Params, load_params
from digitpipe.core.stage import run_stage
from digitpipe.dataset.idx import read_idx, write_idx
from digitpipe.ingest.run import run as ingest

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "data" / "raw" / "mnist"
TARGET_S = 10.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_project(folder: Path, uri: str) -> None:
    images = read_idx(MNIST / "train-images-idx3-ubyte.gz")[:800]
    labels = read_idx(MNIST / "train-labels-idx1-ubyte.gz")[:800]
    write_idx(images, folder / "images")
    write_idx(labels, folder / "labels")
    params = Params.model_validate(
        {
            "data": {"train": {"images": "images", "labels": "labels"}, "test_fraction": 0.25},
            "train": {"max_epochs": 1, "batch_size": 32, "limit_batches": 2},
            "track": {"enabled": True, "tracking_uri": uri},
            "runtime": {"progress": "none"},
        }
    ).model_dump(mode="json")
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ingest(load_params(folder / "params.yaml"), folder)


def stage_process(folder: Path, env: dict[str, str]) -> float:
    """Seconds until the train stage process exits; it must fail naming the URI."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/train.py")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - started
    assert result.returncode == 2, result.stderr
    return seconds


def imports_only(env: dict[str, str]) -> None:
    """The baseline: a process that only imports what the failing stage imports."""
    code = "import digitpipe.train.run, digitpipe.tracking.runs"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


def main() -> int:
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tiny_project(folder, uri)
        process = median_time(lambda: stage_process(folder, env), repeats=3)
        imports = median_time(lambda: imports_only(env), repeats=3)
        os.chdir(folder)
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # its message
            in_process = median_time(lambda: run_stage("digitpipe.train.run"))
    print(
        f"{'train stage process, unreachable server':<44} {process:6.2f} s   "
        f"baseline (imports only) {imports:6.2f} s   target < {TARGET_S:.0f} s: "
        f"{'ok' if process < TARGET_S else 'OVER TARGET'}"
    )
    print(
        f"{'train stage in-process, unreachable server':<44} {in_process:6.2f} s   "
        f"target < {TARGET_S:.0f} s: {'ok' if in_process < TARGET_S else 'OVER TARGET'}"
    )
    row = Row(
        what="train stage against an unreachable MLflow server",
        value=round(process, 2),
        unit="s",
        detail=f"{in_process:.2f} s of it the stage's own work (in-process, imports done)",
        ratio=round(process / imports, 3),
        baseline=f"a process that only imports the stage ({imports:.2f} s)",
        target=f"< {TARGET_S:.0f} s",
        met=process < TARGET_S,
        command="bench/track.py",
    )
    record("track", [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
