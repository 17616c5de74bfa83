"""Confusion-matrix statistics following the conventions of R's ``caret::confusionMatrix``.

The matrix has rows = actual class and columns = predicted class. The exact
(Clopper-Pearson) interval, the binomial tail and the chi-square tail come from
:mod:`scipy.stats`.

Undefined ratios (zero denominators) are ``nan``; :class:`ClassStats` documents ``f1``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path

import numpy as np
from scipy.stats import beta, binom, chi2

from digitpipe.core.errors import DigitpipeError
from digitpipe.core.files import MAX_REPORT_BYTES, read_bounded
from digitpipe.markdown import literal


@dataclass(frozen=True)
class ClassStats:
    """One-vs-rest statistics of one class (caret's ``byClass``).

    Ratios with a zero denominator are ``nan``. ``f1`` is 2TP / (2TP + FP + FN), as in
    scikit-learn: 0 for a class that is never predicted correctly (even where precision or
    recall is undefined, where caret gives NaN), ``nan`` only for a class neither present nor
    predicted. ``balanced_accuracy`` is ``nan`` when sensitivity or specificity is.
    """

    class_name: str
    sensitivity: float
    specificity: float
    pos_pred_value: float
    neg_pred_value: float
    prevalence: float
    detection_rate: float
    detection_prevalence: float
    balanced_accuracy: float
    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, str | float | int]:
        """JSON-ready dict; ``class_name`` is written under the key ``"class"``."""
        out: dict[str, str | float | int] = {"class": self.class_name}
        out.update({f.name: getattr(self, f.name) for f in fields(self)[1:]})
        return out


_OVERALL_KEYS = (
    "accuracy",
    "accuracy_lower",
    "accuracy_upper",
    "no_information_rate",
    "accuracy_p_value",
    "kappa",
    "mcnemar_p_value",
    "n",
)


@dataclass(frozen=True)
class ConfusionStats:
    """Overall statistics of a confusion matrix (caret's ``overall``) plus per-class ones.

    ``confidence`` is the level of the accuracy interval; it is not part of :meth:`to_dict`.
    """

    accuracy: float
    accuracy_lower: float
    accuracy_upper: float
    no_information_rate: float
    accuracy_p_value: float
    kappa: float
    mcnemar_p_value: float
    n: int
    per_class: tuple[ClassStats, ...]
    confidence: float = 0.95

    def to_dict(self) -> dict:
        """JSON-ready dict; ``nan`` stays ``float('nan')`` (``json.dumps`` writes ``NaN``)."""
        out = {name: getattr(self, name) for name in _OVERALL_KEYS}
        out["per_class"] = [c.to_dict() for c in self.per_class]
        return out


# --------------------------------------------------------------------------- computation


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _validated_counts(matrix: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Check the matrix and names; return the counts as an int64 array."""
    arr = np.asarray(matrix)
    if arr.dtype.kind not in "iuf":
        raise DigitpipeError(f"confusion matrix must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise DigitpipeError(f"confusion matrix must be square, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise DigitpipeError(f"confusion matrix needs at least 2 classes, got {arr.shape[0]}")
    if len(class_names) != arr.shape[0]:
        raise DigitpipeError(
            f"got {len(class_names)} class names for a {arr.shape[0]}x{arr.shape[0]} matrix"
        )
    if len(set(class_names)) != len(class_names):
        raise DigitpipeError(f"class names must be unique, got {list(class_names)}")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise DigitpipeError("confusion matrix contains NaN")
        if not np.isfinite(arr).all():
            raise DigitpipeError("confusion matrix contains an infinite value")
        if (arr != np.round(arr)).any():
            raise DigitpipeError("confusion matrix counts must be whole numbers")
    if (arr < 0).any():
        raise DigitpipeError("confusion matrix counts must not be negative")
    counts = arr.astype(np.int64)
    if counts.sum() == 0:
        raise DigitpipeError("confusion matrix is all zeros: there is nothing to evaluate")
    return counts


def _kappa(correct: int, rows: list[int], cols: list[int], n: int) -> float:
    """Cohen's unweighted kappa in exact integer arithmetic; ``nan`` when chance agreement is 1."""
    chance = sum(r * c for r, c in zip(rows, cols, strict=True))
    return _ratio(n * correct - chance, n * n - chance)


def _mcnemar_p_value(counts: list[list[int]]) -> float:
    """McNemar's test as R's ``mcnemar.test`` (caret), Bowker's symmetry test for k > 2.

    For 2x2 the continuity correction (|b - c| - 1)^2 / (b + c) is applied unless b == c
    (R applies it only when the table is asymmetric; b == c gives statistic 0, p = 1).
    For k > 2, pairs with n_ij + n_ji = 0 are left out and df is the number of pairs kept
    (R would give NaN). The p-value is ``nan`` when no off-diagonal pair has any count.
    """
    k = len(counts)
    if k == 2:
        b, c = counts[0][1], counts[1][0]
        if b + c == 0:
            return math.nan
        diff = abs(b - c) - 1 if b != c else 0
        return float(chi2.sf(diff * diff / (b + c), 1))
    statistic, df = 0.0, 0
    for i in range(k):
        for j in range(i + 1, k):
            total = counts[i][j] + counts[j][i]
            if total:
                statistic += (counts[i][j] - counts[j][i]) ** 2 / total
                df += 1
    return float(chi2.sf(statistic, df)) if df else math.nan


def _class_stats(name: str, tp: int, fn: int, fp: int, tn: int) -> ClassStats:
    n = tp + fn + fp + tn
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    ppv = _ratio(tp, tp + fp)
    return ClassStats(
        class_name=name,
        sensitivity=sensitivity,
        specificity=specificity,
        pos_pred_value=ppv,
        neg_pred_value=_ratio(tn, tn + fn),
        prevalence=(tp + fn) / n,
        detection_rate=tp / n,
        detection_prevalence=(tp + fp) / n,
        balanced_accuracy=(sensitivity + specificity) / 2,
        precision=ppv,
        recall=sensitivity,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        support=tp + fn,
    )


def confusion_stats(
    matrix: np.ndarray, class_names: Sequence[str], confidence: float = 0.95
) -> ConfusionStats:
    """Statistics of a confusion matrix (rows = actual, columns = predicted).

    As caret: the accuracy interval is exact (Clopper-Pearson); the no-information rate is
    the largest actual-class share; its p-value is the one-sided binomial P(X >= correct)
    with p = NIR; kappa is Cohen's unweighted; McNemar as :func:`_mcnemar_p_value`.
    Raises :class:`DigitpipeError` on a matrix or names that cannot describe a classifier.
    """
    if not 0.0 < confidence < 1.0:
        raise DigitpipeError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    counts = _validated_counts(matrix, class_names).tolist()
    k = len(counts)
    rows = [sum(r) for r in counts]
    cols = [sum(counts[i][j] for i in range(k)) for j in range(k)]
    n = sum(rows)
    correct = sum(counts[i][i] for i in range(k))
    nir = max(rows) / n
    alpha = 1.0 - confidence
    # Clopper-Pearson: beta quantiles, with the bound fixed at 0 (1) when correct is 0 (n).
    lower = float(beta.ppf(alpha / 2, correct, n - correct + 1)) if correct else 0.0
    upper = float(beta.ppf(1 - alpha / 2, correct + 1, n - correct)) if correct < n else 1.0
    per_class = tuple(
        _class_stats(
            str(name),
            tp=counts[i][i],
            fn=rows[i] - counts[i][i],
            fp=cols[i] - counts[i][i],
            tn=n - rows[i] - cols[i] + counts[i][i],
        )
        for i, name in enumerate(class_names)
    )
    return ConfusionStats(
        accuracy=correct / n,
        accuracy_lower=lower,
        accuracy_upper=upper,
        no_information_rate=nir,
        accuracy_p_value=float(binom.sf(correct - 1, n, nir)),  # P(X >= correct)
        kappa=_kappa(correct, rows, cols, n),
        mcnemar_p_value=_mcnemar_p_value(counts),
        n=n,
        per_class=per_class,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- input / output


# Counts are images: a total above 2^53 (9.0e15) is no longer exact in float64, and a 30-digit
# count does not fit the int64 matrix at all.
MAX_TOTAL = 2**53


def read_confusion_csv(path: str | PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """Read a confusion matrix CSV: header = corner label + predicted class names, then one
    row per actual class (its name, then counts) in the same order as the header.

    Returns the int64 matrix and the class names. Raises :class:`DigitpipeError` naming the
    file (and line) on a missing or malformed file.
    """
    data = read_bounded(Path(path), MAX_REPORT_BYTES)  # a regular file, of bounded size
    try:
        text = io.StringIO(data.decode("utf-8-sig"), newline="")
        lines = [(i, row) for i, row in enumerate(csv.reader(text), start=1) if any(row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DigitpipeError(f"{path}: cannot read confusion matrix CSV: {exc}") from exc
    if not lines:
        raise DigitpipeError(f"{path}: file is empty, expected a header row of class names")
    header = [cell.strip() for cell in lines[0][1]]
    names = header[1:]
    if not names:
        raise DigitpipeError(f"{path}: header row has no class names after the first cell")
    if len(lines) - 1 != len(names):
        raise DigitpipeError(
            f"{path}: header names {len(names)} classes but there are {len(lines) - 1} data rows"
        )
    values: list[list[int]] = []
    for (lineno, row), expected in zip(lines[1:], names, strict=True):
        if len(row) != len(header):
            raise DigitpipeError(
                f"{path}: line {lineno} has {len(row)} cells, expected {len(header)}"
            )
        if row[0].strip() != expected:
            raise DigitpipeError(
                f"{path}: line {lineno} is for class {row[0].strip()!r} but the header says "
                f"{expected!r} here: row and column class names must match, in the same order"
            )
        try:
            counts = [int(cell.strip()) for cell in row[1:]]
        except ValueError:
            raise DigitpipeError(
                f"{path}: line {lineno} has a count that is not a whole number: {row[1:]}"
            ) from None
        if any(c < 0 for c in counts):
            raise DigitpipeError(f"{path}: line {lineno} has a negative count: {row[1:]}")
        values.append(counts)
        if sum(map(sum, values)) > MAX_TOTAL:
            raise DigitpipeError(
                f"{path}: the counts up to line {lineno} add up to more than {MAX_TOTAL:,} "
                "images, beyond what the statistics compute exactly; a confusion matrix counts "
                "images: check the file."
            )
    return np.array(values, dtype=np.int64), names


def _fmt(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def _fmt_p(value: float) -> str:
    """A p-value; one below double precision's range (it underflowed to 0) as "< 1e-300"."""
    if math.isnan(value):
        return "NaN"
    if value < 1e-300:
        return "< 1e-300"
    return f"{value:.3e}" if value < 1e-4 else f"{value:.4f}"


def to_markdown(stats: ConfusionStats) -> str:
    """A Markdown report: an overall table, then a per-class table with one row per class."""
    level = f"{100 * stats.confidence:g}%"
    lines = [
        "| Statistic | Value |",
        "| --- | --- |",
        f"| Accuracy ({level} CI) | {_fmt(stats.accuracy)} "
        f"({_fmt(stats.accuracy_lower)}, {_fmt(stats.accuracy_upper)}) |",
        f"| No-information rate | {_fmt(stats.no_information_rate)} |",
        f"| P-value [Acc > NIR] | {_fmt_p(stats.accuracy_p_value)} |",
        f"| Kappa | {_fmt(stats.kappa)} |",
        f"| McNemar's test p-value | {_fmt_p(stats.mcnemar_p_value)} |",
        f"| N | {stats.n} |",
        "",
        "| Class | Sensitivity | Specificity | Pos pred value | Neg pred value | Prevalence "
        "| Detection rate | Detection prevalence | Balanced accuracy | Precision | Recall | F1 "
        "| Support |",
        "| --- " + "| ---: " * 12 + "|",
    ]
    for c in stats.per_class:
        cells = [_fmt(getattr(c, f.name)) for f in fields(c)[1:-1]]
        lines.append(f"| {literal(c.class_name)} | " + " | ".join(cells) + f" | {c.support} |")
    return "\n".join(lines) + "\n"
