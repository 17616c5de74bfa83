"""The model `train` logs, as `mlflow models serve` serves it: real test images in every accepted
layout get the local model's labels and probabilities; a wrong shape gets a short 400."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.processes import wait_until
from helpers.project import edit_params
from helpers.servers import answers, free_port

from digitpipe.core.config import load_params
from digitpipe.dataset.checks import pixel_fault
from digitpipe.dataset.idx import write_idx
from digitpipe.dataset.parquet import read_split
from digitpipe.model.export import ModelSpec, load_model
from digitpipe.model.inference import predict_probabilities
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.tracking.runs import find_training_run
from digitpipe.tracking.serving import InputError, as_images, prediction_table
from digitpipe.train.run import run as train

SHAPES = "[N,28,28], [N,784] or [N,1,28,28]"
DIGITPIPE = str(Path(sys.executable).parent / "digitpipe")
SPEC = ModelSpec("bncnn", 28, 28, [str(i) for i in range(10)], 0.13, 0.31)


def test_input_layouts_and_refusals():
    images = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28) % 256
    flat = images.reshape(2, 784)
    for layout in (images, flat, images[:, None], pd.DataFrame(flat), images.tolist()):
        np.testing.assert_array_equal(as_images(layout, SPEC), images[:, None])
    refused = [images[:, :27], images[:, :, :, None], images[0], [], "7"]
    for bad in [*refused, pd.DataFrame(flat[:, :100]), [[1, 2], [3]], [["a"] * 784]]:
        with pytest.raises(InputError) as caught:
            as_images(bad, SPEC)
        error = caught.value
        error.message = f"Failed to predict data '{bad}'"  # what the scoring server does
        assert SHAPES in error.message and len(error.serialize_as_json()) < 500
    # Values predict refuses: in the words of predict's check (the served model has no file).
    for bad in (images * 2, -images, images + 0.5, np.where(images > 9, np.nan, images)):
        with pytest.raises(InputError) as caught:
            as_images(bad, SPEC)
        assert caught.value.message == pixel_fault(np.asarray(bad, np.float64))
        assert "is not a whole number in 0..255" in caught.value.message
    with pytest.raises(InputError, match=r"the pixels look scaled to 0\.\.1; multiply them by 255"):
        as_images(images / 255, SPEC)
    table = prediction_table(np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), ["a", "b"])
    assert list(table.columns) == ["label", "probability", "prob_a", "prob_b"]
    assert table["label"].tolist() == ["b", "a"]
    np.testing.assert_allclose(table["probability"], [0.9, 0.8])


@contextmanager
def served(model_uri: str, store: str, log: Path) -> Iterator[str]:
    """`mlflow models serve` of the model on a free port; yields its URL and always stops it
    (the whole process group: the CLI starts uvicorn as a child)."""
    port = free_port()
    env = os.environ | {
        "MLFLOW_TRACKING_URI": store,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        started = wait_until(
            lambda: answers(f"{url}/ping"), 120, lambda: process.poll() is not None
        )
        assert started, "server did not start:\n" + log.read_text()[-3000:]
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.slow
def test_mlflow_models_serve_answers_every_layout(ingested, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = f"sqlite:///{tmp_path / 'serving' / 'mlflow.db'}"
    (tmp_path / "serving").mkdir()
    edit_params(ingested, "track", enabled=True, tracking_uri=store)
    train(load_params(ingested / "params.yaml"), ingested)
    ref = find_training_run(load_params(ingested / "params.yaml").track, ingested)
    assert ref is not None and ref.model_uri

    images = read_split(ingested / PROCESSED_DIR / "test.parquet").images[:24]
    net, spec = load_model(ingested / MODEL_DIR)
    expected = predict_probabilities(net, images, len(images), spec.test_time_shift)
    labels = [spec.class_names[i] for i in expected.argmax(axis=1)]
    pixels = images.astype(np.float64)
    flat = pixels.reshape(len(images), -1)
    requests = {
        "[N,28,28]": {"inputs": pixels.tolist()},
        "[N,784]": {"inputs": flat.tolist()},
        "[N,1,28,28]": {"inputs": pixels[:, None].tolist()},
        "dataframe": {
            "dataframe_split": {
                "columns": [f"pixel{i}" for i in range(flat.shape[1])],
                "data": flat.tolist(),
            }
        },
    }
    with served(ref.model_uri, store, tmp_path / "serve.log") as url:
        for layout, body in requests.items():
            status, text = post(url, body)
            assert status == 200, f"{layout}: {text[:500]}"
            table = pd.DataFrame(json.loads(text)["predictions"])
            columns = ["label", "probability"] + [f"prob_{c}" for c in spec.class_names]
            assert list(table.columns) == columns, layout
            assert table["label"].tolist() == labels, layout
            probabilities = table[columns[2:]].to_numpy()
            np.testing.assert_allclose(probabilities, expected, atol=1e-5, err_msg=layout)
            np.testing.assert_allclose(table["probability"], expected.max(axis=1), atol=1e-5)

        status, text = post(url, {"inputs": pixels[:, :27, :27].tolist()})
        assert 400 <= status < 500 and len(text) < 500, text[:1000]
        assert SHAPES in json.loads(text)["message"]

        # Pixels scaled to 0..1 are refused as `digitpipe predict` refuses them, word for word.
        scaled = (images / 255).astype(np.float32)
        status, text = post(url, {"inputs": scaled.tolist()})
        write_idx(scaled, tmp_path / "scaled.idx")
        predict = subprocess.run(
            [DIGITPIPE, "predict", "scaled.idx", "--strict", "--model", str(ingested / MODEL_DIR)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
    assert 400 <= status < 500 and len(text) < 500, text[:1000]
    message = json.loads(text)["message"]
    assert "the pixels look scaled to 0..1; multiply them by 255" in message
    assert predict.returncode == 2
    assert predict.stderr.strip() == f"digitpipe: error: scaled.idx: {message}"
