"""The evaluate stage's outputs: test and validation figures, statistics, worst cases."""

from __future__ import annotations

from pathlib import Path

from digitpipe.outputs import Declared, StageReport

EVALUATE_REPORTS = Path("reports/evaluate")
SCORES = EVALUATE_REPORTS / "scores.json"  # every test and validation figure
METRICS = EVALUATE_REPORTS / "metrics.json"  # the headline: `dvc exp show` leads with it
PREDICTIONS = EVALUATE_REPORTS / "predictions.parquet"
WORST_CASES = EVALUATE_REPORTS / "worst_cases.json"
STATS_JSON = EVALUATE_REPORTS / "stats.json"
STATS_MD = EVALUATE_REPORTS / "stats.md"
CONFUSION_CSV = EVALUATE_REPORTS / "confusion.csv"
CONFUSION_PAIRS = EVALUATE_REPORTS / "confusion_pairs.csv"
CONFUSION_PICTURE = EVALUATE_REPORTS / "confusion.png"
PAIR_PICTURE = EVALUATE_REPORTS / "most_confused_pair.png"
MISTAKES_PICTURE = EVALUATE_REPORTS / "confident_mistakes.png"
TYPICAL_PICTURE = EVALUATE_REPORTS / "typical_images.png"

DECLARED = Declared(
    outs=(SCORES, PREDICTIONS, WORST_CASES, STATS_JSON, STATS_MD, CONFUSION_CSV),
    metrics=(METRICS,),
    plots=(CONFUSION_PAIRS, CONFUSION_PICTURE, PAIR_PICTURE, MISTAKES_PICTURE, TYPICAL_PICTURE),
)


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
