"""The activations and report stages on tiny trained models of every architecture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import edit_params
from PIL import Image
from safetensors.numpy import load_file

from digitpipe.cli import main
from digitpipe.core.config import ARCHITECTURES, load_params
from digitpipe.core.paths import ACTIVATIONS_REPORTS, MODEL_DIR, PROCESSED_DIR
from digitpipe.dataset.parquet import read_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.explain.run import TENSORS_FILE
from digitpipe.explain.run import run as activations
from digitpipe.model.export import load_model
from digitpipe.report.run import run as report
from digitpipe.train.run import run as train


def through_evaluate(project, arch="bncnn"):
    """Train ``arch`` quickly in the ingested ``project``, and evaluate it."""
    edit_params(project, "model", arch=arch)
    params = load_params(project / "params.yaml")
    train(params, project)
    evaluate(params, project)
    return params


def not_blank(path) -> bool:
    return np.asarray(Image.open(path).convert("L")).std() > 10


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_activations_match_a_fresh_forward_pass(ingested, arch):
    params = through_evaluate(ingested, arch)
    manifest = activations(params, ingested)
    net, _ = load_model(ingested / MODEL_DIR)
    names = [name for name, _ in net.named_children()] + ["softmax"]
    assert [layer["name"] for layer in manifest["layers"]] == names
    tensors = load_file(str(ingested / ACTIVATIONS_REPORTS / TENSORS_FILE))
    assert list(tensors) == sorted(names) or set(tensors) == set(names)
    test = read_split(ingested / PROCESSED_DIR / "test.parquet")
    row_of = {image_id: row for row, image_id in enumerate(test.ids)}
    rows = [row_of[image["image_id"]] for image in manifest["images"]]
    x = torch.from_numpy(test.images[rows][:, None].astype(np.float32))
    with torch.inference_mode():
        for name, layer in net.named_children():
            x = layer(x)
            np.testing.assert_allclose(tensors[name], x.numpy(), atol=1e-6, err_msg=name)
            assert list(tensors[name].shape) == next(
                layer["shape"] for layer in manifest["layers"] if layer["name"] == name
            )
        np.testing.assert_allclose(tensors["softmax"], torch.softmax(x, 1).numpy(), atol=1e-6)
    reasons = [why for image in manifest["images"] for why in image["reasons"]]
    assert sum(why.startswith("typical") for why in reasons) == 10
    for picture in ("feature_maps.png", "filters.png", "barcodes.png"):
        assert not_blank(ingested / ACTIVATIONS_REPORTS / picture), picture


def test_explicit_ids_come_first_and_unknown_ids_are_refused(ingested, monkeypatch, capsys):
    params = through_evaluate(ingested)
    edit_params(ingested, "activations", image_ids=["test-000007"], worst_cases=0, typical=False)
    manifest = activations(load_params(ingested / "params.yaml"), ingested)
    assert [image["image_id"] for image in manifest["images"]] == ["test-000007"]
    edit_params(ingested, "activations", image_ids=["test-999999"])
    monkeypatch.chdir(ingested)
    assert main(["activations"]) == 2
    assert "test-999999" in capsys.readouterr().err
    assert params.model.arch == "bncnn"


def test_report_links_every_picture_and_inlines_them_in_html(ingested):
    params = through_evaluate(ingested)
    activations(params, ingested)
    markdown = report(params, ingested)
    reports = ingested / "reports"
    links = [
        line[line.index("](") + 2 : -1] for line in markdown.splitlines() if line.startswith("![")
    ]
    assert len(links) == 10
    for link in links:
        assert (reports / link).is_file(), link
    for section in (
        "## Data",
        "## Model and training",
        "## Test results",
        "### Statistics",
        "## Worst cases",
        "## What the network sees",
    ):
        assert section in markdown
    page = (reports / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 10 and '.png"' not in page
    assert "<table>" in page
    assert json.loads((reports / "evaluate/metrics.json").read_text())["n"] == 200
