"""The evaluate stage on a tiny trained model, checked against scikit-learn; edge cases."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers.model import model_probabilities
from PIL import Image
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
)

from digitpipe.cli import stats_command
from digitpipe.core.config import EvaluateParams, load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.numbers import json_safe
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import read_split
from digitpipe.evaluate.run import run as evaluate
from digitpipe.evaluate.run import write_reports
from digitpipe.evaluate.stats import confusion_stats, read_confusion_csv, to_markdown
from digitpipe.model.export import load_model
from digitpipe.outputs.evaluate import EVALUATE_REPORTS
from digitpipe.outputs.ingest import PROCESSED_DIR
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.train.run import run as train

PICTURES = {
    "confusion.png": (400, 400),
    "most_confused_pair.png": (150, 300),
    "confident_mistakes.png": (150, 300),
    "typical_images.png": (80, 300),
}
TOL = 1e-6


@pytest.fixture()
def evaluated(ingested):
    """The tiny project ingested, a model trained quickly, then evaluated: (folder, metrics)."""
    train(load_params(ingested / "params.yaml"), ingested)
    return ingested, evaluate(load_params(ingested / "params.yaml"), ingested)


def predictions_of(project) -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_parquet(project / EVALUATE_REPORTS / "predictions.parquet")
    return frame, frame[[f"prob_{k}" for k in range(10)]].to_numpy()


def test_predictions_and_metrics_agree_with_sklearn(evaluated):
    project, metrics = evaluated
    frame, probabilities = predictions_of(project)
    assert len(frame) == 200 and frame["image_id"].iloc[0] == "test-000000"
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(frame["predicted"], probabilities.argmax(axis=1))
    net, spec = load_model(project / MODEL_DIR)
    assert spec.test_time_shift == 1  # the default recipe's test-time augmentation
    test = read_split(project / PROCESSED_DIR / "test.parquet")
    expected = model_probabilities(net, spec, test.images[:16])
    np.testing.assert_allclose(probabilities[:16], expected, atol=1e-6)
    labels, predicted = frame["label"].to_numpy(), frame["predicted"].to_numpy()
    assert 0 < metrics["accuracy"] < 1, "the quick model should make some mistakes"
    expected = {
        "accuracy": np.mean(labels == predicted),
        "macro_precision": precision_score(labels, predicted, average="macro", zero_division=0),
        "macro_recall": recall_score(labels, predicted, average="macro", zero_division=0),
        "macro_f1": f1_score(labels, predicted, average="macro", zero_division=0),
        "kappa": cohen_kappa_score(labels, predicted),
        "log_loss": log_loss(labels, probabilities, labels=range(10)),
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=TOL), key
    per_class = json.loads((project / EVALUATE_REPORTS / "stats.json").read_text())["per_class"]
    per_class_f1 = f1_score(labels, predicted, average=None, labels=range(10), zero_division=0)
    for k, value in enumerate(per_class_f1):
        assert per_class[k]["class"] == str(k)
        assert per_class[k]["f1"] == pytest.approx(value, abs=TOL)
        assert per_class[k]["support"] == np.sum(labels == k)
    bins = load_params(project / "params.yaml").evaluate.calibration_bins
    ece = l1_calibration_error(probabilities, labels, bins)
    assert ece > 0.01, "a model trained for 3 batches is not calibrated"
    assert metrics["ece"] == pytest.approx(ece, abs=TOL) and metrics["n"] == 200
    # scores.json: the same figures, named as MLflow shows them (test.*, val.*); metrics.json,
    # the DVC metric, the two that `dvc exp show` leads with.
    written = json.loads((project / EVALUATE_REPORTS / "scores.json").read_text())
    assert written == {
        "test": {k: v for k, v in metrics.items() if k != "val"},
        "val": metrics["val"],
    }
    headline = json.loads((project / EVALUATE_REPORTS / "metrics.json").read_text())
    assert headline == {"test": {"accuracy": metrics["accuracy"], "log_loss": metrics["log_loss"]}}


def l1_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """ECE by hand, binned as torchmetrics' l1 calibration error: the top probability falls in
    [k/bins, (k+1)/bins) (exactly 1 in a bin of its own); the mean |accuracy - confidence| of
    the bins, weighted by their image counts."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1, dtype=probabilities.dtype)
    which = np.searchsorted(edges, confidence, side="right") - 1
    gap = sum(
        np.sum(which == k) * abs(correct[which == k].mean() - confidence[which == k].mean())
        for k in np.unique(which)
    )
    return float(gap / len(labels))


def test_validation_metrics_are_the_models_on_the_val_split(evaluated):
    project, metrics = evaluated
    net, spec = load_model(project / MODEL_DIR)
    val = read_split(project / PROCESSED_DIR / "val.parquet")
    probabilities = model_probabilities(net, spec, val.images)
    assert metrics["val"]["n"] == len(val) == 60
    assert metrics["val"]["accuracy"] == pytest.approx(
        np.mean(probabilities.argmax(axis=1) == val.labels), abs=TOL
    )
    assert metrics["val"]["log_loss"] == pytest.approx(
        log_loss(val.labels, probabilities, labels=range(10)), abs=1e-5
    )


def test_confusion_files_and_statistics(evaluated):
    project, _ = evaluated
    frame, _ = predictions_of(project)
    labels, predicted = frame["label"].to_numpy(), frame["predicted"].to_numpy()
    matrix, names = read_confusion_csv(project / EVALUATE_REPORTS / "confusion.csv")
    assert names == [str(k) for k in range(10)]
    np.testing.assert_array_equal(matrix, confusion_matrix(labels, predicted, labels=range(10)))
    with (project / EVALUATE_REPORTS / "confusion_pairs.csv").open() as handle:
        pairs = list(csv.reader(handle))
    assert pairs[0] == ["actual", "predicted"]
    assert pairs[1:] == [[str(a), str(p)] for a, p in zip(labels, predicted, strict=True)]
    stats = confusion_stats(matrix, names)
    saved = json.loads((project / EVALUATE_REPORTS / "stats.json").read_text())
    assert json.dumps(saved, sort_keys=True) == json.dumps(
        json_safe(stats.to_dict()), sort_keys=True
    )
    assert (project / EVALUATE_REPORTS / "stats.md").read_text() == to_markdown(stats)
    csv_path = project / EVALUATE_REPORTS / "confusion.csv"
    assert stats_command(csv_path, as_json=False) == to_markdown(stats).rstrip("\n")
    printed = json.loads(stats_command(csv_path, as_json=True))
    for key in ("accuracy", "accuracy_lower", "accuracy_upper", "no_information_rate"):
        assert printed[key] == getattr(stats, key)
    assert {"accuracy_p_value", "kappa", "mcnemar_p_value"} <= printed.keys()
    third = printed["per_class"][3]
    assert third["class"] == "3" and third["sensitivity"] == stats.per_class[3].sensitivity


def test_worst_cases_and_pictures(evaluated):
    project, _ = evaluated
    frame, probabilities = predictions_of(project)
    labels, predicted = frame["label"].to_numpy(), frame["predicted"].to_numpy()
    report = json.loads((project / EVALUATE_REPORTS / "worst_cases.json").read_text())
    errors = confusion_matrix(labels, predicted, labels=range(10))
    np.fill_diagonal(errors, 0)
    pair = report["most_confused_pair"]
    actual, guess = int(pair["actual"]), int(pair["predicted"])
    assert pair["count"] == errors[actual, guess] == errors.max()
    wrong = frame["image_id"][(labels == actual) & (predicted == guess)]
    assert sorted(pair["image_ids"]) == sorted(wrong)

    confidence = probabilities.max(axis=1)
    mistakes = report["confident_mistakes"]
    assert len(mistakes) == min(24, np.sum(labels != predicted))
    shown = [m["probability"] for m in mistakes]
    assert shown == sorted(shown, reverse=True)
    rows = frame.index[frame["image_id"].isin([m["image_id"] for m in mistakes])]
    assert (labels[rows] != predicted[rows]).all()
    others = np.setdiff1d(np.flatnonzero(labels != predicted), rows)
    assert confidence[others].max(initial=0) <= min(shown) + TOL

    for name, typical in report["typical"].items():
        own = probabilities[labels == int(name), int(name)]
        row = frame.index[frame["image_id"] == typical["image_id"]][0]
        assert labels[row] == int(name) and probabilities[row, int(name)] >= own.max() - TOL

    for name, (min_height, min_width) in PICTURES.items():
        picture = np.asarray(Image.open(project / EVALUATE_REPORTS / name).convert("L"))
        assert picture.shape[0] > min_height and picture.shape[1] > min_width, name
        assert picture.std() > 20, f"{name} looks blank"


def test_missing_model_is_a_clear_error(ingested):
    with pytest.raises(DigitpipeError, match="run the train stage first"):
        evaluate(load_params(ingested / "params.yaml"), ingested)
    with pytest.raises(DigitpipeError, match=r"no-such\.csv"):
        stats_command(ingested / "no-such.csv", as_json=True)


def synthetic(labels: list[int], predicted: list[int], classes: int) -> tuple[ImageSet, np.ndarray]:
    """Noise images with the given labels, and probabilities that pick ``predicted``."""
    rng = np.random.default_rng(0)
    count = len(labels)
    probabilities = rng.dirichlet(np.ones(classes), count).astype(np.float32) * 0.1
    probabilities[np.arange(count), predicted] += 0.9
    names = tuple(f"c{k}" for k in range(classes))
    images = rng.integers(0, 256, (count, 12, 12), dtype=np.uint8)
    ids = np.array([f"x-{i:03d}" for i in range(count)], dtype=object)
    return ImageSet(ids, images, np.array(labels), names), probabilities


CASES = {
    "predicts-one-class": ([0, 1, 2, 2, 1, 0, 2], [2] * 7, 3),
    "class-absent": ([0, 1, 0, 1, 0, 2], [0, 1, 1, 1, 0, 2], 4),
    "perfect": ([0, 1, 2, 3, 3], [0, 1, 2, 3, 3], 4),
    "perfect-one-class-present": ([1, 1, 1], [1, 1, 1], 3),
    "two-classes": ([0, 1, 1, 0, 1], [0, 1, 0, 0, 0], 2),
    "47-classes": (list(range(47)) * 2, list(range(47)) + list(range(1, 47)) + [0], 47),
}


@pytest.mark.parametrize("case", CASES)
def test_edge_cases_give_conventional_values(tmp_path, case):
    labels, predicted, classes = CASES[case]
    split, probabilities = synthetic(labels, predicted, classes)
    metrics = write_reports(split, probabilities, EvaluateParams(), tmp_path)
    reports = tmp_path / EVALUATE_REPORTS
    report = json.loads((reports / "worst_cases.json").read_text())
    assert metrics["accuracy"] == pytest.approx(np.mean(np.array(labels) == predicted))
    assert len(report["typical"]) == len(set(labels))
    for name in PICTURES:
        assert np.asarray(Image.open(reports / name).convert("L")).std() > 5, name
    if labels == predicted:
        assert report["most_confused_pair"] is None and report["confident_mistakes"] == []
        assert metrics["macro_f1"] == 1 and metrics["log_loss"] < 0.2
    kappa = cohen_kappa_score(labels, predicted) if len(set(labels + predicted)) > 1 else math.nan
    assert metrics["kappa"] == pytest.approx(kappa, abs=TOL, nan_ok=True)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(labels, predicted, average="macro", zero_division=0), abs=TOL
    )
    for written in reports.glob("*.json"):  # standard JSON: undefined values are null
        json.loads(written.read_text(), parse_constant=lambda name: pytest.fail(f"{name}"))
    per_class = json.loads((reports / "stats.json").read_text())["per_class"]
    absent = [row for k, row in enumerate(per_class) if k not in labels]
    assert all(row["support"] == 0 for row in absent)


@pytest.mark.parametrize(
    "names",
    [
        [str(k) for k in range(10)],
        [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle-boot",
        ],
        [f"a rather long class name {k}" for k in range(3)],
        [f"WWWW{k:02d}" for k in range(20)],  # capitals are wider than the average letter
    ],
)
def test_confusion_heatmap_class_names_do_not_overlap(names: list[str]) -> None:
    from digitpipe.evaluate.confusion import confusion_figure

    matrix = np.diag(np.arange(1, len(names) + 1))
    figure = confusion_figure(matrix, names, "test")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = sorted(
        (label.get_window_extent(renderer) for label in figure.axes[0].get_xticklabels()),
        key=lambda box: box.x0,
    )
    assert all(left.x1 <= right.x0 for left, right in itertools.pairwise(boxes))
