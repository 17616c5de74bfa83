"""Tests of digitpipe.evaluate.stats against scipy, scikit-learn and statsmodels."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.errors import assert_user_error
from markdown_it import MarkdownIt
from scipy.stats import binomtest, chi2
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support
from statsmodels.stats.contingency_tables import SquareTable, mcnemar

from digitpipe.cli import main
from digitpipe.core.errors import DigitpipeError
from digitpipe.evaluate.stats import (
    ClassStats,
    ConfusionStats,
    confusion_stats,
    read_confusion_csv,
    to_markdown,
)

TOL = 1e-9


def _random_matrix(seed: int, k: int) -> np.ndarray:
    """Counts with many zeros and a heavier diagonal."""
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 12, (k, k)) * (rng.random((k, k)) < 0.5)
    m += np.diag(rng.integers(0, 60, k))
    m[0, 0] += 1  # never all zero
    return m


RANDOM = {
    f"random-k{k}-s{seed}": _random_matrix(seed, k)
    for seed, k in [(0, 2), (1, 2), (2, 3), (3, 4), (4, 5), (5, 7), (6, 10), (7, 10), (8, 47)]
}
EDGE = {
    "absent-actual-class": np.array([[20, 3, 1], [0, 0, 0], [2, 4, 15]]),
    "single-predicted-class": np.array([[0, 9, 0], [0, 14, 0], [0, 6, 0]]),
    "perfect-2": np.array([[30, 0], [0, 12]]),
    "perfect-47": np.diag(np.arange(1, 48)),
    "accuracy-0": np.array([[0, 5, 2], [3, 0, 1], [4, 4, 0]]),
    "accuracy-0-2x2": np.array([[0, 6], [9, 0]]),
    "2x2-symmetric-off-diagonal": np.array([[10, 4], [4, 7]]),
    "2x2-large": np.array([[4800, 130], [210, 4860]]),
    "one-cell": np.array([[7, 0], [0, 0]]),
    "no-information-rate-1": np.array([[20, 3], [0, 0]]),
    "47-zeros-off-diagonal-pairs": np.eye(47, dtype=int) * 3 + np.eye(47, k=1, dtype=int),
}
MATRICES = {**RANDOM, **EDGE}


def _close(actual: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(actual)
    return abs(actual - expected) <= TOL


def _labels(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample per cell, weighted by its count: (y_true, y_pred, weight)."""
    rows, cols = np.indices(m.shape)
    return rows.ravel(), cols.ravel(), m.ravel().astype(float)


def _expected_mcnemar(m: np.ndarray) -> float:
    k = m.shape[0]
    off = m + m.T
    pairs = int((off[np.triu_indices(k, 1)] > 0).sum())
    if pairs == 0:
        return math.nan
    if k == 2:
        if m[0, 1] == m[1, 0]:
            return 1.0  # R applies no continuity correction to a symmetric table
        return mcnemar(m, exact=False, correction=True).pvalue
    bowker = SquareTable(m, shift_zeros=False).symmetry()
    if pairs == k * (k - 1) // 2:
        return bowker.pvalue
    return chi2.sf(bowker.statistic, pairs)  # statsmodels counts empty pairs in df


def _expected_overall(m: np.ndarray, confidence: float) -> dict[str, float]:
    y_true, y_pred, w = _labels(m)
    n = int(m.sum())
    correct = int(np.trace(m))
    nir = m.sum(axis=1).max() / n
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="exact")
    k = m.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on an undefined (0/0) kappa
        kappa = cohen_kappa_score(y_true, y_pred, labels=list(range(k)), sample_weight=w)
    return {
        "accuracy": correct / n,
        "accuracy_lower": ci.low,
        "accuracy_upper": ci.high,
        "no_information_rate": nir,
        "accuracy_p_value": binomtest(correct, n, nir, alternative="greater").pvalue,
        "kappa": kappa,
        "mcnemar_p_value": _expected_mcnemar(m),
    }


def _nan_ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


@pytest.mark.parametrize("name", list(MATRICES))
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_overall_matches_references(name: str, confidence: float) -> None:
    m = MATRICES[name]
    stats = confusion_stats(m, [f"c{i}" for i in range(m.shape[0])], confidence=confidence)
    assert stats.n == int(m.sum())
    for key, expected in _expected_overall(m, confidence).items():
        assert _close(getattr(stats, key), expected), (key, getattr(stats, key), expected)


@pytest.mark.parametrize("name", list(MATRICES))
def test_per_class_matches_references(name: str) -> None:
    m = MATRICES[name]
    k = m.shape[0]
    names = [f"class {i}" for i in range(k)]
    stats = confusion_stats(m, names)
    y_true, y_pred, w = _labels(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(k)), sample_weight=w, zero_division=np.nan
        )
    n = w.sum()
    assert [c.class_name for c in stats.per_class] == names
    for i, c in enumerate(stats.per_class):
        actual, predicted = y_true == i, y_pred == i
        tp = w[actual & predicted].sum()
        fn = w[actual & ~predicted].sum()
        fp = w[~actual & predicted].sum()
        tn = w[~actual & ~predicted].sum()
        sens, spec = _nan_ratio(tp, tp + fn), _nan_ratio(tn, tn + fp)
        expected = {
            "sensitivity": sens,
            "specificity": spec,
            "pos_pred_value": _nan_ratio(tp, tp + fp),
            "neg_pred_value": _nan_ratio(tn, tn + fn),
            "prevalence": (tp + fn) / n,
            "detection_rate": tp / n,
            "detection_prevalence": (tp + fp) / n,
            "balanced_accuracy": (sens + spec) / 2,
            "precision": precision[i],
            "recall": recall[i],
            "f1": f1[i],
        }
        for key, value in expected.items():
            assert _close(getattr(c, key), value), (i, key, getattr(c, key), value)
        assert c.support == support[i] == tp + fn
        assert isinstance(c.support, int)


@pytest.mark.parametrize("n", [1, 2, 5, 100, 10_000])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_perfect_predictions(n: int, confidence: float) -> None:
    m = np.array([[n, 0], [0, n]])
    stats = confusion_stats(m, ["a", "b"], confidence=confidence)
    alpha = 1 - confidence
    assert stats.accuracy == 1.0
    assert stats.kappa == 1.0
    assert math.isnan(stats.mcnemar_p_value)
    assert stats.accuracy_upper == 1.0
    assert stats.accuracy_lower == pytest.approx((alpha / 2) ** (1 / (2 * n)), abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_accuracy_zero(n: int) -> None:
    stats = confusion_stats(np.array([[0, n], [n, 0]]), ["a", "b"])
    assert stats.accuracy == 0.0
    assert stats.accuracy_lower == 0.0
    assert stats.accuracy_upper == pytest.approx(1 - 0.025 ** (1 / (2 * n)), abs=1e-12)
    assert stats.accuracy_p_value == 1.0
    assert all(c.f1 == 0.0 for c in stats.per_class)


def test_conventional_nans_for_absent_and_unpredicted_classes() -> None:
    stats = confusion_stats(EDGE["absent-actual-class"], ["a", "b", "c"])
    absent = stats.per_class[1]
    assert math.isnan(absent.sensitivity) and math.isnan(absent.balanced_accuracy)
    assert absent.pos_pred_value == 0.0 and absent.f1 == 0.0 and absent.support == 0
    single = confusion_stats(EDGE["single-predicted-class"], ["a", "b", "c"])
    assert math.isnan(single.per_class[0].pos_pred_value)
    assert single.per_class[0].f1 == 0.0
    assert math.isnan(single.per_class[1].neg_pred_value)
    assert single.kappa == 0.0
    one_cell = confusion_stats(EDGE["one-cell"], ["a", "b"]).per_class[1]
    assert math.isnan(one_cell.f1) and math.isnan(one_cell.sensitivity)


def test_float_counts_with_whole_values_are_accepted() -> None:
    m = RANDOM["random-k5-s4"]
    names = list("abcde")
    assert confusion_stats(m.astype(float), names) == confusion_stats(m, names)


def test_to_dict_is_json_ready_with_exact_keys() -> None:
    stats = confusion_stats(EDGE["absent-actual-class"], ["a", "b", "c"])
    d = stats.to_dict()
    assert list(d) == [
        "accuracy",
        "accuracy_lower",
        "accuracy_upper",
        "no_information_rate",
        "accuracy_p_value",
        "kappa",
        "mcnemar_p_value",
        "n",
        "per_class",
    ]
    assert list(d["per_class"][0]) == [
        "class",
        "sensitivity",
        "specificity",
        "pos_pred_value",
        "neg_pred_value",
        "prevalence",
        "detection_rate",
        "detection_prevalence",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "support",
    ]
    assert [c["class"] for c in d["per_class"]] == ["a", "b", "c"]
    assert math.isnan(d["per_class"][1]["sensitivity"])
    text = json.dumps(d)
    assert "NaN" in text
    assert json.loads(text)["n"] == stats.n


def test_results_are_frozen() -> None:
    stats = confusion_stats(EDGE["perfect-2"], ["a", "b"])
    assert isinstance(stats, ConfusionStats) and isinstance(stats.per_class[0], ClassStats)
    with pytest.raises(AttributeError):
        stats.accuracy = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("matrix", "names", "message"),
    [
        (np.ones((2, 3), dtype=int), ["a", "b"], "square"),
        (np.ones(4, dtype=int), ["a", "b"], "square"),
        (np.ones((1, 1), dtype=int), ["a"], "at least 2 classes"),
        (np.array([[1, -1], [0, 2]]), ["a", "b"], "negative"),
        (np.array([[1.5, 0], [0, 2]]), ["a", "b"], "whole numbers"),
        (np.array([[np.nan, 0], [0, 2]]), ["a", "b"], "NaN"),
        (np.array([[np.inf, 0], [0, 2]]), ["a", "b"], "infinite"),
        (np.zeros((3, 3), dtype=int), ["a", "b", "c"], "all zeros"),
        (np.eye(3, dtype=int), ["a", "b"], "2 class names for a 3x3"),
        (np.eye(2, dtype=int), ["a", "a"], "unique"),
        (np.array([["1", "0"], ["0", "1"]]), ["a", "b"], "numbers"),
    ],
)
def test_invalid_matrix_raises(matrix: np.ndarray, names: list[str], message: str) -> None:
    with pytest.raises(DigitpipeError, match=message):
        confusion_stats(matrix, names)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 95.0])
def test_invalid_confidence_raises(confidence: float) -> None:
    with pytest.raises(DigitpipeError, match="confidence"):
        confusion_stats(np.eye(2, dtype=int), ["a", "b"], confidence=confidence)


def test_read_confusion_csv_good(tmp_path: Path) -> None:
    path = tmp_path / "cm.csv"
    path.write_text("\ufeffactual,cat,dog, bird\ncat,5,1,0\ndog,0,7,2\n bird ,1,0, 3\n\n")
    matrix, names = read_confusion_csv(path)
    assert names == ["cat", "dog", "bird"]
    np.testing.assert_array_equal(matrix, [[5, 1, 0], [0, 7, 2], [1, 0, 3]])
    assert matrix.dtype == np.int64


def test_read_confusion_csv_empty_corner(tmp_path: Path) -> None:
    path = tmp_path / "cm.csv"
    path.write_text(",0,1\n0,4,0\n1,1,3\n")
    matrix, names = read_confusion_csv(str(path))
    assert names == ["0", "1"]
    np.testing.assert_array_equal(matrix, [[4, 0], [1, 3]])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("actual\n", "no class names"),
        ("actual,a,b\na,1,2\n", "2 classes but there are 1 data rows"),
        ("actual,a,b\na,1,2\nb,3\n", "line 3 has 2 cells, expected 3"),
        ("actual,a,b\nb,1,2\na,3,4\n", "line 2 is for class 'b'"),
        ("actual,a,b\na,1,2.5\nb,3,4\n", "line 2 has a count that is not a whole number"),
        ("actual,a,b\na,1,2\nb,x,4\n", "line 3 has a count that is not a whole number"),
        ("actual,a,b\na,1,2\nb,-3,4\n", "line 3 has a negative count"),
        ("actual,a,b\na,1,2\nb,3,4" + "0" * 26 + "\n", "up to line 3 add up to more than 9,"),
        (f"actual,a,b\na,{2**52},{2**52}\nb,0,1\n", "up to line 3 add up to more than 9,"),
    ],
)
def test_read_confusion_csv_bad(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DigitpipeError, match=message) as info:
        read_confusion_csv(path)
    assert str(path) in str(info.value)


def test_stats_command_prints_standard_json_with_null_for_undefined(tmp_path, capsys):
    path = tmp_path / "perfect.csv"
    path.write_text("actual,cat,dog\ncat,5,0\ndog,0,7\n")
    assert main(["stats", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(name))
    assert printed["accuracy"] == 1 and printed["mcnemar_p_value"] is None
    assert [row["class"] for row in printed["per_class"]] == ["cat", "dog"]
    assert main(["stats", str(path)]) == 0
    assert "| cat |" in capsys.readouterr().out
    path.write_text("actual,cat\ncat,x\n")
    assert_user_error((main(["stats", str(path)]), capsys), "perfect.csv")


def test_stats_with_a_30_digit_count_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.csv"
    path.write_text(",a,b\na,123456789012345678901234567890,3\nb,4,50\n")
    err = assert_user_error((main(["stats", str(path)]), capsys), alone=True)
    assert err.startswith(f"digitpipe: error: {path}: the counts up to line 2 add up to more")


def test_read_confusion_csv_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.csv"
    with pytest.raises(DigitpipeError, match="cannot read") as info:
        read_confusion_csv(path)
    assert str(path) in str(info.value)


def test_to_markdown_has_overall_and_every_class_row() -> None:
    m = RANDOM["random-k47-s8"]
    names = [f"digit_{i}" for i in range(47)]
    text = to_markdown(confusion_stats(m, names, confidence=0.9))
    for label in ["Accuracy (90% CI)", "No-information rate", "P-value [Acc > NIR]", "Kappa"]:
        assert label in text
    assert "McNemar" in text
    rows = [line for line in text.splitlines() if line.startswith("| digit_")]
    assert [r.split("|")[1].strip() for r in rows] == names
    header = next(line for line in text.splitlines() if line.startswith("| Class"))
    assert all(r.count("|") == header.count("|") == 14 for r in rows)


def test_to_markdown_escapes_pipes_and_shows_nan() -> None:
    text = to_markdown(confusion_stats(EDGE["absent-actual-class"], ["a|b", "c", "d"]))
    assert "| a\\|b |" in text
    assert "NaN" in text


def test_to_markdown_shows_class_names_as_written() -> None:
    """Markup in a class name (HTML, a link, emphasis) is escaped, not rendered."""
    names = ["<b>x</b>", "[8](http://x)", "*y*"]
    text = to_markdown(confusion_stats(EDGE["absent-actual-class"], names))
    page = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "[8](http://x)" in page and "*y*" in page
    assert "<b>" not in page and "<a " not in page and "<em>" not in page


def test_a_p_value_below_double_precision_is_written_as_a_bound():
    names = [str(k) for k in range(10)]
    stats = confusion_stats(np.diag([1000] * 10), names)  # perfect: P[Acc > NIR] underflows to 0
    assert stats.accuracy_p_value == 0.0
    assert "| P-value [Acc > NIR] | < 1e-300 |" in to_markdown(stats)
