"""The evaluate stage: the trained model over the test and validation splits, into reports."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from torch import nn

from digitpipe.core.atomic import staged_outputs, write_json, write_text
from digitpipe.core.config import EvaluateParams, Params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.numbers import rounded
from digitpipe.dataset.images import ImageSet
from digitpipe.dataset.parquet import open_split
from digitpipe.evaluate.confusion import (
    confusion_counts,
    confusion_figure,
    write_confusion_csv,
    write_confusion_pairs,
)
from digitpipe.evaluate.metrics import classification_metrics
from digitpipe.evaluate.predictions import write_predictions
from digitpipe.evaluate.stats import confusion_stats, to_markdown
from digitpipe.evaluate.worst_cases import write_worst_cases
from digitpipe.model.export import ModelSpec, load_model
from digitpipe.model.inference import stream_probabilities
from digitpipe.outputs import evaluate as outputs
from digitpipe.outputs import write_report
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.plotting import save_figure
from digitpipe.terminal import wrapped
from digitpipe.tracking.store import check_tracking

# Logged to MLflow beside the pictures.
REPORT_FILES = (
    outputs.SCORES,
    outputs.STATS_JSON,
    outputs.STATS_MD,
    outputs.WORST_CASES,
    outputs.CONFUSION_CSV,
)
HEADLINE = ("accuracy", "log_loss")  # test figures in reports/evaluate/metrics.json


def load_labelled(path: Path, spec: ModelSpec) -> ImageSet:
    """A split the model can be scored on: labelled, non-empty, its classes and image size;
    checked from its footer, ids and labels, its pixels left in the file (``open_split``)."""
    split = open_split(path)
    if not len(split) or split.labels is None:
        raise DigitpipeError(f"{path}: no labelled images to evaluate the model on.")
    if list(split.class_names) != spec.class_names:
        raise DigitpipeError(
            f"{path}: classes {list(split.class_names)} differ from the model's "
            f"{spec.class_names}; retrain the model on this data (dvc repro train)."
        )
    if split.image_size != (spec.height, spec.width):
        raise DigitpipeError(
            f"{path}: images are {split.image_size[0]}x{split.image_size[1]} but the model "
            f"takes {spec.height}x{spec.width}; retrain the model on this data (dvc repro train)."
        )
    return split


def probabilities_of(
    net: nn.Module, spec: ModelSpec, split: ImageSet, batch_size: int
) -> np.ndarray:
    """The model's probabilities of a split opened by :func:`load_labelled`, its pixels read
    and classified a row group at a time (one row group's pixels in memory, not the split's)."""
    groups = split.images.groups()
    return stream_probabilities(net, groups, len(split), batch_size, spec.test_time_shift)


def write_reports(
    split: ImageSet, probabilities: np.ndarray, settings: EvaluateParams, staging: Path
) -> dict:
    """Every report of one labelled split, at its declared path under ``staging``; return its
    metrics."""
    names = list(split.class_names)
    predicted = probabilities.argmax(axis=1)
    write_predictions(split, probabilities, staging / outputs.PREDICTIONS)
    matrix = confusion_counts(split.labels, predicted, len(names))
    write_confusion_csv(matrix, names, staging / outputs.CONFUSION_CSV)
    write_confusion_pairs(split.labels, predicted, names, staging / outputs.CONFUSION_PAIRS)
    stats = confusion_stats(matrix, names)
    title = f"Confusion matrix: {stats.n} test images, accuracy {stats.accuracy:.2%}"
    save_figure(confusion_figure(matrix, names, title), staging / outputs.CONFUSION_PICTURE)
    write_json(staging / outputs.STATS_JSON, stats.to_dict())
    write_text(staging / outputs.STATS_MD, to_markdown(stats))
    write_worst_cases(split, probabilities, matrix, settings, staging)
    metrics = classification_metrics(probabilities, split.labels, names, settings.calibration_bins)
    overall = stats.to_dict()
    return metrics | {
        key: rounded(overall[key])
        for key in ("accuracy_lower", "accuracy_upper", "kappa", "mcnemar_p_value")
    }


def scores_file(metrics: dict) -> dict:
    """reports/evaluate/scores.json: every test and validation figure, named as in MLflow
    (`test.accuracy`, `val.accuracy`: the nested keys joined with dots)."""
    return {"test": {k: v for k, v in metrics.items() if k != "val"}, "val": metrics["val"]}


def metrics_file(metrics: dict) -> dict:
    """reports/evaluate/metrics.json, the pipeline's only DVC metric: the figures `dvc exp show`
    leads with. Two, so that at 100 columns the table still has room for the recipe keys
    (docs/experiments.md); the rest are in scores.json."""
    return {"test": {key: metrics[key] for key in HEADLINE}}


def headline(metrics: dict) -> str:
    """One line a user reads first: the test figures that compare runs."""
    return (
        f"test accuracy {metrics['accuracy']:.2%} (95% CI {metrics['accuracy_lower']:.2%} to "
        f"{metrics['accuracy_upper']:.2%}), macro F1 {metrics['macro_f1']:.4f}, "
        f"log loss {metrics['log_loss']:.4f} on {metrics['n']:,} images"
    )


def log_evaluation(params: Params, root: Path, metrics: dict, test_file: Path) -> None:
    """Test metrics (``test.*``), the evaluate params and every report into the MLflow run of
    this pipeline state; the confusion matrix at the artifact root, for the compare page."""
    from digitpipe.tracking.runs import log_stage

    scalars = {
        f"test.{key}": value
        for key, value in metrics.items()
        if isinstance(value, int | float) and not math.isnan(value)
    }
    scalars["val.accuracy"] = metrics["val"]["accuracy"]
    pictures = [path for path in outputs.DECLARED.plots if path.suffix == ".png"]
    artifacts = {
        "": [root / outputs.CONFUSION_PICTURE],
        "evaluate": [
            root / path for path in [*pictures, *REPORT_FILES] if path != outputs.CONFUSION_PICTURE
        ],
    }
    log_stage(
        params.track,
        root,
        "evaluate",
        params.evaluate.model_dump(mode="json"),
        artifacts,
        scalars,
        {"test": test_file},
        note=headline(metrics),
    )


def run(params: Params, root: Path = Path(".")) -> dict:
    """Evaluate ``models/`` on the test split (all reports) and the validation split (metrics)."""
    check_tracking(params.track, root)
    net, spec = load_model(root / MODEL_DIR)
    settings = params.evaluate
    test, val = (load_labelled(root / split_file(s), spec) for s in ("test", "val"))
    val_metrics = classification_metrics(
        probabilities_of(net, spec, val, settings.batch_size),
        val.labels,
        spec.class_names,
        settings.calibration_bins,
    )
    probabilities = probabilities_of(net, spec, test, settings.batch_size)
    with staged_outputs(root, "evaluate", outputs.DECLARED.paths()) as staging:
        metrics = write_reports(test, probabilities, settings, staging)
        metrics["val"] = {key: val_metrics[key] for key in ("accuracy", "log_loss", "n")}
        write_report(staging / outputs.SCORES, outputs.EvaluateScores, scores_file(metrics))
        write_json(staging / outputs.METRICS, metrics_file(metrics))
    if params.track.enabled:
        log_evaluation(params, root, metrics, root / split_file("test"))
    print(
        wrapped(f"evaluate: {headline(metrics)}; reports in {outputs.EVALUATE_REPORTS}"), flush=True
    )
    return metrics
