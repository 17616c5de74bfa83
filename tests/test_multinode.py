"""Two training nodes on 127.0.0.1, each in its own copy of the tiny project: the same weights
as one node with two processes, a node that never joins bounded by train.ddp_timeout, and one
resume decision for all ranks."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.data import REPO
from helpers.errors import assert_user_error
from helpers.processes import stopped_after_a_checkpoint, wait_until
from helpers.project import edit_params
from helpers.servers import free_port
from mlflow.tracking import MlflowClient

from digitpipe.outputs.train import CHECKPOINT_ROOT, MODEL_DIR, TRAIN_REPORTS

TWO_NODES = {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp"}
FINISH_SECONDS = 300  # a hang guard for a run of a few batches, not a speed check


@pytest.fixture()
def processes():
    """The training processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def node(project: Path, rank: int, port: int, started: list) -> subprocess.Popen:
    """The train stage of node ``rank`` of two, started the way Lightning's environment
    variables launch it (as under `dvc repro`), one thread per process."""
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NODE_RANK": str(rank),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, str(REPO / "stages/train.py")],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(process)
    return process


def finished(process: subprocess.Popen, seconds: float = FINISH_SECONDS) -> str:
    output = process.communicate(timeout=seconds)[0]
    assert process.returncode == 0, output
    return output


@pytest.fixture()
def elsewhere(tmp_path_factory):
    """A fresh folder outside the project (which is the test's tmp_path): another machine's."""
    return lambda name: tmp_path_factory.mktemp(name) / "project"


def two_node_projects(ingested: Path, node1: Path, **train) -> tuple[Path, Path]:
    edit_params(ingested, "train", **TWO_NODES, **train)
    shutil.copytree(ingested, node1)
    return ingested, node1


def files(project: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(project)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(project.rglob("*"))
        if path.is_file()
    }


def weights_digest(project: Path) -> str:
    return hashlib.sha256((project / MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()


def train_both(first: Path, second: Path, started: list) -> tuple[str, str]:
    port = free_port()
    zero, one = node(first, 0, port, started), node(second, 1, port, started)
    return finished(zero), finished(one)


def one_node_two_processes(project: Path, single: Path, started: list) -> str:
    """The weights digest of the same training as one node of two processes."""
    shutil.copytree(project, single, ignore=shutil.ignore_patterns(MODEL_DIR, "reports"))
    edit_params(single, "train", devices=2, num_nodes=1)
    finished(node(single, 0, free_port(), started))
    return weights_digest(single)


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_one_node_with_two_processes(ingested, elsewhere, processes):
    first, second = two_node_projects(ingested, elsewhere("node1"), max_epochs=2)
    before = files(second)
    train_both(first, second, processes)
    assert files(second) == before  # node 1 writes nothing
    assert weights_digest(first) == one_node_two_processes(first, elsewhere("single"), processes)


@pytest.mark.slow
def test_a_node_that_never_joins_ends_node_0_within_the_timeout(ingested, processes):
    store = f"sqlite:///{ingested / 'mlflow.db'}"
    edit_params(ingested, "train", **TWO_NODES, ddp_timeout=20)
    edit_params(ingested, "track", enabled=True, tracking_uri=store)
    alone = node(ingested, 0, free_port(), processes)
    output = alone.communicate(timeout=60)[0]
    assert_user_error((alone.returncode, output), "node 1 never started", "NODE_RANK")
    assert not (ingested / MODEL_DIR).exists()
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not experiments or not client.search_runs(experiments, "attributes.status = 'RUNNING'")


def listening(port: int) -> bool:
    """Whether a socket of this machine listens on TCP ``port`` (from /proc, without
    connecting)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                return True
    return False


@pytest.mark.slow
def test_sigterm_ends_a_node_waiting_for_the_others(ingested, processes):
    """A killed `dvc repro` sends its stage SIGTERM: it must end even while torch waits in C++
    for the other nodes (before, it waited out the whole timeout)."""
    edit_params(ingested, "train", **TWO_NODES, ddp_timeout=600)
    port = free_port()
    waiting = node(ingested, 0, port, processes)
    assert wait_until(lambda: listening(port), 120, lambda: waiting.poll() is not None)
    waiting.send_signal(signal.SIGTERM)
    waiting.communicate(timeout=10)
    assert waiting.returncode == -signal.SIGTERM


@pytest.mark.slow
def test_a_checkpoint_on_node_0_only_resumes_every_node(ingested, elsewhere, processes):
    first, second = two_node_projects(ingested, elsewhere("node1"), max_epochs=4, limit_batches=6)
    edit_params(first, "runtime", progress="lines")
    edit_params(second, "runtime", progress="lines")
    port = free_port()
    zero, one = node(first, 0, port, processes), node(second, 1, port, processes)
    stopped_after_a_checkpoint(first, lambda: zero.pid, lambda: zero.poll() is not None)
    for process in (zero, one):
        process.kill()
        process.communicate(timeout=60)
    assert list((first / CHECKPOINT_ROOT).glob("*/last.ckpt"))
    assert not (second / CHECKPOINT_ROOT).exists()  # only rank 0 saves checkpoints
    before = files(second)

    resumed, _ = train_both(first, second, processes)
    assert "Resuming from" in resumed and "epoch 1/4 " not in resumed, resumed
    assert files(second) == before  # the received checkpoint was a temporary copy
    history = (first / TRAIN_REPORTS / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4"]
    resumed_weights = weights_digest(first)
    train_both(first, second, processes)  # uninterrupted
    assert weights_digest(first) == resumed_weights
