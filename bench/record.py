"""Benchmark results as files: each benchmark writes its rows to bench/results/<name>.json with
the date, the git commit and the machine; bench/render.py turns the folder into
docs/benchmarks.md. The schema below is the one both sides load."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from digitpipe.core.atomic import write_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# Changes here do not make the measured code "modified": the results and docs, which a benchmark
# run itself rewrites or which describe it.
NOT_MEASURED = ("bench/results", "docs", "README.md")


class Machine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: str
    cores: int = Field(gt=0)
    gpu: str | None = None  # the first NVIDIA GPU's name, None without one
    # The 5-minute load average when the run ended: on the shared 2-core machine a load of 9 made
    # the CSV ingest 2.4 times slower than on an idle day, so a figure is read with it.
    load: float | None = Field(default=None, ge=0)


class Row(BaseModel):
    """One measured figure: ``value`` in ``unit``, against a baseline of the same run."""

    model_config = ConfigDict(extra="forbid")

    what: str
    value: float
    unit: str
    detail: str = ""  # what else the run printed about this figure
    ratio: float | None = None  # value / baseline, both from this run
    baseline: str = ""  # what the ratio is against
    target: str = ""  # e.g. "< 1.5 s"
    met: bool | None = None  # None: no target
    command: str


class BenchRun(BaseModel):
    """One run of one benchmark: its rows and where they were measured."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str
    date: datetime
    commit: str  # short hash, "+modified" when the measured tree had uncommitted changes
    machine: Machine
    source: str = "measured"  # or where figures measured before this file existed come from
    rows: list[Row] = Field(min_length=1)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, None without one (nvidia-smi: no torch import, 3 s)."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    )
    name = done.stdout.partition("\n")[0].strip() if done.returncode == 0 else ""
    return name or None


def this_machine() -> Machine:
    load = round(os.getloadavg()[1], 1) if hasattr(os, "getloadavg") else None
    return Machine(cpu=cpu_model(), cores=os.cpu_count() or 1, gpu=gpu_name(), load=load)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def this_commit() -> str:
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    outside = [f":!{path}" for path in NOT_MEASURED]
    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", *outside)
    return f"{commit}+modified" if changes else commit


def record(benchmark: str, rows: list[Row], results: Path = RESULTS) -> Path:
    """Write this run's ``rows`` to ``results/<benchmark>.json``, replacing the last run's."""
    run = BenchRun(
        benchmark=benchmark,
        date=datetime.now(UTC).replace(microsecond=0),
        commit=this_commit(),
        machine=this_machine(),
        rows=rows,
    )
    path = results / f"{benchmark}.json"
    write_text(path, run.model_dump_json(indent=2, exclude_defaults=True) + "\n")
    return path
