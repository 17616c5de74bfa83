"""Assemble the run's reports into one Markdown document, read like a notebook of the run."""

from __future__ import annotations

from pathlib import Path

from digitpipe.core.config import Params, Recipe
from digitpipe.core.files import read_json_report, read_report
from digitpipe.core.numbers import counted
from digitpipe.markdown import literal
from digitpipe.outputs import activations, evaluate, ingest, train
from digitpipe.outputs.activations import ActivationsManifest
from digitpipe.outputs.evaluate import EvaluateScores, TestMetrics, WorstCases
from digitpipe.outputs.ingest import IngestSummary
from digitpipe.outputs.report import REPORTS
from digitpipe.outputs.train import (
    MODEL_DIR,
    RECIPE_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    ModelFacts,
    TrainSummary,
)
from digitpipe.provenance import check_weights_digest
from digitpipe.tracking.state import PIPELINE_SECTIONS, STATE_TAG, PipelineState


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _setting(value: object) -> str:
    """A recipe value as text; a nested setting (augment) as "(rotation 5.0, ...)"."""
    if isinstance(value, dict):
        return "(" + ", ".join(f"{key} {item}" for key, item in value.items()) + ")"
    return str(value)


def _figure(value: float | None) -> str:
    """A metric to four places; "n/a" where it is undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def _image(path: Path, alt: str) -> str:
    """A picture of a stage, linked relative to reports/ where the report is."""
    return f"![{alt}]({path.relative_to(REPORTS).as_posix()})"


def data_section(root: Path) -> str:
    summary = read_json_report(root / ingest.SUMMARY, "ingest", IngestSummary)
    size, names = summary.image_size, summary.class_names
    rows = [[name, split.count] for name, split in summary.splits.items()]
    return "\n\n".join(
        [
            "## Data",
            f"{size.height} x {size.width} images of {len(names)} classes "
            f"({', '.join(map(literal, names))}).",
            _table(["split", "images"], rows),
            _image(ingest.CLASS_DISTRIBUTION, "images per class and split"),
            _image(ingest.SAMPLE_IMAGES, "sample training images"),
        ]
    )


def model_section(root: Path, spec: ModelFacts) -> str:
    trained = read_json_report(root / train.SUMMARY, "train", TrainSummary)
    recipe = read_json_report(root / MODEL_DIR / RECIPE_FILE, "train", Recipe)
    settings = ", ".join(
        f"{key} {_setting(value)}"
        for key, value in recipe.model_dump().items()
        if value not in (None, {}, 0.0, False)
    )
    facts = [
        ["architecture", f"`{spec.arch}` ({trained.parameters:,} parameters)"],
        ["recipe", settings],
        ["epochs (exported)", f"{trained.epochs} ({trained.best_epoch})"],
        [
            "validation loss, accuracy (exported epoch)",
            f"{trained.best_epoch_val_loss:.4f}, {trained.best_epoch_val_accuracy:.4f}",
        ],
    ]
    return "\n\n".join(
        [
            "## Model and training",
            "\n".join(f"- **{name}**: {value}" for name, value in facts),
            _image(train.LEARNING_CURVES, "learning curves"),
        ]
    )


def evaluation_section(root: Path, evaluated: EvaluateScores, spec: ModelFacts) -> str:
    """The test metrics, the confusion matrix and the statistics."""
    shift = spec.test_time_shift
    how = (
        f", each predicted as the mean over the image and its four copies moved "
        f"{counted(shift, 'pixel')} (so is the validation accuracy)"
        if shift
        else ""
    )
    metrics = evaluated.test
    scores = [
        ["accuracy", metrics.accuracy],
        ["macro F1", metrics.macro_f1],
        ["Cohen's kappa", metrics.kappa],
        ["log loss", metrics.log_loss],
        ["expected calibration error", metrics.ece],
        ["validation accuracy", evaluated.val.accuracy],
    ]
    return "\n\n".join(
        [
            "## Test results",
            f"On {counted(metrics.n, 'test image')}{how}:",
            _table(["metric", "value"], [[name, _figure(value)] for name, value in scores]),
            _image(evaluate.CONFUSION_PICTURE, "confusion matrix"),
            "### Statistics",
            read_report(root / evaluate.STATS_MD, "evaluate").strip(),
        ]
    )


def worst_cases_section(root: Path) -> str:
    pair = read_json_report(root / evaluate.WORST_CASES, "evaluate", WorstCases).most_confused_pair
    lead = (
        "No test image was misclassified."
        if pair is None
        else f"The most confused pair: **{literal(pair.actual)}** read as "
        f"**{literal(pair.predicted)}**, {counted(pair.count, 'time')}."
    )
    return "\n\n".join(
        [
            "## Worst cases",
            lead,
            _image(evaluate.PAIR_PICTURE, "the most confused pair"),
            _image(evaluate.MISTAKES_PICTURE, "the most confident mistakes"),
            _image(evaluate.TYPICAL_PICTURE, "the most typical image of each class"),
        ]
    )


def activations_section(root: Path) -> str:
    manifest = read_json_report(root / activations.MANIFEST, "activations", ActivationsManifest)
    layers = [
        [f"`{layer.name}`", layer.kind, " x ".join(map(str, layer.shape[1:]))]
        for layer in manifest.layers
    ]
    return "\n\n".join(
        [
            "## What the network sees",
            f"Layer outputs of {len(manifest.images)} test images are in "
            f"`activations/{manifest.tensors}` (safetensors, one tensor per layer) with "
            "`activations/manifest.json`.",
            _table(["layer", "kind", "output shape (per image)"], layers),
            _image(activations.FEATURE_MAPS, "feature maps of one image"),
            _image(activations.FILTERS, "first-layer filters"),
            _image(activations.BARCODES, "feature barcodes per class"),
        ]
    )


def run_section(root: Path, spec: ModelFacts, test: TestMetrics, state: PipelineState) -> str:
    """Which pipeline state this is (the digests of what determines it, and how to find its
    MLflow run) and its headline. Nothing that differs between identical runs (a run id, a date,
    a commit) is written: the report is a DVC output, the same bytes for the same inputs."""
    # The state's digest is of the weights on disk (the file checked when it was taken).
    check_weights_digest(root / MODEL_DIR / WEIGHTS_FILE, spec.weights_sha256, state.weights)
    sections = ", ".join(PIPELINE_SECTIONS)
    facts = [
        ["model", f"`{spec.arch}`, weights SHA-256 `{state.weights[:12]}`"],
        ["training data", f"SHA-256 `{state.data[:12]}` of the train and val splits"],
        ["params", f"SHA-256 `{state.params[:12]}` of the sections {sections}"],
        ["MLflow run", f"the one tagged `{STATE_TAG}` = `{state.digest}`"],
    ]
    headline = (
        f"**Test accuracy {test.accuracy:.2%}** (95% CI {test.accuracy_lower:.2%} to "
        f"{test.accuracy_upper:.2%}), macro F1 {_figure(test.macro_f1)}, log loss "
        f"{_figure(test.log_loss)} on {test.n:,} test images."
    )
    return "\n\n".join([_table(["pipeline state", f"`{state.digest}`"], facts), headline])


def build_markdown(params: Params, root: Path, state: PipelineState) -> str:
    """The whole report of the project at ``root`` in ``state``, led by the digests that name
    it; image links are relative to ``reports/``."""
    spec = read_json_report(root / MODEL_DIR / SPEC_FILE, "train", ModelFacts)
    evaluated = read_json_report(root / evaluate.SCORES, "evaluate", EvaluateScores)
    sections = [
        f"# {literal(params.report.title)}",
        run_section(root, spec, evaluated.test, state),
        data_section(root),
        model_section(root, spec),
        evaluation_section(root, evaluated, spec),
        worst_cases_section(root),
        activations_section(root),
    ]
    return "\n\n".join(sections) + "\n"
