"""Processes the tests start and watch: `digitpipe` measured in a process of its own, the train
stage as DVC runs it, held or stopped mid-training, and polls that guard against hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from digitpipe.core.lifetime import alive
from digitpipe.outputs.train import CHECKPOINT_ROOT
from helpers.data import REPO

# Runs the command sys.argv[2:] with a timeout of sys.argv[1] seconds and prints its exit status,
# output and peak RSS (MiB, of the command alone) as JSON.
MEASURE = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
print(json.dumps({
    "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
    "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


@dataclass(frozen=True)
class Measured:
    """One `digitpipe` process: exit status, output and peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    rss_mb: float


def measured_digitpipe(cwd: Path, *args: str | Path, hang_guard_s: float) -> Measured:
    """`digitpipe ARGS` in a fresh process under ``cwd``, with its peak RSS; a process still
    running after ``hang_guard_s`` has hung (the test fails)."""
    command = [sys.executable, "-c", MEASURE, str(hang_guard_s), sys.executable, "-m"]
    command += ["digitpipe.cli", *map(str, args)]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True)
    return Measured(**json.loads(done.stdout))


def wait_until(condition, seconds: float, gone=None) -> bool:
    """Poll ``condition`` until it is true (True), ``seconds`` pass or ``gone()`` is true (a
    process that died: False). A hang guard, not a speed check: it asserts nothing."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline or (gone is not None and gone()):
            return False
        time.sleep(0.1)
    return True


def stage_processes(project: Path, script: str) -> list[int]:
    """Pids of the Python processes running ``script`` with ``project`` as their working
    directory. A child forked by such a process (a `git` call between fork and exec) shows the
    same command line for a moment; it is left out by its parent, as is a shell wrapper."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            if not (Path(argv[0]).name.startswith("python") and argv[1:2] == [script]):
                continue
            cwd = os.readlink(entry / "cwd")
        except (OSError, ValueError):  # gone meanwhile, or a command line that is not UTF-8
            continue
        if Path(cwd) == project and (process := alive(int(entry.name))) is not None:
            found[process.pid] = process.parent
    return [pid for pid, parent in found.items() if parent not in found]


def stopped_after_a_checkpoint(project: Path, pid, gone, epochs: int = 1) -> int:
    """Stop (SIGSTOP) the training under ``project`` once its last checkpoint holds epoch
    ``epochs`` or a later one, so a kill lands mid-training however late the test looks; return
    that process's pid, ``pid()``. ``gone()`` says the training died first.

    Each look stops the process and only then reads the checkpoint: a stopped process cannot
    finish between the look and the stop (looking first once let a run finish all its epochs in
    between, and remove its checkpoints). Lightning writes a checkpoint whole (a temporary file
    renamed beside it: ``train.checkpoint.CheckpointsBeside``), so one that exists loads."""

    def saved() -> list[Path]:
        return list((project / CHECKPOINT_ROOT).glob("*/last.ckpt"))

    def finished() -> int:
        try:
            return max(torch.load(p, weights_only=True)["epoch"] + 1 for p in saved())
        except (ValueError, FileNotFoundError):  # none saved, or the run removed them
            return 0

    deadline = time.monotonic() + 300  # a hang guard
    while time.monotonic() < deadline and not gone():
        if saved():
            stopped = pid()
            os.kill(stopped, signal.SIGSTOP)
            try:
                done = finished()
            except BaseException:  # never leave a stopped process behind (a failed look did)
                os.kill(stopped, signal.SIGCONT)
                raise
            if done >= epochs:
                return stopped
            os.kill(stopped, signal.SIGCONT)
        time.sleep(0.1)
    pytest.fail(f"the training never saved a checkpoint of epoch {epochs} (or ended first)")


def repro_stopped_in_training(
    project: Path, env: dict[str, str], *args: str, epochs: int = 1, **popen
) -> tuple[subprocess.Popen, int]:
    """`dvc repro ARGS` started in ``project``, its train stage stopped (SIGSTOP) once it has
    saved epoch ``epochs`` (see :func:`stopped_after_a_checkpoint`): the dvc process and the
    stopped stage's pid. Its output goes to ``popen``'s stdout (default: nowhere)."""
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT} | popen
    repro = subprocess.Popen(["dvc", "repro", *args], cwd=project, env=env, **popen)

    def train_pid() -> int:
        (pid,) = stage_processes(project, "stages/train.py")
        return pid

    try:
        return repro, stopped_after_a_checkpoint(
            project, train_pid, lambda: repro.poll() is not None, epochs
        )
    except BaseException:  # a failed test leaves no `dvc repro` behind (its stage ends with it)
        repro.kill()
        repro.wait()
        raise


PAUSE_FILE = "training-paused"  # written by a training held after its last checkpoint
# Runs the stage script sys.argv[1] (its arguments after it) with the training held at the first
# batch after `last.ckpt` is saved: it writes PAUSE_FILE in the current folder and waits there for
# the test's signal, mid-training whatever the machine's speed (a test that stops a training
# once it sees the checkpoint races its last epochs: it once found all 6 finished). A test that
# removes PAUSE_FILE lets the training go on (held once): removing a file works on a full disk.
PAUSE_AFTER_A_CHECKPOINT = f"""
import pathlib, runpy, sys, time
import lightning.pytorch as pl

save = pl.Trainer.save_checkpoint
saved, held = [], []


def saving(self, filepath, *args, **kwargs):
    save(self, filepath, *args, **kwargs)
    saved.append(pathlib.Path(filepath).name == "last.ckpt")


def holding(self, batch, batch_idx):
    if any(saved) and not held:
        held.append(pathlib.Path({PAUSE_FILE!r}))
        held[0].touch()
        while held[0].exists():
            time.sleep(0.05)


pl.Trainer.save_checkpoint = saving
pl.LightningModule.on_train_batch_start = holding
sys.argv = sys.argv[1:]
sys.path.insert(0, str(pathlib.Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def default_sigint() -> None:
    """A ``preexec_fn``: SIGINT delivered as a terminal's Ctrl-C delivers it, however the tests
    were started (a script's background job ignores SIGINT, and so does all it starts: a
    SIGINT test then waited forever)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train_stage(project: Path, paused: bool = False) -> subprocess.Popen:
    """The train stage script as DVC runs it: a process of its own under ``project``, output
    (unbuffered) to a pipe, tracking only where params.yaml says (no MLFLOW_TRACKING_URI or
    DVC_ROOT of the caller's); ``paused``: held after its first checkpoint (see
    PAUSE_AFTER_A_CHECKPOINT)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        env.pop(name, None)
    hold = ["-c", PAUSE_AFTER_A_CHECKPOINT] if paused else []
    return subprocess.Popen(
        [sys.executable, *hold, str(REPO / "stages/train.py")],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )


def paused_after_a_checkpoint(project: Path, process: subprocess.Popen) -> None:
    """Wait until ``process``, a stage run through PAUSE_AFTER_A_CHECKPOINT in ``project``,
    holds its training after the first checkpoint."""
    paused = wait_until(
        lambda: (project / PAUSE_FILE).exists(), 300, lambda: process.poll() is not None
    )
    assert paused, "the training never reached its first checkpoint"
