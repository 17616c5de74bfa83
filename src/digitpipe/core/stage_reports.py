"""The JSON reports a stage writes and a later stage reads, as the reader needs them.

Checked when read (``core.files.read_json_report``), so a damaged or hand-edited report is
refused naming the file and the field, not met as a KeyError halfway through a stage. Keys a
reader does not use are ignored; types are strict (a count written as text is refused).
(``models/recipe.json`` is read as the ``core.config.Recipe`` it was written from.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StageReport(BaseModel):
    """A report's fields a later stage uses; any others are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)  # "54000" is no count


class ImageSize(StageReport):
    height: int
    width: int


class SplitSummary(StageReport):
    count: int


class IngestSummary(StageReport):
    """reports/ingest/summary.json."""

    image_size: ImageSize
    class_names: list[str]
    splits: dict[str, SplitSummary]


class TrainSummary(StageReport):
    """reports/train/summary.json."""

    parameters: int
    epochs: int
    best_epoch: int
    best_epoch_val_loss: float
    best_epoch_val_accuracy: float


class ModelFacts(StageReport):
    """models/model.json, the parts a report names (``model.export.read_spec`` checks it all)."""

    arch: str
    test_time_shift: int = 0  # absent from the model.json of earlier versions
    weights_sha256: str | None = None  # likewise


class TestMetrics(StageReport):
    """Test-set metrics; None where a statistic is undefined (e.g. an infinite log loss)."""

    n: int
    accuracy: float
    accuracy_lower: float
    accuracy_upper: float
    macro_f1: float | None
    kappa: float | None
    log_loss: float | None
    ece: float | None


class ValMetrics(StageReport):
    accuracy: float | None


class EvaluateScores(StageReport):
    """reports/evaluate/scores.json."""

    test: TestMetrics
    val: ValMetrics


class ConfusedPair(StageReport):
    actual: str
    predicted: str
    count: int


class Mistake(StageReport):
    image_id: str
    actual: str
    predicted: str


class TypicalImage(StageReport):
    image_id: str


class WorstCases(StageReport):
    """reports/evaluate/worst_cases.json; no pair when no test image was misclassified."""

    most_confused_pair: ConfusedPair | None
    confident_mistakes: list[Mistake]
    typical: dict[str, TypicalImage]


class Layer(StageReport):
    name: str
    kind: str
    shape: list[int]


class ActivationsManifest(StageReport):
    """reports/activations/manifest.json."""

    tensors: str
    layers: list[Layer]
    images: list[dict]
