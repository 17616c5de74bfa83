"""`digitpipe retrain` on a tiny pipeline with real dvc and a real MLflow server: a first model
below the floor is registered but not promoted; a batch dropped into data/raw/incoming trains a
challenger that is judged with the champion on the same test images (checked against
statsmodels' exact McNemar test) and gets a drift report; an unchanged rerun is "nothing new";
two retrains never overlap."""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers.data import QUICK_TRAIN, write_csv
from helpers.processes import (
    default_sigint,
    stage_processes,
    stopped_after_a_checkpoint,
    wait_until,
)
from helpers.project import edit_params, tracked_pipeline
from helpers.tracking import experiment_runs
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from statsmodels.stats.contingency_tables import mcnemar

from digitpipe.core.lifetime import Process, alive
from digitpipe.dataset.parquet import read_split
from digitpipe.model.export import load_model
from digitpipe.model.inference import predict_probabilities
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.retrain.command import LOCK_FILE, STOPPED, exclusive

pytestmark = pytest.mark.slow
DIGITPIPE = str(Path(sys.executable).parent / "digitpipe")
NAME = "tiny-digits"


def start(
    project: Path, env: dict[str, str], *args: str, sigint: Callable[[], None] = default_sigint
) -> subprocess.Popen:
    """`digitpipe retrain ARGS`, SIGINT delivered (``sigint`` sets how, before it starts)."""
    return subprocess.Popen(
        [DIGITPIPE, "retrain", *args],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=sigint,
    )


def retrain(project: Path, env: dict[str, str], *args: str) -> str:
    """The command's output, checked: exit 0, lines of at most 100 columns, nothing from
    MLflow's registry ("Successfully registered model ...")."""
    process = start(project, env, *args)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output
    assert "Successfully registered" not in output and "Created version" not in output, output
    if "--history" not in args:
        assert max(map(len, message(output).splitlines())) <= 100, output
    return output


def message(output: str) -> str:
    """The retrain's own message: from its last line starting "digitpipe retrain: " on (dvc
    and the stages print before it)."""
    return output[output.rindex("digitpipe retrain: ") :]


def flat(output: str) -> str:
    """The output with its line breaks and indents as single spaces (messages are wrapped)."""
    return " ".join(output.split())


def correct(model_dir: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    net, spec = load_model(model_dir)
    probabilities = predict_probabilities(net, images, 256, spec.test_time_shift)
    return probabilities.argmax(axis=1) == labels


@pytest.fixture()
def pipeline(tiny_project, mlflow_server):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    env = tracked_pipeline(
        tiny_project, tracking_uri=mlflow_server, experiment="retrain-test", registered_model=NAME
    )
    return tiny_project, env, MlflowClient(mlflow_server)


def test_retrain_gate_drift_and_nothing_new(pipeline, mnist_train, tmp_path):
    project, env, client = pipeline
    images, labels = mnist_train

    # (a) The first model, far below track.min_accuracy (0.9): registered, not promoted.
    output = retrain(project, env)
    assert message(output).startswith("digitpipe retrain: version 1 not promoted.\n"), output
    assert "why: no champion yet" in flat(output)
    assert "is below track.min_accuracy 0.9: registered, not promoted" in flat(output)
    first = client.get_model_version(NAME, "1")
    assert first.tags["decision"] == "kept" and first.tags["champion_version"] == ""
    assert float(first.tags["test_accuracy"]) < 0.9 and first.tags["test_images"] == "200"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(NAME, "champion")

    # A lower floor judges the same model again (nothing retrains) and promotes it.
    edit_params(project, "track", min_accuracy=0.0)
    output = retrain(project, env)
    assert "version 1 promoted to champion. why: no champion yet, and test accuracy" in flat(output)
    assert client.get_model_version_by_alias(NAME, "champion").version == "1"
    assert len(experiment_runs(client, "retrain-test")) == 1

    # (b) A deliberately unbalanced batch (only 1s and 7s) arrives in the drop folder.
    pool = np.arange(1000, 4000)
    batch = pool[np.isin(labels[pool], [1, 7])][:150]
    incoming = project / "data/raw/incoming"
    incoming.mkdir(parents=True)
    write_csv(incoming / "2025-06-02.csv", images[batch], labels[batch])
    output = retrain(project, env)
    summary = json.loads((project / "reports/ingest/summary.json").read_text())
    assert summary["incoming"]["batches"]["2025-06-02"]["count"] == 150
    train_ids = set(read_split(project / split_file("train")).ids)
    assert "incoming/2025-06-02-000000" in train_ids | set(
        read_split(project / split_file("val")).ids
    )
    second = client.get_model_version(NAME, "2")
    tags = second.tags

    # Champion (its logged safetensors) and challenger on the same test images, independently.
    test = read_split(project / split_file("test"))
    champion_dir = client.download_artifacts(first.run_id, "weights", str(tmp_path))
    champion_ok = correct(Path(champion_dir), test.images, test.labels)
    challenger_ok = correct(project / MODEL_DIR, test.images, test.labels)
    b = int(np.sum(champion_ok & ~challenger_ok))
    c = int(np.sum(challenger_ok & ~champion_ok))
    table = [
        [int(np.sum(champion_ok & challenger_ok)), b],
        [c, int(np.sum(~champion_ok & ~challenger_ok))],
    ]
    p = float(mcnemar(table, exact=True).pvalue)
    assert tags["test_images"] == str(len(test)) == "200"
    assert tags["champion_version"] == "1"
    assert float(tags["test_accuracy"]) == pytest.approx(challenger_ok.mean(), abs=1e-6)
    assert float(tags["champion_accuracy"]) == pytest.approx(champion_ok.mean(), abs=1e-6)
    assert (tags["champion_only_correct"], tags["challenger_only_correct"]) == (str(b), str(c))
    assert float(tags["mcnemar_p_value"]) == pytest.approx(p, rel=1e-5)
    promote = challenger_ok.mean() > champion_ok.mean() and p < 0.05
    assert tags["decision"] == ("promoted" if promote else "kept")
    assert f"exact McNemar p = {p:.4g}" in tags["reason"] and tags["reason"] in flat(output)
    verb = "promoted to champion" if promote else "not promoted"
    assert f"digitpipe retrain: version 2 {verb}.\n" in output
    champion = client.get_model_version_by_alias(NAME, "champion").version
    assert champion == ("2" if promote else "1")

    # The drift report: written, logged to the run, linked from the version, flags the batch.
    report = json.loads((project / "reports/retrain/drift.json").read_text())
    assert report["new"] == {"images": 150, "batches": {"2025-06-02": 150}}
    assert report["reference"]["images"] == 540  # what version 1 was trained on
    assert report["classes"]["p_value"] < 0.01
    assert report["flags"][0].startswith("class frequencies differ from the reference")
    assert "class frequencies differ" in tags["drift_flags"]
    flagged = f"drift: {len(report['flags'])} of {report['checks']} checks"
    assert f"{flagged} flag" in output and "see reports/retrain/drift.md." in output
    on_batch = correct(Path(champion_dir), images[batch], labels[batch])
    assert report["champion_on_new"]["correct"] == int(on_batch.sum())
    assert report["champion_on_new"]["per_batch"]["2025-06-02"]["images"] == 150
    assert tags["drift_report"] == f"runs:/{second.run_id}/retrain/drift.md"
    logged = {a.path for a in client.list_artifacts(second.run_id, "retrain")}
    assert logged == {"retrain/drift.md", "retrain/drift.json", "retrain/data_stats.json"}
    page = (project / "reports/retrain/drift.md").read_text()
    assert "## Class frequencies" in page and "2025-06-02 (150)" in page

    # (c) Unchanged: two retrains at once; one waits for nothing, the other trains nothing.
    runs = len(experiment_runs(client, "retrain-test"))
    racers = [start(project, env) for _ in range(2)]
    outputs = [racer.communicate(timeout=600)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    skipped = [out for out in outputs if "skipped: another retrain is running" in out]
    unchanged = [
        out for out in outputs if "digitpipe retrain: nothing new: version 2 " in flat(out)
    ]
    assert len(skipped) == 1 and len(unchanged) == 1, outputs
    assert len(experiment_runs(client, "retrain-test")) == runs
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2

    # A store that never saw this model (a scheduled job without a tracking server, after
    # `dvc pull`): nothing to register, said so, exit 0, and the store gains no model.
    empty_store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    output = retrain(project, env | {"MLFLOW_TRACKING_URI": empty_store})
    assert f"nothing new: no run in the MLflow store {empty_store} trained the model" in flat(
        output
    )
    assert not MlflowClient(empty_store).search_registered_models()

    # The history, oldest first, the champion starred.
    lines = retrain(project, env, "--history").splitlines()
    assert lines[1].split()[:3] == ["version", "judged", "train"]
    assert lines[2].split()[0] == ("1" if promote else "1*")
    row = lines[3].split()
    assert row[0] == ("2*" if promote else "2") and row[-1] == tags["decision"]
    assert tags["mcnemar_p_value"] in row and tags["test_accuracy"] in row


def test_a_retrain_never_overlaps_a_running_one(tiny_project):
    edit_params(tiny_project, "track", enabled=True)
    env = dict(os.environ)
    with exclusive(tiny_project / LOCK_FILE, 0):  # as a running retrain holds it
        for wait in ("0", "1"):
            output = retrain(tiny_project, env, "--wait", wait)
            assert "digitpipe retrain: skipped: another retrain is running" in output
    assert not (tiny_project / "data/processed").exists()  # nothing ran


def descendants(pid: int) -> list[Process]:
    """The live processes below ``pid``: its children, theirs, and so on."""
    processes = [
        alive(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()
    ]
    below, parents = [], {pid}
    for _ in range(8):  # retrain, dvc, a shell wrapper perhaps, the stage: well within 8 levels
        found = [p for p in processes if p is not None and p.parent in parents and p not in below]
        below += found
        parents |= {p.pid for p in found}
    return below


SIGINT_BIT = 1 << (signal.SIGINT - 1)  # in /proc/PID/status's masks of pending signals


def pending(pid: int) -> int:
    """The signals pending for process ``pid`` (its own and its thread group's), as a mask."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$", status, re.MULTILINE)
    return functools.reduce(operator.or_, (int(mask, 16) for mask in masks), 0)


def test_sigterm_ends_the_pipeline_and_the_next_retrain_runs_at_once(pipeline):
    """A retrain ended with SIGTERM during training ends its `dvc repro` and the stage with it
    (they held DVC's locks against the next retrain); the next retrain resumes the training.
    Started as a script's background job starts it, SIGINT ignored: its group still gets the
    SIGINT that ends it (it was lost, and the group killed 60 s later, its run left RUNNING)."""
    project, env, client = pipeline
    edit_params(project, "train", max_epochs=8, limit_batches=12)
    # Its own experiment and model: the module's server holds the other test's.
    edit_params(project, "track", experiment="retrain-sigterm", registered_model="sigterm")
    process = start(project, env, sigint=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))

    def train_pid() -> int:
        (pid,) = stage_processes(project, "stages/train.py")
        return pid

    # Held (SIGSTOP) once it has a checkpoint, so that it cannot finish its few tiny epochs
    # before the retrain's signal reaches it (under load it once did: nothing left to resume).
    stage = stopped_after_a_checkpoint(project, train_pid, lambda: process.poll() is not None)
    below = descendants(process.pid)
    assert any(p.pid == stage for p in below), below
    process.send_signal(signal.SIGTERM)
    # Let the stage go on only once the retrain has passed the signal on (SIGINT to its group).
    assert wait_until(lambda: pending(stage) & SIGINT_BIT, 120), "the stage got no SIGINT"
    os.kill(stage, signal.SIGCONT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM, output
    assert STOPPED in output, output
    # The same process still there (its start time tells a reused pid), if reparented to init.
    left = [p for p in below if (now := alive(p.pid)) is not None and now.started == p.started]
    assert not left, f"left running after the retrain ended: {left}"

    output = retrain(project, env)
    assert "digitpipe retrain: version 1 " in output, output
    assert "Resuming from" in output, output
    (run,) = experiment_runs(client, "retrain-sigterm")  # the interrupted one, resumed
    assert run.info.status == "FINISHED"


def test_a_champion_without_a_run_is_not_compared_and_the_new_model_judged_alone(
    pipeline, tmp_path
):
    """Also: a retrain leaves no temporary file or folder behind (its TMPDIR ends empty)."""
    project, env, client = pipeline
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = env | {
        "TMPDIR": str(scratch),
        # Not digitpipe's: torch's compile cache (an empty folder made when Lightning imports
        # torch._dynamo), and DVC's usage report per command (a file a detached DVC process
        # sends and removes; left behind where it cannot send it, as here, offline).
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "torch-cache"),
        "DVC_NO_ANALYTICS": "1",
    }
    # Its own experiment and model: the module's server holds the other tests'.
    name = "runless-champion"
    edit_params(project, "track", experiment="retrain-runless", registered_model=name)
    client.create_registered_model(name)  # version 1: registered from outside any run
    client.create_model_version(name, "s3://elsewhere/model", run_id=None)
    client.set_registered_model_alias(name, "champion", "1")
    edit_params(project, "track", min_accuracy=0.0)
    output = retrain(project, env)
    assert (
        "version 2 promoted to champion. why: champion version 1 cannot be compared: it has no "
        "run (it was registered from elsewhere), and test accuracy" in flat(output)
    ), output
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_model_version(name, "2").tags["champion_version"] == "1"
    assert "nothing new: version 2 " in flat(retrain(project, env))
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert list(scratch.iterdir()) == []
