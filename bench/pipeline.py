"""Benchmark: what the pipeline costs beyond training, and how fast a bad parameter is reported.

Runs every stage script once, as `dvc repro` would, on the embedded MNIST data in a temporary
copy of the project (the working copy's outputs stay untouched), with the working copy's
params.yaml and an MLflow store in the copy. Prints per stage: wall time and the time to
import its module alone; what MLflow adds to each stage that logs (import and opening the
store); then the overhead (wall time minus training seconds, target <= 15 s), the ratio
wall / training and the part of the overhead that is imports alone; then the time to report a
misspelt architecture (target < 1.5 s).
Run: `.venv/bin/python bench/pipeline.py` (or `make bench`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from record import Row, record

REPO = Path(__file__).resolve().parents[1]
STAGES = {
    "ingest": "digitpipe.ingest.run",
    "train": "digitpipe.train.run",
    "evaluate": "digitpipe.evaluate.run",
    "activations": "digitpipe.activations.run",
    "report": "digitpipe.report.run",
}
LOGGING_STAGES = ("train", "evaluate", "activations", "report")  # each imports MLflow itself
# What a logging stage has imported before it tracks, then what tracking adds to it.
BEFORE_TRACKING = "import torch, pandas, matplotlib"
TRACKING = (
    "import digitpipe.tracking.runs; from digitpipe.tracking.store import ensure_reachable; "
    "ensure_reachable('{uri}')"
)
OVERHEAD_TARGET_S = 15.0
FAST_FAILURE_TARGET_S = 1.5


def timed(command: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - started, result


def project_copy(folder: Path) -> Path:
    """The raw data and params.yaml in ``folder``, tracking to a store there."""
    shutil.copytree(REPO / "data" / "raw", folder / "data" / "raw")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.setdefault("track", {})["tracking_uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    params.setdefault("runtime", {}).update(progress="none", resume=False)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def mlflow_cost(python: str, project: Path) -> float:
    """Seconds that importing MLflow and opening the project's store add to a stage's process."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    before, _ = timed([python, "-c", BEFORE_TRACKING], project)
    after, result = timed([python, "-c", f"{BEFORE_TRACKING}; {TRACKING.format(uri=uri)}"], project)
    assert result.returncode == 0, result.stderr
    return after - before


def main() -> int:
    python = sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        project = project_copy(Path(scratch))
        walls, imports = {}, {}
        for stage, module in STAGES.items():
            imports[stage], _ = timed([python, "-c", f"import {module}"], project)
            wall, result = timed([python, str(REPO / "stages" / f"{stage}.py")], project)
            if result.returncode:
                print(result.stdout + result.stderr)
                return 1
            walls[stage] = wall
            print(f"{stage:12s} {wall:6.1f} s wall, {imports[stage]:4.1f} s to import {module}")
        tracking = mlflow_cost(python, project)
        print(
            f"MLflow adds {tracking:.1f} s (import, open the store) to each of the "
            f"{len(LOGGING_STAGES)} stages that log: {tracking * len(LOGGING_STAGES):.1f} s"
        )
        speed = json.loads((project / "reports/train/speed.json").read_text())
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["model"]["arch"] = "bnccn"  # a typo
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        typo, result = timed([python, str(REPO / "stages" / "train.py")], project)
        assert result.returncode == 2 and "model.arch" in result.stderr, result.stderr
    total, trained = sum(walls.values()), speed["train_seconds"]
    overhead = total - trained
    floor = sum(imports.values()) + tracking * len(LOGGING_STAGES)
    print(
        f"pipeline: {total:.1f} s wall for {trained:.1f} s of training: overhead {overhead:.1f} s "
        f"(target <= {OVERHEAD_TARGET_S:.0f} s), ratio wall/training {total / trained:.2f}; "
        f"{floor:.1f} s of it is imports and opening the MLflow store"
    )
    print(f"a misspelt model.arch is reported in {typo:.2f} s (target < {FAST_FAILURE_TARGET_S} s)")
    stages = ", ".join(f"{stage} {walls[stage]:.1f}" for stage in STAGES)
    rows = [
        Row(
            what="whole pipeline, each stage as DVC runs it",
            value=round(overhead, 1),
            unit="s overhead",
            detail=f"{total:.1f} s wall ({stages}), {trained:.1f} s training; {floor:.1f} s of "
            f"it is imports and opening the MLflow store ({tracking:.1f} s per logging stage)",
            ratio=round(total / trained, 3),
            baseline="training seconds (wall / training)",
            target=f"overhead <= {OVERHEAD_TARGET_S:.0f} s",
            met=overhead <= OVERHEAD_TARGET_S,
            command="bench/pipeline.py",
        ),
        Row(
            what="a misspelt `model.arch` reported",
            value=round(typo, 2),
            unit="s",
            target=f"< {FAST_FAILURE_TARGET_S} s",
            met=typo < FAST_FAILURE_TARGET_S,
            command="bench/pipeline.py",
        ),
    ]
    record("pipeline", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
