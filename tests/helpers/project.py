"""Test projects: params edits, the pipeline as a git + DVC repo, its clones, and stages run
in-process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from dvc.utils.hydra import compose_and_dump

from digitpipe.core.config import load_params
from digitpipe.dataset.idx import write_idx
from helpers.data import REPO, default_params

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
CONF = REPO / "conf"
STAGES = ["ingest", "train", "evaluate", "activations", "report"]  # dvc.yaml's, in order
# The stages are imported where they run: every test imports this module, and the train stage
# brings Lightning (seconds) to tests that never train.


def edit_params(project: Path, section: str, **changes) -> None:
    """Update keys of one params.yaml section in a test project."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.setdefault(section, {}).update(changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def ingest(project: Path) -> dict:
    """The ingest stage, in-process, on ``project``'s params; its summary."""
    from digitpipe.ingest.run import run

    return run(load_params(project / "params.yaml"), project)


def trained_model(project: Path, images, labels, data: dict, train: dict) -> Path:
    """A model trained by the ingest and train stages on ``images`` (IDX, raw) in ``project``,
    tracking off; returns its folder."""
    from digitpipe.train.run import run as train_stage

    write_idx(images, project / "train-images")
    write_idx(labels, project / "train-labels")
    sources = {"train": {"images": "train-images", "labels": "train-labels"}}
    params = default_params(
        sources | data, train=train, track={"enabled": False}, runtime={"progress": "none"}
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ingest(project)
    train_stage(load_params(project / "params.yaml"), project)
    return project / "models"


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


def tracked_pipeline(project: Path, **track) -> dict[str, str]:
    """The test project as a pipeline repo (see :func:`init_pipeline_repo`) that tracks with
    the ``track`` settings given; the env to run DVC in, with no MLFLOW_TRACKING_URI of the
    caller's to override them."""
    edit_params(project, "track", enabled=True, **track)
    env = init_pipeline_repo(project)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def dvc(project: Path, env: dict[str, str], *args: str) -> str:
    """Run a dvc command in a test project; fail the test with its output if it fails."""
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def git(project: Path, *args: str) -> str:
    """Run a git command (as a test user) in ``project``; its output, stripped."""
    result = subprocess.run([*GIT, *args], cwd=project, check=True, capture_output=True, text=True)
    return result.stdout.strip()


def commit_all(project: Path, message: str = "project") -> None:
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)


def fresh_clone(project: Path, clone: Path) -> Path:
    """A git clone of ``project`` at ``clone``."""
    git(clone.parent, "clone", "-q", str(project), str(clone))
    return clone


def committed_clone(project: Path, env: dict[str, str], clone: Path) -> dict[str, str]:
    """Commit the pipeline repo ``project`` and clone it at ``clone``; the env that runs the
    clone's own copy of the code."""
    commit_all(project, "pipeline")
    fresh_clone(project, clone)
    return {**env, "PYTHONPATH": str(clone / "src")}


def copy_pipeline(source: Path, env: dict[str, str], copy: Path) -> dict[str, str]:
    """A copy at ``copy`` of the pipeline repo ``source`` (git, DVC cache, outputs), to change
    without touching the original; the env that runs the copy's own code."""
    shutil.copytree(source, copy, symlinks=True)
    return {**env, "PYTHONPATH": str(copy / "src")}


def ran(output: str) -> list[str]:
    """The stages `dvc repro` executed, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def compose(target: Path, *overrides: str, conf: Path = CONF) -> Path:
    """params.yaml as `dvc exp run -S <overrides>` writes it (DVC's own function)."""
    compose_and_dump(target, str(conf), None, "config", str(conf.parent), list(overrides))
    return target


def committed_with_hydra(project: Path, env: dict[str, str]) -> None:
    """The pipeline repo ``project`` with conf/ (the tiny data in config.yaml, quick CPU
    training, no tracking) and hydra on, run and committed."""
    shutil.copytree(CONF, project / "conf")
    config = yaml.safe_load((CONF / "config.yaml").read_text())
    config["data"] = yaml.safe_load((project / "params.yaml").read_text())["data"]
    config["train"] |= {"limit_batches": 2, "accelerator": "cpu"}
    config |= {"track": {"enabled": False}, "runtime": {"progress": "none"}}
    (project / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    compose(project / "params.yaml", conf=project / "conf")
    dvc(project, env, "config", "hydra.enabled", "true")
    assert ran(dvc(project, env, "repro")) == STAGES
    commit_all(project, "pipeline")


def run_cli(project: Path, monkeypatch, *argv: str) -> int:
    """`digitpipe ARGV` in-process with ``project`` as the current folder; its exit status."""
    from digitpipe.cli import main

    monkeypatch.chdir(project)
    return main(list(argv))


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` with a file of zeros until only ``leave`` bytes are free."""
    info = os.statvfs(disk)
    size = info.f_bavail * info.f_frsize - leave
    chunk = b"\0" * 2**20
    with (disk / "filler").open("wb") as handle:
        while size > 0:
            size -= handle.write(chunk[: min(size, len(chunk))])
