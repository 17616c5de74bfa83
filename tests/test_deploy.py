"""deploy/retrain.sh, which cron and systemd run: pull (a failed pull ends the run; `make pull`
succeeds on an empty remote, see test_remotes.py), retrain, push only after a successful
retrain, never two at once. Here `make` and `digitpipe` are stand-ins that record their calls."""

from __future__ import annotations

import fcntl
import shutil
import subprocess

import pytest
from helpers.data import REPO

pytestmark = pytest.mark.skipif(
    not (shutil.which("make") and shutil.which("flock")), reason="needs make and flock"
)


def clone(tmp_path, retrain_status: int, pull_status: int = 0):
    root = tmp_path / "clone"
    (root / "deploy").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "retrain.sh", root / "deploy")
    (root / "Makefile").write_text(
        f"pull:\n\techo pull >> calls; exit {pull_status}\npush:\n\techo push >> calls\n"
    )
    digitpipe = root / ".venv" / "bin" / "digitpipe"
    digitpipe.parent.mkdir(parents=True)
    digitpipe.write_text(f'#!/bin/sh\necho "$*" >> calls\nexit {retrain_status}\n')
    digitpipe.chmod(0o755)
    return root


def run(root, *args):
    # Started from elsewhere, as cron does: the script finds its clone.
    return subprocess.run(
        ["sh", str(root / "deploy" / "retrain.sh"), *args],
        cwd=root.parent,
        capture_output=True,
        text=True,
    )


def test_pull_retrain_push(tmp_path):
    root = clone(tmp_path, 0)
    result = run(root, "--wait", "600")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "calls").read_text().splitlines() == ["pull", "retrain --wait 600", "push"]


def test_a_failed_pull_retrains_nothing(tmp_path):
    """A remote that cannot be used (a missing plugin, wrong credentials) fails the run at once:
    its push would fail too, after a retrain from scratch."""
    root = clone(tmp_path, 0, pull_status=2)
    result = run(root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "make pull failed" in result.stdout
    assert (root / "calls").read_text().splitlines() == ["pull"]


def test_a_failed_retrain_pushes_nothing(tmp_path):
    root = clone(tmp_path, 2)
    assert run(root).returncode == 2
    assert (root / "calls").read_text().splitlines() == ["pull", "retrain"]


def test_a_second_run_skips(tmp_path):
    root = clone(tmp_path, 0)
    (root / ".digitpipe").mkdir()
    with open(root / ".digitpipe" / "schedule.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run(root)
    assert result.returncode == 0 and "skipped" in result.stdout
    assert not (root / "calls").exists()
