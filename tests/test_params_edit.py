"""`make test` holds after a user edits the parameters: a copy of the repository with a
params.yaml composed from edited conf/ (a `dvc exp run -S model=mlp -S train.max_epochs=1`
applied, or the README's Kaggle data block in conf/config.yaml with Kaggle-style CSVs in place)
passes a sample of the suite, run there against the copy's own code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.data import REPO, write_csv
from helpers.project import compose

from digitpipe.core.config import load_params

pytestmark = pytest.mark.slow

# Fast tests of the stages that read data and params (the tests that once copied the working
# copy's params.yaml among them).
SAMPLE = [
    "tests/test_ingest.py::test_splits_are_stratified_and_map_back_to_the_source",
    "tests/test_ingest.py::test_kaggle_csv_matches_the_idx_path",
    "tests/test_ingest.py::test_full_mnist_acceptance",
    "tests/test_train.py::test_each_zoo_model_trains_and_exports[bncnn]",
    "tests/test_train.py::test_bad_params_fail_before_training",
    "tests/test_evaluate.py::test_predictions_and_metrics_agree_with_sklearn",
    "tests/test_track.py::test_tracking_uri_is_absolute_and_belongs_to_the_repo",
]

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider"]


def repository_files() -> list[str]:
    """What a clone holds once the work in progress is committed: tracked files and files git
    does not ignore (deleted ones left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (REPO / name).is_file()})


def copy_repository(target: Path) -> Path:
    for name in repository_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    return target


def edit(config_file: Path, **sections: dict) -> None:
    config = yaml.safe_load(config_file.read_text())
    for section, changes in sections.items():
        config[section] = {**config.get(section, {}), **changes}
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def mlp_one_epoch(copy: Path, mnist_train) -> None:
    """What `dvc exp apply` of `dvc exp run -S model=mlp -S train.max_epochs=1` leaves."""
    compose(copy / "params.yaml", "model=mlp", "train.max_epochs=1", conf=copy / "conf")


def kaggle_block(copy: Path, mnist_train) -> None:
    """The README's Kaggle settings, with a small Kaggle-style train.csv and test.csv."""
    images, labels = mnist_train
    folder = copy / "data/raw/kaggle"
    folder.mkdir(parents=True)
    write_csv(folder / "train.csv", images[:1000], labels[:1000])
    write_csv(folder / "test.csv", images[1000:1200], None)
    edit(
        copy / "conf/config.yaml",
        data={
            "train": {"csv": "data/raw/kaggle/train.csv"},
            "test": None,
            "test_fraction": 0.1,
            "predict": {"csv": "data/raw/kaggle/test.csv"},
            "checksums": {},
        },
    )
    compose(copy / "params.yaml", conf=copy / "conf")  # as `make params` or `dvc exp run`


@pytest.mark.parametrize("change", [mlp_one_epoch, kaggle_block], ids=["mlp", "kaggle"])
def test_the_suite_passes_after_a_params_edit(tmp_path, mnist_train, change):
    copy = copy_repository(tmp_path / "repo")
    change(copy, mnist_train)
    params = load_params(copy / "params.yaml")  # the edit is valid params
    assert params.model.arch == "mlp" or params.data.train.csv is not None
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    where = subprocess.run(
        [sys.executable, "-c", "import digitpipe; print(digitpipe.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(copy / "src")  # the copy's code runs
    result = subprocess.run(
        [*PYTEST, "--basetemp", str(tmp_path / "basetemp"), *SAMPLE],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = result.stdout.strip().splitlines()[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.keys() <= {"passed", "warning", "warnings"}, summary  # no skip, no xfail
    assert counts["passed"] >= len(SAMPLE), summary
