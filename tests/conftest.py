"""Shared fixtures: a few hundred real MNIST digits written as IDX and CSV, and params for them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from digitpipe.core.config import DataParams, Params
from digitpipe.core.lifetime import alive
from digitpipe.dataset.idx import read_idx, write_idx
from digitpipe.outputs.train import CHECKPOINT_ROOT

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "data" / "raw" / "mnist"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full-matrix",
        action="store_true",
        help="also run the tests marked matrix (make test-matrix)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests marked matrix unless --full-matrix is given."""
    if config.getoption("--full-matrix"):
        return
    deselected = [item for item in items if item.get_closest_marker("matrix")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("matrix")]


@pytest.fixture(scope="session")
def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """The full MNIST training images and labels, read once."""
    return (
        read_idx(MNIST / "train-images-idx3-ubyte.gz"),
        read_idx(MNIST / "train-labels-idx1-ubyte.gz"),
    )


def default_params(data: dict, **sections: dict) -> dict:
    """A whole params mapping from the package's defaults (DVC needs every section), never from
    the working copy's params.yaml, so the tests hold whatever a user has set there."""
    return Params.model_validate({"data": data, **sections}).model_dump(mode="json")


def mnist_data() -> DataParams:
    """The embedded MNIST files (paths relative to the repo) as the data section, with the
    package's other data defaults."""
    folder = MNIST.relative_to(REPO)
    return DataParams.model_validate(
        {
            "train": {
                "images": folder / "train-images-idx3-ubyte.gz",
                "labels": folder / "train-labels-idx1-ubyte.gz",
            },
            "test": {
                "images": folder / "t10k-images-idx3-ubyte.gz",
                "labels": folder / "t10k-labels-idx1-ubyte.gz",
            },
        }
    )


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """A Kaggle-style CSV: optional `label`, then pixel0..pixelN-1."""
    flat = images.reshape(len(images), -1)
    header = ([] if labels is None else ["label"]) + [f"pixel{i}" for i in range(flat.shape[1])]
    rows = flat if labels is None else np.column_stack([labels, flat])
    with path.open("w") as handle:
        handle.write(",".join(header) + "\n")
        np.savetxt(handle, rows, fmt="%d", delimiter=",")
    return path


@pytest.fixture()
def tiny_project(tmp_path: Path, mnist_train) -> Path:
    """A project folder with 600 train and 200 test MNIST digits as gzip IDX, and params.yaml."""
    return write_tiny_project(tmp_path, mnist_train)


def write_tiny_project(folder: Path, mnist_train) -> Path:
    """The tiny project (see :func:`tiny_project`) written into ``folder``."""
    images, labels = mnist_train
    raw = folder / "data" / "raw"
    write_idx(images[:600], raw / "train-images.gz", compress=True)
    write_idx(labels[:600], raw / "train-labels.gz", compress=True)
    write_idx(images[600:800], raw / "test-images", compress=False)
    write_idx(labels[600:800], raw / "test-labels", compress=False)
    params = default_params(
        {
            "train": {"images": "data/raw/train-images.gz", "labels": "data/raw/train-labels.gz"},
            "test": {"images": "data/raw/test-images", "labels": "data/raw/test-labels"},
        },
        track={"enabled": False},  # tracking tests turn it on
        runtime={"progress": "none"},
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


QUICK_TRAIN = {"max_epochs": 1, "batch_size": 32, "limit_batches": 3}


@pytest.fixture()
def ingested(tiny_project: Path) -> Path:
    """The tiny project, ingested, with training settings that take a second or two."""
    from digitpipe.core.config import load_params
    from digitpipe.ingest.run import run as ingest

    ingest(load_params(tiny_project / "params.yaml"), tiny_project)
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    return tiny_project


def trained_model(project: Path, images, labels, data: dict, train: dict) -> Path:
    """A model trained by the ingest and train stages on ``images`` (IDX, raw) in ``project``,
    tracking off; returns its folder."""
    write_idx(images, project / "train-images")
    write_idx(labels, project / "train-labels")
    sources = {"train": {"images": "train-images", "labels": "train-labels"}}
    params = default_params(
        sources | data, train=train, track={"enabled": False}, runtime={"progress": "none"}
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from digitpipe.core.config import load_params
    from digitpipe.ingest.run import run as ingest
    from digitpipe.train.run import run as train_stage

    loaded = load_params(project / "params.yaml")
    ingest(loaded, project)
    train_stage(loaded, project)
    return project / "models"


def model_probabilities(net, spec, images: np.ndarray) -> np.ndarray:
    """What a saved model predicts for (N, H, W) images, worked out here with numpy (float64):
    the network's softmax, averaged over each image and its four copies moved
    ``spec.test_time_shift`` pixels (edge pixels repeated into the opened space)."""
    shift, (height, width) = spec.test_time_shift, images.shape[1:]
    padded = np.pad(images.astype(np.float32), ((0, 0), (shift, shift), (shift, shift)), "edge")
    moves = [(0, 0), (0, -1), (0, 1), (-1, 0), (1, 0)] if shift else [(0, 0)]
    corners = [(shift * (1 + dy), shift * (1 + dx)) for dy, dx in moves]
    views = [padded[:, top : top + height, left : left + width] for top, left in corners]
    with torch.inference_mode():
        return np.mean(
            [
                torch.softmax(net(torch.from_numpy(view[:, None].copy())).double(), 1).numpy()
                for view in views
            ],
            axis=0,
        )


def edit_params(project: Path, section: str, **changes) -> None:
    """Update keys of one params.yaml section in a test project."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(section, {}).update(changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def init_pipeline_repo(project: Path) -> dict[str, str]:
    """Make a test project a git + DVC repo with this pipeline; return the env to run DVC in."""
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    for folder in ("stages", "src"):
        shutil.copytree(
            REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project / "src"),  # the stages run the project's copy of the code
    }
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=project, env=env, check=True)
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    return env


def dvc(project: Path, env: dict[str, str], *args: str) -> str:
    """Run a dvc command in a test project; fail the test with its output if it fails."""
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


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
    renamed), so one that exists loads."""

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
            if finished() >= epochs:
                return stopped
            os.kill(stopped, signal.SIGCONT)  # never leave a stopped process behind
        time.sleep(0.1)
    pytest.fail(f"the training never saved a checkpoint of epoch {epochs} (or ended first)")


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


def paused_after_a_checkpoint(project: Path, process: subprocess.Popen) -> None:
    """Wait until ``process``, a stage run through PAUSE_AFTER_A_CHECKPOINT in ``project``,
    holds its training after the first checkpoint."""
    paused = wait_until(
        lambda: (project / PAUSE_FILE).exists(), 300, lambda: process.poll() is not None
    )
    assert paused, "the training never reached its first checkpoint"


@pytest.fixture()
def small_disk(tmp_path):
    """A real tmpfs of 1 GiB mounted at tmp_path/disk (root only); unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` with a file of zeros until only ``leave`` bytes are free."""
    info = os.statvfs(disk)
    size = info.f_bavail * info.f_frsize - leave
    chunk = b"\0" * 2**20
    with (disk / "filler").open("wb") as handle:
        while size > 0:
            size -= handle.write(chunk[: min(size, len(chunk))])


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
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend and a local artifact root."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = start_mlflow_server(f"sqlite:///{home}/mlflow.db", home / "artifacts", port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(process)


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's PostgreSQL 15


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


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL cluster for the session, made in a temporary folder and stopped at the
    end. initdb and pg_ctl refuse to run as root: as root they run as the user postgres, in a
    folder outside pytest's (which only root may enter)."""
    if not (POSTGRES_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL 15 is not installed ({POSTGRES_BIN})")
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="digitpipe-postgres-"))
    if run_as:
        shutil.chown(home, "postgres")
    data, port = home / "data", free_port()
    initdb = [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    subprocess.run([*run_as, *initdb, "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*run_as, str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log")]
    subprocess.run([*pg_ctl, "-o", options, "-w", "start"], check=True, capture_output=True)
    try:
        yield Postgres(port, run_as)
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True)
        shutil.rmtree(home)
