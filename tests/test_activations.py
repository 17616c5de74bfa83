"""The activations and report stages on tiny trained models of every architecture."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch
from helpers.errors import assert_user_error
from helpers.project import edit_params
from PIL import Image
from safetensors.numpy import load_file

from digitpipe.activations.run import run as activations
from digitpipe.cli import main
from digitpipe.core.config import ARCHITECTURES, load_params
from digitpipe.dataset.parquet import read_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.model.export import load_model
from digitpipe.outputs.activations import ACTIVATIONS_REPORTS, TENSORS
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.report.run import run as report
from digitpipe.tracking.state import pipeline_state
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
    tensors = load_file(str(ingested / TENSORS))
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


@pytest.mark.parametrize("arch", ["bncnn", "softmax"])  # conv layers, and a dense layer only
def test_explicit_ids_come_first_and_unknown_ids_are_refused(ingested, monkeypatch, capsys, arch):
    through_evaluate(ingested, arch)
    edit_params(ingested, "activations", image_ids=["test-000007"], worst_cases=0, typical=False)
    manifest = activations(load_params(ingested / "params.yaml"), ingested)
    # The one image recorded is test-000007: its label, and the model's answer for it.
    test = read_split(ingested / PROCESSED_DIR / "test.parquet")
    net, _ = load_model(ingested / MODEL_DIR)
    with torch.inference_mode():
        expected = torch.softmax(
            net(torch.from_numpy(test.images[7:8, None].astype(np.float32))), 1
        )
    (image,) = manifest["images"]
    assert manifest["model"] == arch and image["image_id"] == "test-000007"
    assert image["label"] == str(test.labels[7])
    assert image["predicted"] == str(int(expected.argmax()))
    tensors = load_file(str(ingested / TENSORS))
    np.testing.assert_allclose(tensors["softmax"], expected.numpy(), atol=1e-6)
    first = next(name for name, _ in net.named_children())
    assert tensors[first].shape[0] == 1
    edit_params(ingested, "activations", image_ids=["test-999999"])
    monkeypatch.chdir(ingested)
    assert_user_error((main(["activations"]), capsys), "test-999999")
    edit_params(ingested, "activations", image_ids=[])  # nothing left to explain
    assert_user_error(
        (main(["activations"]), capsys), "activations: no test image to explain (worst_cases 0 of"
    )


def table_after(markdown: str, heading: str) -> dict[str, list[str]]:
    """The first Markdown table after ``heading``: first cell -> the other cells of its row."""
    lines = markdown[markdown.index(heading + "\n") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = {}
    for line in lines[start + 2 :]:  # after the header and its --- row
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def list_after(markdown: str, heading: str) -> dict[str, list[str]]:
    """The first Markdown list of "- **name**: value" after ``heading``: name -> [value]."""
    lines = markdown[markdown.index(heading + "\n") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("- **"))
    items = {}
    for line in lines[start:]:
        if not line.startswith("- **"):
            break
        name, value = line.removeprefix("- **").split("**: ", 1)
        items[name] = [value]
    return items


def test_report_shows_every_picture_and_the_numbers_of_the_metrics_files(ingested):
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
    headers = re.findall(r"<thead>\s*<tr>(.*?)</tr>", page, re.DOTALL)
    assert headers and all(re.search(r"<th[^>]*>[^<\s]", row) for row in headers)  # none empty
    assert markdown == (ingested / "reports/report.md").read_text()
    summary = json.loads((reports / "ingest/summary.json").read_text())
    trained = json.loads((reports / "train/summary.json").read_text())
    written = json.loads((reports / "evaluate/scores.json").read_text())
    tested, validated = written["test"], written["val"]
    assert tested["n"] == 200

    assert markdown.startswith(f"# {params.report.title}\n")
    run = table_after(markdown, f"# {params.report.title}")
    digest = hashlib.sha256((ingested / MODEL_DIR / "model.safetensors").read_bytes()).hexdigest()
    assert run["model"] == [f"`bncnn`, weights SHA-256 `{digest[:12]}`"]
    state = pipeline_state(params, ingested)
    assert run["MLflow run"] == [f"the one tagged `digitpipe.state` = `{state.digest}`"]
    assert run["params"][0].startswith(f"SHA-256 `{state.params[:12]}` of the sections data, ")
    assert report(params, ingested) == markdown  # no date, run id or commit: the same bytes
    assert f"**Test accuracy {tested['accuracy']:.2%}** (95% CI " in markdown
    data = table_after(markdown, "## Data")
    assert {name: int(cells[0]) for name, cells in data.items()} == {
        name: split["count"] for name, split in summary["splits"].items()
    }
    model = list_after(markdown, "## Model and training")
    net, _ = load_model(ingested / MODEL_DIR)
    count = sum(p.numel() for p in net.parameters())
    assert model["architecture"] == [f"`bncnn` ({count:,} parameters)"]
    assert trained["parameters"] == count
    assert model["epochs (exported)"] == [f"{trained['epochs']} ({trained['best_epoch']})"]
    loss, accuracy = map(float, model["validation loss, accuracy (exported epoch)"][0].split(","))
    assert loss == pytest.approx(trained["best_epoch_val_loss"], abs=5e-5)
    assert accuracy == pytest.approx(trained["best_epoch_val_accuracy"], abs=5e-5)

    lead = f"On {tested['n']:,} test images, each predicted as the mean over the image and its "
    assert lead + "four copies moved 1 pixel (so is the validation accuracy):" in markdown
    shown = {
        name: float(cells[0]) for name, cells in table_after(markdown, "## Test results").items()
    }
    expected = {
        "accuracy": tested["accuracy"],
        "macro F1": tested["macro_f1"],
        "Cohen's kappa": tested["kappa"],
        "log loss": tested["log_loss"],
        "expected calibration error": tested["ece"],
        "validation accuracy": validated["accuracy"],
    }
    assert shown.keys() == expected.keys()
    for name, value in expected.items():
        assert shown[name] == pytest.approx(value, abs=5e-5), name
    assert (reports / "evaluate/stats.md").read_text().strip() in markdown
