"""Experiments as docs/experiments.md runs them, with the real `dvc exp run` composing params.yaml
from conf/ (Hydra) in a temporary git repo: DVC shows and diffs every recipe key of a bncnn and a
lenet experiment, its tables lead with test accuracy and fit 100 columns, and a return to the
committed params executes nothing."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest
from helpers.project import copy_pipeline, dvc, git, ran

pytestmark = pytest.mark.slow
EXPERIMENTS = ("lenet-exp", "bncnn-exp")
RECIPE_KEYS = ("train.lr", "train.optimizer", "train.max_epochs", "train.batch_size")
WIDTH = 100
# The comparison tables docs/experiments.md gives, and the columns each must show in full.
TABLES = {
    "Experiment|test\\.accuracy|model\\.arch|train\\.(optimizer|lr)$": [
        "test.accuracy",
        "model.arch",
        "train.optimizer",
        "train.lr",
    ],
    "Experiment|test\\.accuracy|train\\.(max_epochs|batch_size)$": [
        "test.accuracy",
        "train.max_epochs",
        "train.batch_size",
    ],
}


def table(project, env, *args: str) -> str:
    """`dvc exp show` as a terminal of WIDTH columns shows it."""
    result = subprocess.run(
        ["dvc", "exp", "show", "--no-pager", *args],
        cwd=project,
        env=env | {"COLUMNS": str(WIDTH)},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_dvc_sees_every_recipe_key_and_leads_with_test_accuracy(hydra_pipeline, tmp_path):
    project = tmp_path / "project"
    env = copy_pipeline(*hydra_pipeline, project)
    # Each experiment from the commit, as docs/experiments.md runs them.
    for name, override in (("lenet-exp", "model=lenet"), ("bncnn-exp", "train.lr=0.005")):
        dvc(project, env, "exp", "run", "-n", name, "-S", override)
        git(project, "checkout", "HEAD", "--", "params.yaml", "dvc.lock")
    # Back at the committed params after `dvc exp run -S train.lr=0.005`: nothing executes.
    back = dvc(project, env, "repro")
    assert ran(back) == [], back

    rows = {
        row["Experiment"]: row
        for row in csv.DictReader(io.StringIO(dvc(project, env, "exp", "show", "--csv")))
    }
    assert {name: [rows[name][key] for key in RECIPE_KEYS] for name in EXPERIMENTS} == {
        "lenet-exp": ["0.05", "sgd", "20", "100"],
        "bncnn-exp": ["0.005", "adamw", "5", "128"],
    }
    diff = json.loads(dvc(project, env, "params", "diff", *EXPERIMENTS, "--json"))
    changed = diff["params.yaml"]
    assert {key: (changed[key]["old"], changed[key]["new"]) for key in RECIPE_KEYS} == {
        "train.lr": (0.05, 0.005),
        "train.optimizer": ("sgd", "adamw"),
        "train.max_epochs": (20, 5),
        "train.batch_size": (100, 128),
    }

    # The only metric is evaluate's headline: test accuracy is the first column after the
    # experiment's name and date, so --only-changed shows it at 100 columns.
    accuracies = {rows[name]["test.accuracy"] for name in EXPERIMENTS}
    assert len(accuracies) == 2, accuracies  # else --only-changed rightly hides the column
    changed_only = table(project, env, "--only-changed")
    assert max(map(len, changed_only.splitlines())) <= WIDTH, changed_only
    # (rich narrows other columns to fit, "Created" to "Creat…", but not this one)
    assert changed_only.splitlines()[1].split()[2] == "test.accuracy", changed_only
    for keep, columns in TABLES.items():
        shown = table(project, env, "--drop", ".*", "--keep", keep)
        assert max(map(len, shown.splitlines())) <= WIDTH, shown
        assert shown.splitlines()[1].split() == ["Experiment", *columns], shown  # none cut off
