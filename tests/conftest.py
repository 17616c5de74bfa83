"""The fixtures the tests share: a few hundred real MNIST digits written as IDX and a params.yaml
for them, and real MLflow and PostgreSQL servers. Helpers are in tests/helpers/."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.data import MNIST, QUICK_TRAIN, write_tiny_project
from helpers.project import (
    STAGES,
    committed_with_hydra,
    dvc,
    edit_params,
    ingest,
    init_pipeline_repo,
    ran,
)
from helpers.servers import (
    POSTGRES_BIN,
    Postgres,
    free_port,
    start_mlflow_server,
    stop_mlflow_server,
)

from digitpipe.dataset.idx import read_idx


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


@pytest.fixture()
def tiny_project(tmp_path: Path, mnist_train) -> Path:
    """A project folder with 600 train and 200 test MNIST digits as gzip IDX, and params.yaml."""
    return write_tiny_project(tmp_path, mnist_train)


@pytest.fixture()
def ingested(tiny_project: Path) -> Path:
    """The tiny project, ingested, with training settings that take a second or two."""
    ingest(tiny_project)
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    return tiny_project


# A `dvc repro` of the tiny pipeline takes about half a minute: the tests that start from a
# reproduced one take a copy of one made once (helpers.project.copy_pipeline).
@pytest.fixture(scope="session")
def reproduced_pipeline(tmp_path_factory, mnist_train) -> tuple[Path, dict[str, str]]:
    """The tiny project as a git + DVC repo of this pipeline with quick training, reproduced,
    and the env to run DVC in. Copy it before changing it."""
    project = write_tiny_project(tmp_path_factory.mktemp("reproduced"), mnist_train)
    edit_params(project, "train", **QUICK_TRAIN)
    env = init_pipeline_repo(project)
    assert ran(dvc(project, env, "repro")) == STAGES
    return project, env


@pytest.fixture(scope="session")
def hydra_pipeline(tmp_path_factory, mnist_train) -> tuple[Path, dict[str, str]]:
    """The tiny project as a git + DVC repo with conf/ and hydra on, as the repo is, reproduced
    and committed (see helpers.project.committed_with_hydra), and the env to run DVC in. Copy it
    before changing it."""
    project = write_tiny_project(tmp_path_factory.mktemp("hydra"), mnist_train)
    env = init_pipeline_repo(project)
    committed_with_hydra(project, env)
    return project, env


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend and a local artifact root."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    process = start_mlflow_server(f"sqlite:///{home}/mlflow.db", home / "artifacts", port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(process)


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


@pytest.fixture(autouse=True)
def own_tracking_uri(monkeypatch):
    """Each test starts with no $MLFLOW_TRACKING_URI and leaves none: MLflow's set_tracking_uri,
    which the stages call in-process, also sets that variable, which digitpipe reads first, so
    one test's store became the next one's in the same worker (a run looked for on another
    test's stopped server)."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    mlflow.set_tracking_uri(None)  # unsets the variable too
