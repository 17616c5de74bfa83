"""Faults mid-run: a killed `dvc repro` leaves no orphan and no RUNNING MLflow run, and the rerun
resumes; a diverging or unlaunchable training stops with a message; leftovers are cleaned."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.data import REPO
from helpers.errors import assert_user_error
from helpers.processes import (
    repro_stopped_in_training,
    stage_processes,
    wait_until,
)
from helpers.project import dvc, edit_params, tracked_pipeline
from helpers.tracking import experiment_runs
from mlflow.tracking import MlflowClient

from digitpipe.cli import main
from digitpipe.core.atomic import write_text
from digitpipe.core.config import load_params
from digitpipe.core.lifetime import POLL_SECONDS, alive
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import CHECKPOINT_ROOT, MODEL_DIR
from digitpipe.train.checkpoint import read_checkpoint
from digitpipe.train.recipes import resolve_recipe
from digitpipe.train.run import run_key


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"], ids=["shell-stays", "shell-execs"])
def test_killed_repro_leaves_no_orphan_and_no_running_run(tiny_project, tmp_path, shell):
    """DVC runs a stage's command with $SHELL -c: bash execs it, dash (Debian's /bin/sh) stays
    as the stage's parent and outlives the killed dvc."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    edit_params(tiny_project, "train", max_epochs=8, batch_size=32, limit_batches=12)
    edit_params(tiny_project, "runtime", progress="lines")
    env = tracked_pipeline(tiny_project, tracking_uri=store, experiment="faults")
    env["SHELL"] = shell
    repro, train = repro_stopped_in_training(tiny_project, env)
    repro.send_signal(signal.SIGKILL)
    repro.wait()
    # Continued, it gets the parent-death signal dvc's end sent it, or (beyond a shell that
    # stays) its watch thread, which looks every POLL_SECONDS, sees dvc gone at its next look.
    time.sleep(2 * POLL_SECONDS)
    os.kill(train, signal.SIGCONT)
    # 30 s guards against a hang on a loaded machine; a stage that trained on to the end instead
    # of dying would have exported its model (and left its run FINISHED, not KILLED).
    orphans_gone = wait_until(lambda: not stage_processes(tiny_project, "stages/train.py"), 30)
    assert orphans_gone, "the train stage outlived the killed dvc repro"
    assert not (tiny_project / MODEL_DIR).exists(), "the killed train stage trained on"
    rerun = dvc(tiny_project, env, "repro")
    assert "Resuming from" in rerun, rerun
    client = MlflowClient(store)
    # The resumed training continued the interrupted run: one run holds every epoch.
    (run,) = experiment_runs(client, "faults")
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert sorted(steps) == list(range(1, 9))


SLEEPING_STAGE = (
    "import os, pathlib, time\n"
    "from digitpipe.core.lifetime import die_with_launcher\n"
    "die_with_launcher()\n"
    "try:\n"
    "    pathlib.Path('started').write_text(str(os.getpid()))\n"
    "    time.sleep(120)\n"
    "finally:\n"
    "    pathlib.Path('cleaned up').touch()\n"
)


def start_stage_beyond_a_shell(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """A launcher running the sleeping stage through `sh -c` (`; true`: no shell execs it);
    the launcher and the stage's pid once it has started."""
    (folder / "stage.py").write_text(SLEEPING_STAGE)
    command = f"{sys.executable} stage.py; true"
    spawn = f"import subprocess; subprocess.run(['/bin/sh', '-c', {command!r}])"
    launcher = subprocess.Popen([sys.executable, "-c", spawn], cwd=folder, env=env)
    assert wait_until(lambda: (folder / "started").exists(), 60)
    return launcher, int((folder / "started").read_text())


def test_a_dvc_stage_ends_with_its_launcher_beyond_a_shell(tmp_path):
    """A shell that stays between DVC and the stage outlives a dvc killed with SIGKILL; the
    stage still ends, through its cleanups."""
    launcher, _ = start_stage_beyond_a_shell(tmp_path, os.environ | {"DVC_STAGE": "train"})
    launcher.kill()
    launcher.wait()
    assert wait_until(lambda: (tmp_path / "cleaned up").exists(), 30), "the stage outlived it"


def test_a_stage_run_by_hand_outlives_its_launcher_and_ends_on_sigterm(tmp_path):
    """Outside DVC a stage is an ordinary program (`nohup python stages/train.py &` must survive
    its terminal); SIGTERM still ends it through its cleanups."""
    env = {key: value for key, value in os.environ.items() if key != "DVC_STAGE"}
    launcher, stage = start_stage_beyond_a_shell(tmp_path, env)
    launcher.kill()
    launcher.wait()
    time.sleep(4 * POLL_SECONDS)
    assert alive(stage) is not None and not (tmp_path / "cleaned up").exists()
    os.kill(stage, signal.SIGTERM)
    assert wait_until(lambda: (tmp_path / "cleaned up").exists(), 30)


@pytest.mark.parametrize("nohup", [False, True], ids=["terminal", "nohup"])
def test_a_hangup_ends_a_stage_through_its_cleanups_unless_ignored(tmp_path, nohup):
    """A closed terminal (SIGHUP) ends the stage through its cleanups, so no MLflow run stays
    RUNNING; under nohup (SIGHUP ignored) it goes on."""
    (tmp_path / "stage.py").write_text(SLEEPING_STAGE)
    hangup = signal.SIG_IGN if nohup else signal.SIG_DFL
    stage = subprocess.Popen(
        [sys.executable, "stage.py"],
        cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, hangup),
    )
    assert wait_until(lambda: (tmp_path / "started").exists(), 60)
    stage.send_signal(signal.SIGHUP)
    if nohup:
        time.sleep(2 * POLL_SECONDS)
        assert stage.poll() is None
        stage.terminate()
    assert stage.wait(30) == 128 + (signal.SIGTERM if nohup else signal.SIGHUP)
    assert (tmp_path / "cleaned up").exists()


def test_diverging_training_stops_and_exports_nothing(ingested, monkeypatch, capsys):
    # A learning rate is capped at 100; a weight decay of 1e30 still blows the weights up.
    edit_params(ingested, "train", optimizer="sgd", weight_decay=1e30, scheduler="none", ema=0)
    monkeypatch.chdir(ingested)
    message = assert_user_error((main(["train"]), capsys))
    assert "training diverged" in message and "train.lr" in message
    assert not (ingested / MODEL_DIR).exists()


def test_non_finite_learning_rate_is_refused(ingested, monkeypatch, capsys):
    (ingested / "params.yaml").write_text(
        (ingested / "params.yaml").read_text().replace("lr: null", "lr: .inf")
    )
    monkeypatch.chdir(ingested)
    assert_user_error((main(["train"]), capsys), "train.lr: Input should be a finite number")


def test_several_nodes_without_a_launcher_are_refused(ingested, monkeypatch, capsys):
    for name in ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    edit_params(ingested, "train", num_nodes=2)
    monkeypatch.chdir(ingested)
    message = assert_user_error((main(["train"]), capsys))
    assert "num_nodes is 2" in message and "torchrun" in message


def resume_folder(project: Path) -> Path:
    """Where an interrupted run of the project's params would have left its checkpoints."""
    params = load_params(project / "params.yaml")
    recipe = resolve_recipe(params.model.arch, params.train)
    splits = [project / split_file(name) for name in ("train", "val")]
    return project / CHECKPOINT_ROOT / run_key(params, recipe, splits)


def test_a_corrupt_resume_checkpoint_is_set_aside(ingested, monkeypatch, capsys):
    edit_params(ingested, "train", max_epochs=2)
    monkeypatch.chdir(ingested)
    assert main(["train"]) == 0
    exported = (ingested / MODEL_DIR / "model.safetensors").read_bytes()
    # A truncated last.ckpt where an interrupted run of the same params would have left it.
    folder = resume_folder(ingested)
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    capsys.readouterr()
    assert main(["train"]) == 0
    output = capsys.readouterr().out
    assert "cannot be read" in output and "starting afresh" in output
    assert (ingested / MODEL_DIR / "model.safetensors").read_bytes() == exported


def test_a_resume_checkpoint_that_does_not_fit_the_network_is_set_aside(
    ingested, monkeypatch, capsys
):
    """An interrupted run's checkpoint that loads but no longer fits the network (its code
    changed a layer's size) is set aside with a message; training starts afresh."""
    edit_params(ingested, "train", max_epochs=2)
    monkeypatch.chdir(ingested)
    assert main(["train"]) == 0
    exported = (ingested / MODEL_DIR / "model.safetensors").read_bytes()
    checkpoint = read_checkpoint(ingested / MODEL_DIR / "model.ckpt")
    name, weight = next((k, v) for k, v in checkpoint["state_dict"].items() if v.ndim > 1)
    checkpoint["state_dict"][name] = torch.zeros(weight.shape[0] + 1, *weight.shape[1:])
    folder = resume_folder(ingested)
    folder.mkdir(parents=True)
    torch.save(checkpoint, folder / "last.ckpt")
    capsys.readouterr()
    assert main(["train"]) == 0
    output = capsys.readouterr().out
    assert f"does not fit the network ({name} is [{weight.shape[0] + 1}," in output, output
    assert "last.ckpt.mismatch, starting afresh" in output
    assert (ingested / MODEL_DIR / "model.safetensors").read_bytes() == exported


KEY_OF_THIS_CODE = """
from pathlib import Path
from digitpipe.core.config import load_params
from digitpipe.train.recipes import resolve_recipe
from digitpipe.train.run import run_key
params = load_params(Path("params.yaml"))
recipe = resolve_recipe(params.model.arch, params.train)
print(run_key(params, recipe, [Path("data/processed/train.parquet")]))
"""


@pytest.mark.slow
def test_the_resume_key_follows_the_model_code(ingested, tmp_path):
    """A checkpoint is resumed only by the code that wrote it: a layer widened in the zoo's
    source changes the checkpoint folder's name."""

    def key(src: Path) -> str:
        env = os.environ | {"PYTHONPATH": str(src)}
        command = [sys.executable, "-c", KEY_OF_THIS_CODE]
        return subprocess.run(
            command, cwd=ingested, env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    copy = tmp_path / "src"
    shutil.copytree(REPO / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
    unchanged = key(copy)
    zoo = copy / "digitpipe/model/zoo.py"
    zoo.write_text(zoo.read_text().replace(", 128)", ", 129)").replace("(128,", "(129,"))
    assert len(unchanged) == 16 and key(copy) != unchanged


def test_leftover_temporary_files_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "summary.json"
    leftover = tmp_path / ".summary.json.abc123.tmp"
    leftover.write_text("half")
    other = tmp_path / ".other.json.abc123.tmp"
    other.write_text("someone else's")
    write_text(target, "{}")
    assert target.read_text() == "{}" and not leftover.exists() and other.exists()


def test_a_group_started_where_sigint_is_ignored_gets_it(tmp_path):
    """`digitpipe retrain` started as a script's background job ignores SIGINT; the group it
    starts does not (the SIGINT that ends the group was lost), and the retrain still ignores it."""
    ignored = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    script = (
        "import signal, sys\n"
        "from digitpipe.core.lifetime import run_as_group\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"run_as_group([sys.executable, '-c', {ignored!r}])\n"
        f"{ignored}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "True"], done.stdout
