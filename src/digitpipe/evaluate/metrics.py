"""Classification metrics of predicted probabilities, with torchmetrics where it has the metric."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from digitpipe.core.numbers import rounded

_EPS = float(np.finfo(np.float32).eps)


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class.

    Probabilities are clipped to [eps, 1 - eps] with float32's eps, as scikit-learn does.
    """
    clipped = torch.from_numpy(probabilities).double().clamp(_EPS, 1 - _EPS)
    return float(F.nll_loss(clipped.log(), torch.from_numpy(labels)))


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], bins: int
) -> dict:
    """Accuracy, macro precision/recall/F1, log loss and ECE of predicted probabilities.

    Macro averages skip a class that is neither present nor predicted (as scikit-learn does).
    Values are rounded to six decimals (``core.numbers``). What follows from the confusion
    matrix alone (kappa, per-class statistics, intervals) is in ``stats.confusion_stats``.
    """
    probs, target = torch.from_numpy(probabilities), torch.from_numpy(labels)
    classes = len(class_names)

    def score(metric, average: str) -> float:
        return rounded(metric(probs, target, classes, average=average))

    return {
        "accuracy": score(multiclass_accuracy, "micro"),
        "macro_precision": score(multiclass_precision, "macro"),
        "macro_recall": score(multiclass_recall, "macro"),
        "macro_f1": score(multiclass_f1_score, "macro"),
        "log_loss": rounded(log_loss(probabilities, labels)),
        "ece": rounded(multiclass_calibration_error(probs, target, classes, bins, norm="l1")),
        "n": len(labels),
    }
