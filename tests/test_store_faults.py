"""Broken model files, broken tracking stores and OS write errors (issue 17): each is one message
naming what and where, exit status 2, no traceback, nothing written.

Disk full is tested without filling a disk: writes to /dev/full fail with ENOSPC, so a stand-in
stage that writes there goes through the real error boundary (`run_stage`); the other fixable
errors (quota, read-only file system) are OSErrors given to the same boundary, and permission
denied runs the real ingest stage in a read-only project (skipped as root, which ignores file
permissions). Subprocess timeouts only guard against hangs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.data import REPO, default_params, mnist_data, write_csv
from helpers.errors import assert_user_error
from helpers.model import untrained_model
from helpers.processes import (
    PAUSE_AFTER_A_CHECKPOINT,
    PAUSE_FILE,
    Measured,
    measured_digitpipe,
    paused_after_a_checkpoint,
    train_stage,
)
from helpers.project import edit_params, fill, run_cli
from helpers.servers import free_port
from mlflow.tracking import MlflowClient
from PIL import Image
from safetensors.torch import load_file, save_file

from digitpipe.cli import main
from digitpipe.core.stage import fail_os, run_stage
from digitpipe.outputs.activations import ACTIVATIONS_REPORTS
from digitpipe.outputs.evaluate import EVALUATE_REPORTS
from digitpipe.outputs.train import CHECKPOINT_ROOT, MODEL_DIR, SPEC_FILE, WEIGHTS_FILE
from digitpipe.predict.predictor import Predictor
from digitpipe.train.run import KEPT_CHECKPOINT

HANG_GUARD_S = 120
AS_ROOT = os.geteuid() == 0  # root reads and writes whatever the permissions say


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content: what a refused command must leave as is."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- model files


def picture(folder: Path) -> Path:
    path = folder / "digit.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(path)
    return path


def predict_a_picture(folder: Path, model: Path, monkeypatch) -> int:
    """`digitpipe predict` of a picture in ``folder`` with ``model``, in-process, writing
    ``folder/out.csv``; its exit status."""
    out = folder / "out.csv"
    return run_cli(
        folder,
        monkeypatch,
        "predict",
        str(picture(folder)),
        "--model",
        str(model),
        "--out",
        str(out),
    )


def edit_spec(model: Path, **changes: object) -> None:
    spec = json.loads((model / SPEC_FILE).read_text()) | changes
    (model / SPEC_FILE).write_text(json.dumps({k: v for k, v in spec.items() if v is not None}))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"mean": "abc"}, "mean must be a finite number, not 'abc'"),
        ({"mean": float("nan")}, "mean must be a finite number, not nan"),
        ({"std": float("inf")}, "std must be a finite number, not inf"),
        ({"std": 0}, "std must be positive"),
        ({"height": 20000, "width": 20000}, "images of 20000x20000 pixels; softmax takes"),
        ({"width": 0}, "images of 28x0 pixels"),
        ({"height": 28.5}, "height and width must be whole numbers"),
        ({"arch": "resnet"}, "unknown arch 'resnet'; known: softmax, mlp"),
        ({"class_names": "0123456789"}, "class_names must be a list of distinct strings"),
        ({"std": None}, "missing keys ['std']"),
        ({"test_time_shift": -1}, "test_time_shift must be a whole number of pixels from 0 to 4"),
        ({"test_time_shift": 9}, "test_time_shift must be a whole number of pixels from 0 to 4"),
        ({"test_time_shift": True}, "test_time_shift must be a whole number of pixels"),
    ],
)
def test_bad_model_json_is_refused_naming_the_file(tmp_path, monkeypatch, capsys, changes, words):
    model = untrained_model(tmp_path / "model")
    edit_spec(model, **changes)
    status = predict_a_picture(tmp_path, model, monkeypatch)
    assert_user_error((status, capsys), f"{model / SPEC_FILE}: ", words, "dvc repro train")
    assert not (tmp_path / "out.csv").exists()


def test_model_json_of_earlier_versions_predicts_without_moved_copies(
    tmp_path, monkeypatch, mnist_train
):
    model = untrained_model(tmp_path / "model")
    edit_spec(model, test_time_shift=None)  # written before test-time augmentation existed
    monkeypatch.chdir(tmp_path)
    rows = write_csv(tmp_path / "digits.csv", mnist_train[0][:5], None)
    out = tmp_path / "out.csv"
    assert main(["predict", str(rows), "--model", str(model), "--out", str(out)]) == 0
    assert Predictor.from_dir(model).spec.test_time_shift == 0 and out.exists()


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("empty", "not a complete safetensors file"),
        ("truncated", "not a complete safetensors file"),
        ("other network", "the weights do not fit the network model.json describes"),
        ("NaN weights", "tensor 'dense.weight' holds NaN or infinite values"),
        ("not JSON", "not valid JSON"),
        ("huge JSON", "larger than 1 MiB"),
        ("a folder", "not a regular file (a folder)"),
        ("missing", "cannot read the file (No such file or directory)"),
    ],
)
def test_bad_model_files_are_refused_naming_the_file(tmp_path, monkeypatch, capsys, damage, words):
    model = untrained_model(tmp_path / "model")
    weights = model / WEIGHTS_FILE
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "other network":
        untrained_model(tmp_path / "lenet", "lenet")
        weights.write_bytes((tmp_path / "lenet" / WEIGHTS_FILE).read_bytes())
    elif damage == "NaN weights":
        state = load_file(weights)
        state["dense.weight"][0, 0] = float("nan")
        save_file(state, weights)
    elif damage == "not JSON":
        (model / SPEC_FILE).write_text('{"arch": "softmax",')
    elif damage == "huge JSON":
        (model / SPEC_FILE).write_text(" " * 2**20 + (model / SPEC_FILE).read_text())
    elif damage == "a folder":
        weights.unlink()
        weights.mkdir()
    else:
        weights.unlink()
    bad = model / SPEC_FILE if "JSON" in damage else weights
    status = predict_a_picture(tmp_path, model, monkeypatch)
    assert_user_error((status, capsys), f"{bad}: cannot load the model", words)
    assert not (tmp_path / "out.csv").exists()


def measured_predict(cwd: Path, model: Path) -> Measured:
    """`digitpipe predict` in a fresh process: exit status, stderr and peak RSS (MiB)."""
    args = [str(picture(cwd)), "--model", str(model), "--out", str(cwd / "out.csv")]
    return measured_digitpipe(cwd, "predict", *args, hang_guard_s=HANG_GUARD_S)


def test_a_huge_network_in_model_json_is_refused_without_building_it(tmp_path):
    model = untrained_model(tmp_path / "model")
    edit_spec(model, arch="mlp", height=4096, width=4096)  # 2 G weights: 8.6 GB if built
    baseline = measured_predict(tmp_path, tmp_path / "no-model")
    run = measured_predict(tmp_path, model)
    assert_user_error(run, f"{model / WEIGHTS_FILE}", "do not fit", "6 tensors differ")
    assert run.rss_mb < baseline.rss_mb + 100, (run, baseline)


# ---------------------------------------------------------------- tracking stores


def sqlite_file(path: Path) -> Path:
    """A real SQLite database of a few dozen pages."""
    with sqlite3.connect(path) as db:
        db.execute("create table runs (id integer primary key, note text)")
        db.executemany("insert into runs (note) values (?)", [("x" * 200,)] * 500)
    db.close()
    return path


def damage_store(store: Path, kind: str) -> None:
    if kind == "junk":
        store.write_text("this is not a database\n")
    elif kind == "truncated":
        data = sqlite_file(store).read_bytes()
        store.write_bytes(data[: len(data) // 2])
    elif kind == "damaged pages":
        data = bytearray(sqlite_file(store).read_bytes())
        for page in range(1, len(data) // 4096):
            data[page * 4096 : page * 4096 + 16] = b"\x07" * 16
        store.write_bytes(bytes(data))
    else:  # read-only
        sqlite_file(store).chmod(0o444)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("junk", "is not an SQLite database"),
        ("truncated", "is truncated"),
        ("damaged pages", "cannot be read (database disk image is malformed)"),
        pytest.param(
            "read-only",
            "is not readable and writable by this user",
            marks=pytest.mark.skipif(AS_ROOT, reason="root ignores file permissions"),
        ),
    ],
)
def test_broken_store_is_one_message_naming_the_uri(
    tiny_project, tmp_path, monkeypatch, capsys, kind, words
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = tmp_path / "stores" / "mlflow.db"
    store.parent.mkdir()
    damage_store(store, kind)
    before = listing(store.parent)
    uri = f"sqlite:///{store}"
    edit_params(tiny_project, "track", tracking_uri=uri)
    monkeypatch.chdir(tiny_project)
    assert_user_error(
        (main(["retrain", "--history"]), capsys),
        f"MLflow store {uri}: {store}",
        words,
        "move the file",
    )
    assert listing(store.parent) == before


def test_history_of_a_store_that_does_not_exist_creates_none(tiny_project, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tiny_project)
    assert main(["retrain", "--history"]) == 0
    assert "no versions of digitpipe in sqlite:///" in capsys.readouterr().out
    assert sorted(path.name for path in tiny_project.iterdir()) == ["data", "params.yaml"]


def test_unknown_store_schema_is_one_message(tiny_project, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    MlflowClient(f"sqlite:///{tmp_path / 'made.db'}")  # a real store, schema and all
    store = tmp_path / "mlflow.db"  # a copy: MLflow keeps the first one open
    store.write_bytes((tmp_path / "made.db").read_bytes())
    with sqlite3.connect(store) as db:
        db.execute("update alembic_version set version_num = 'deadbeef'")
    db.close()
    edit_params(tiny_project, "track", tracking_uri=f"sqlite:///{store}")
    monkeypatch.chdir(tiny_project)
    assert_user_error(
        (main(["retrain", "--history"]), capsys), f"MLflow store sqlite:///{store} cannot be opened"
    )


def test_junk_store_stops_train_before_it_writes(ingested, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"\0" * 4096)
    edit_params(ingested, "track", enabled=True, tracking_uri=f"sqlite:///{store}")
    monkeypatch.chdir(ingested)
    assert_user_error((main(["train"]), capsys), f"{store} is not an SQLite database")
    assert not (ingested / MODEL_DIR).exists()
    # The later stages, too, check the store before their work rather than after it.
    edit_params(ingested, "track", enabled=False)
    assert main(["train"]) == 0
    edit_params(ingested, "track", enabled=True)
    for stage, reports in [("evaluate", EVALUATE_REPORTS), ("activations", ACTIVATIONS_REPORTS)]:
        assert_user_error((main([stage]), capsys), f"{store} is not an SQLite database")
        assert not (ingested / reports).exists()


def test_model_uri_against_a_dead_server_names_it(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"} | {"MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, "-m", "digitpipe.cli", "predict", str(picture(tmp_path))]
    command += ["--model-uri", "models:/digitpipe@champion", "--out", str(tmp_path / "out.csv")]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert_user_error(done, f"MLflow tracking server {uri} cannot be reached")
    assert "not found" not in done.stderr
    assert not (tmp_path / "out.csv").exists()


def test_model_uri_against_a_missing_store_creates_none(tmp_path, monkeypatch, capsys):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.chdir(tmp_path)
    args = ["predict", str(picture(tmp_path)), "--model-uri", "models:/digitpipe@champion"]
    assert_user_error((main(args), capsys), f"{store} does not exist")
    assert not store.exists() and not (tmp_path / "predictions.csv").exists()


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_model_uri_the_registry_lacks_names_what_it_has(
    store, tmp_path, monkeypatch, capsys, request
):
    """The store answered, so the advice is not to check that it is up: the name, alias or
    version is missing, and the message lists what there is."""
    uri = (
        request.getfixturevalue("mlflow_server")
        if store == "server"
        else f"sqlite:///{tmp_path}/m.db"
    )
    client = MlflowClient(uri)
    client.create_registered_model("digitpipe")
    run = client.create_run("0").info.run_id
    for _ in range(2):
        client.create_model_version("digitpipe", f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("digitpipe", "champion", "2")
    client.create_registered_model("empty")
    client.create_registered_model("foreign")  # a version registered from outside any run
    client.create_model_version("foreign", "s3://elsewhere/model", run_id=None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    expected = {
        "models:/digitpipe@nosuch": "registered model 'digitpipe' has no alias 'nosuch' "
        "(aliases: @champion (version 2); newest versions: 1, 2); ask for one of those",
        "models:/digitpipe/7": "registered model 'digitpipe' has no version 7 (aliases: "
        "@champion (version 2)",
        "models:/nosuch@champion": f"the tracking store {uri} has no registered model "
        "'nosuch' (it has: digitpipe, empty, foreign); check the name",
        "models:/digitpipe@champion": f"version 2 is no digitpipe model: its run {run} logged "
        "no weights/model.safetensors; digitpipe loads the versions digitpipe retrain registers",
        "models:/foreign/1": "version 1 is no digitpipe model: it has no run (it was registered "
        "from elsewhere)",
        "models:/empty@champion": "registered model 'empty' has no alias 'champion', nor any "
        "version yet; digitpipe retrain registers",
    }
    for model_uri, words in expected.items():
        status = main(["predict", str(picture(tmp_path)), "--model-uri", model_uri])
        err = assert_user_error((status, capsys), f"{model_uri}: {words}")
        assert "reachable" not in err
    assert not (tmp_path / "predictions.csv").exists()


def test_model_uri_store_is_in_the_project_whatever_params_file(tmp_path, monkeypatch, capsys):
    """A relative SQLite store is in the current folder (the project, as for the stages and
    retrain), not beside a --params file kept in a subfolder."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "configs").mkdir()
    params = default_params(
        mnist_data().model_dump(), track={"tracking_uri": "sqlite:///mlflow.db"}
    )
    (tmp_path / "configs/nightly.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    args = ["predict", str(picture(tmp_path)), "--model-uri", "models:/digitpipe@champion"]
    assert_user_error(
        (main([*args, "--params", "configs/nightly.yaml"]), capsys),
        f"{tmp_path / 'mlflow.db'} does not exist",
    )


# ---------------------------------------------------------------- OS write errors

FULL_STAGE = """
def run(params):
    with open("/dev/full", "w") as handle:
        handle.write("a stage output")
"""


def stand_in_stage(folder: Path, name: str, body: str, monkeypatch) -> str:
    """A stage module ``name`` (``run(params)`` is ``body``) importable by run_stage."""
    (folder / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(folder))
    return name


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_disk_full_in_a_stage_is_one_message(tiny_project, tmp_path, monkeypatch, capsys):
    module = stand_in_stage(tmp_path, "full_stage", FULL_STAGE, monkeypatch)
    assert_user_error(
        (run_stage(module, tiny_project / "params.yaml"), capsys),
        "no space left on the device",
        "free space and rerun",
    )


def test_other_os_errors_in_a_stage_stay_bugs(tiny_project, tmp_path, monkeypatch):
    body = "def run(params):\n    open('/nonexistent/folder/file')\n"
    module = stand_in_stage(tmp_path, "buggy_stage", body, monkeypatch)
    with pytest.raises(FileNotFoundError):
        run_stage(module, tiny_project / "params.yaml")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on the device while writing models/model.safetensors"),
        (errno.EDQUOT, "disk quota exceeded while writing models/model.safetensors"),
        (errno.EROFS, "read-only file system while writing models/model.safetensors"),
        (errno.EACCES, "permission denied on models/model.safetensors"),
    ],
)
def test_fixable_os_errors_name_the_file(capsys, code, words):
    assert_user_error(
        (fail_os(OSError(code, os.strerror(code), "models/model.safetensors")), capsys), words
    )


@pytest.mark.skipif(AS_ROOT, reason="root ignores file permissions")
def test_read_only_project_stops_ingest_with_one_message(tiny_project, monkeypatch, capsys):
    before = listing(tiny_project)
    folders = (tiny_project, tiny_project / "data")
    for folder in folders:
        folder.chmod(0o555)
    monkeypatch.chdir(tiny_project)
    try:
        status = main(["ingest"])
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert_user_error((status, capsys), "permission denied on ", "data/.processed")
    assert listing(tiny_project) == before


# ---------------------------------------------------------------- faults during training


def held_training(project: Path) -> subprocess.Popen:
    """The train stage of ``project`` (tracking into its own mlflow.db) in a subprocess, held
    after its first checkpoint (conftest.PAUSE_AFTER_A_CHECKPOINT) until the test lets it go."""
    edit_params(project, "train", max_epochs=3, limit_batches=4)
    edit_params(project, "track", enabled=True, experiment="faults")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    command = [sys.executable, "-c", PAUSE_AFTER_A_CHECKPOINT, str(REPO / "stages/train.py")]
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    paused_after_a_checkpoint(project, process)
    return process


def training_runs(project: Path) -> list:
    """The runs of the experiment `held_training` tracks into, in the project's mlflow.db."""
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("faults").experiment_id])


def resumed(project: Path, monkeypatch, capsys) -> str:
    """Train again in ``project`` (in this process); the output, once it exited 0."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(project)
    capsys.readouterr()
    assert main(["train"]) == 0
    return capsys.readouterr().out


@pytest.mark.slow
def test_disk_full_with_the_store_on_it_mid_training(ingested, small_disk, monkeypatch, capsys):
    """The disk that holds the project and its mlflow.db fills up between two epochs: one
    message naming the file and the fix, saying the run could not be marked (its store is on
    the full disk); the checkpoint is kept, and with space freed the rerun resumes and ends the
    run."""
    project = small_disk / "project"
    shutil.copytree(ingested / "data", project / "data")
    shutil.copy(ingested / "params.yaml", project)
    training = held_training(project)
    fill(small_disk, leave=0)
    (project / PAUSE_FILE).unlink()
    output = training.communicate(timeout=HANG_GUARD_S)[0]
    assert training.returncode == 2, output
    assert output.count("digitpipe: error: ") == 1 and "Traceback" not in output, output
    assert "no space left on the device while writing checkpoints/" in output, output
    (run,) = training_runs(project)
    assert run.info.status == "RUNNING"
    assert f"MLflow run {run.info.run_id} in sqlite:///{project}/mlflow.db could not be " in output
    assert "marked FAILED (database or disk is full) and shows RUNNING" in output, output
    assert KEPT_CHECKPOINT in output
    assert list((project / CHECKPOINT_ROOT).glob("*/last.ckpt"))

    (small_disk / "filler").unlink()
    assert "Resuming from" in resumed(project, monkeypatch, capsys)
    assert [run.info.status for run in training_runs(project)] == ["FINISHED"]


@pytest.mark.slow
def test_a_full_tmpdir_does_not_stop_training_checkpoints(
    ingested, small_disk, tmp_path, monkeypatch
):
    """Checkpoints are written beside themselves and renamed. Lightning's own went through a
    file in $TMPDIR moved into place: a copy across file systems, which a reader once met half
    written (a test's torch.load: EINVAL), and with $TMPDIR full the training failed with room
    in the project."""
    # Room for Python's check that $TMPDIR can be written (a full one is passed over for /tmp),
    # none for a checkpoint.
    fill(small_disk, leave=16 * 1024)
    monkeypatch.setenv("TMPDIR", str(small_disk))
    # Not the checkpoints': torch's compile cache goes to $TMPDIR by default.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "torch-cache"))
    training = train_stage(ingested)
    output = training.communicate(timeout=HANG_GUARD_S)[0]
    assert training.returncode == 0, output
    assert (ingested / MODEL_DIR / WEIGHTS_FILE).is_file()


@contextlib.contextmanager
def locked(store: Path) -> Iterator[None]:
    """A second connection to the SQLite file ``store`` holding an exclusive lock (as an open
    `BEGIN EXCLUSIVE` in an sqlite3 shell does) for the block."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        db.close()


def test_a_locked_store_stops_train_with_lock_advice(ingested, monkeypatch, capsys):
    """Locked before training: the message says another process holds the store, not that it
    is broken."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = ingested / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").search_experiments()  # a real store, schema and all
    edit_params(ingested, "track", enabled=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.chdir(ingested)
    with locked(store):
        err = assert_user_error(
            (main(["train"]), capsys),
            f"MLflow store sqlite:///{store}: ",
            f"{store} is still locked after 5 s: another process holds a lock on it",
        )
    assert "move the file aside" not in err
    assert not (ingested / MODEL_DIR).exists()


@pytest.mark.slow
def test_a_store_locked_mid_training_is_one_message(ingested, monkeypatch, capsys):
    """Another process locks the store between two epochs and holds it until the training has
    stopped: one message with the lock advice after SQLite's bounded wait; the run, which
    could not be marked, is said to be left RUNNING, and the rerun resumes and ends it."""
    training = held_training(ingested)
    with locked(ingested / "mlflow.db"):
        (ingested / PAUSE_FILE).unlink()
        output = training.communicate(timeout=HANG_GUARD_S)[0]
    assert training.returncode == 2, output
    assert output.count("digitpipe: error: ") == 1 and "Traceback" not in output, output
    store = ingested / "mlflow.db"
    assert (
        f"MLflow store sqlite:///{store} failed (database is locked). Still locked after" in output
    )
    assert f"another process holds a lock on {store}" in output, output
    (run,) = training_runs(ingested)
    assert run.info.status == "RUNNING"
    assert f"MLflow run {run.info.run_id} in sqlite:///{store} could not be marked FAILED" in output
    assert list((ingested / CHECKPOINT_ROOT).glob("*/last.ckpt"))
    assert "Resuming from" in resumed(ingested, monkeypatch, capsys)
    assert [run.info.status for run in training_runs(ingested)] == ["FINISHED"]


def test_the_gates_load_check_leaves_no_temporary_folder(tmp_path, monkeypatch, mlflow_server):
    """The retrain gate loads a registered version as MLflow serves it: MLflow downloads it
    from the server into a temporary folder it never removes, unless told where."""
    import mlflow

    from digitpipe.retrain.promotion import check_loads
    from digitpipe.tracking.training import log_model

    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(mlflow_server)
    example = np.zeros((2, 28, 28), np.float32)
    with mlflow.start_run(experiment_id=mlflow.create_experiment("leak")):
        model_uri = log_model(untrained_model(tmp_path / "model"), example)
    mlflow.register_model(model_uri, "leak")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    check_loads("leak", "1", example)
    assert list(scratch.iterdir()) == []
