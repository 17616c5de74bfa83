"""Classification metrics of predicted probabilities, with torchmetrics where it has the metric."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_cohen_kappa,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

_EPS = float(np.finfo(np.float32).eps)
DIGITS = 6  # torchmetrics computes in float32: more digits would only show its rounding


def _rounded(value: torch.Tensor) -> float | list[float]:
    return np.round(value.double().numpy(), DIGITS).tolist()


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of the true class.

    Probabilities are clipped to [eps, 1 - eps] with float32's eps, as scikit-learn does.
    """
    clipped = torch.from_numpy(probabilities).double().clamp(_EPS, 1 - _EPS)
    return float(F.nll_loss(clipped.log(), torch.from_numpy(labels)))


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str], bins: int
) -> dict:
    """Accuracy, macro precision/recall/F1, Cohen's kappa, log loss, ECE and per-class scores.

    Macro averages skip a class that is neither present nor predicted (as scikit-learn does);
    a per-class ratio with a zero denominator is 0. Kappa is NaN when chance agreement is 1.
    Values are rounded to ``DIGITS`` decimals.
    """
    probs, target = torch.from_numpy(probabilities), torch.from_numpy(labels)
    classes = len(class_names)

    def score(metric, average: str | None) -> float | list[float]:
        return _rounded(metric(probs, target, classes, average=average))

    per_class = {
        "precision": score(multiclass_precision, None),
        "recall": score(multiclass_recall, None),
        "f1": score(multiclass_f1_score, None),
        "support": np.bincount(labels, minlength=classes).tolist(),
    }
    return {
        "accuracy": score(multiclass_accuracy, "micro"),
        "macro_precision": score(multiclass_precision, "macro"),
        "macro_recall": score(multiclass_recall, "macro"),
        "macro_f1": score(multiclass_f1_score, "macro"),
        "kappa": _rounded(multiclass_cohen_kappa(probs, target, classes)),
        "log_loss": round(log_loss(probabilities, labels), DIGITS),
        "ece": _rounded(multiclass_calibration_error(probs, target, classes, bins, norm="l1")),
        "n": len(labels),
        "per_class": {
            name: {key: values[k] for key, values in per_class.items()}
            for k, name in enumerate(class_names)
        },
    }
