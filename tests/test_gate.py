"""The promotion gate's statistics (checked against statsmodels) and decisions, and the drift
report's flags, on fixed data: no training, no MLflow."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from digitpipe.core.config import TrackParams
from digitpipe.dataset.images import ImageSet
from digitpipe.retrain.drift import ChampionOnNew, data_stats, drift, to_markdown
from digitpipe.retrain.gate import compare, judge, mcnemar_exact

CLASSES = tuple(str(i) for i in range(10))


def paired(both: int, champion_only: int, challenger_only: int, neither: int):
    """Correctness vectors with the given 2x2 table, in a shuffled order."""
    challenger = [True] * both + [False] * champion_only + [True] * challenger_only
    champion = [True] * both + [True] * champion_only + [False] * challenger_only
    challenger += [False] * neither
    champion += [False] * neither
    order = np.random.default_rng(0).permutation(len(challenger))
    return np.array(challenger)[order], np.array(champion)[order]


def statsmodels_p(both, b, c, neither) -> float:
    return float(mcnemar([[both, b], [c, neither]], exact=True).pvalue)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 1), (1, 3), (5, 5), (3, 17), (40, 61), (0, 12)])
def test_exact_mcnemar_matches_statsmodels(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(statsmodels_p(90, b, c, 7), rel=1e-12)
    comparison = compare(*paired(90, b, c, 7))
    assert (comparison.champion_only, comparison.challenger_only) == (b, c)
    assert comparison.images == 97 + b + c
    assert comparison.challenger_accuracy == pytest.approx((90 + c) / (97 + b + c))
    assert comparison.champion_accuracy == pytest.approx((90 + b) / (97 + b + c))
    assert comparison.p_value == pytest.approx(statsmodels_p(90, b, c, 7), rel=1e-12)


def test_better_by_the_margin_but_not_significantly_is_kept():
    # 4 more images right of 200: +2 points, but 2 against 6 discordant images is p = 0.29.
    comparison = compare(*paired(180, 2, 6, 12))
    assert comparison.challenger_accuracy - comparison.champion_accuracy == pytest.approx(0.02)
    verdict = judge(comparison.challenger_accuracy, comparison, "3", TrackParams())
    assert not verdict.promote
    assert "not significantly" in verdict.reason
    assert f"p = {statsmodels_p(180, 2, 6, 12):.4g} >= track.promotion_alpha 0.05" in (
        verdict.reason
    )
    assert "champion version 3's 0.9100 on the same 200 test images" in verdict.reason


def test_a_significant_gain_is_promoted_and_a_small_one_needs_the_margin():
    comparison = compare(*paired(170, 2, 20, 8))
    assert comparison.p_value < 0.001
    verdict = judge(comparison.challenger_accuracy, comparison, "1", TrackParams())
    assert verdict.promote and "significantly" in verdict.reason
    margin = TrackParams(promotion_margin=0.1)
    verdict = judge(comparison.challenger_accuracy, comparison, "1", margin)
    assert not verdict.promote and "does not beat" in verdict.reason
    worse = compare(*paired(170, 20, 2, 8))
    verdict = judge(worse.challenger_accuracy, worse, "1", TrackParams())
    assert not verdict.promote and "does not beat" in verdict.reason


def test_without_a_champion_the_floor_decides():
    assert judge(0.95, None, None, TrackParams()).promote
    verdict = judge(0.62, None, None, TrackParams())
    assert not verdict.promote
    assert "below track.min_accuracy 0.9" in verdict.reason and "no champion" in verdict.reason
    misfit = judge(0.95, None, "2", TrackParams(), "champion version 2 cannot be compared: x")
    assert misfit.promote and misfit.reason.startswith("champion version 2 cannot be compared")


def images_of(images: np.ndarray, labels: np.ndarray, prefix: str) -> ImageSet:
    ids = np.array([f"{prefix}-{i:06d}" for i in range(len(images))], dtype=object)
    return ImageSet(ids, images, labels.astype(np.int64), CLASSES)


def samples(mnist_train):
    """A reference set and a fresh sample of the same digits (MNIST's rows come in blocks of
    writers that differ in stroke: contiguous rows would be a real pixel drift)."""
    images, labels = mnist_train
    order = np.random.default_rng(1).permutation(12000)
    reference, fresh = order[:3000], order[3000:]
    return data_stats(images_of(images[reference], labels[reference], "train"), {}), fresh


def test_drift_flags_an_unbalanced_batch_but_not_a_balanced_one(mnist_train):
    images, labels = mnist_train
    reference, fresh = samples(mnist_train)
    week1 = fresh[:300]
    balanced = images_of(images[week1], labels[week1], "incoming/week1")
    report = drift(reference, "ref", balanced, {"week1": 300}, None, 0.01)
    # Absent classes, class frequencies, and per class intensity and ink: 2 + 10 x 2 checks.
    assert report["flags"] == [] and report["summary"] == "nothing flagged in 22 checks"
    assert report["classes"]["p_value"] > 0.01

    pick = fresh[np.isin(labels[fresh], [1, 7])][:300]
    unbalanced = images_of(images[pick], labels[pick], "incoming/week2")
    champion = ChampionOnNew("4", {"week2": (240, 300)}, test_correct=970, test_images=1000)
    report = drift(reference, "ref", unbalanced, {"week2": 300}, champion, 0.01)
    assert report["classes"]["p_value"] < 1e-10
    assert report["flags"][0].startswith("class frequencies differ from the reference")
    assert report["classes"]["per_class"]["1"]["new"] + report["classes"]["per_class"]["7"][
        "new"
    ] == (300)
    assert report["champion_on_new"]["accuracy"] == pytest.approx(0.8)
    assert any("less accurate on the new images" in flag for flag in report["flags"])
    page = to_markdown(report, "Drift")
    assert "class frequencies differ" in page and "| 1 |" in page and "0.8000" in page


def test_drift_names_the_batch_the_champion_is_worse_on(mnist_train):
    images, labels = mnist_train
    reference, fresh = samples(mnist_train)
    new = images_of(images[fresh[:600]], labels[fresh[:600]], "incoming/w")
    per_batch = {"good": (297, 300), "bad": (280, 300)}
    champion = ChampionOnNew("3", per_batch, 985, 1000)
    report = drift(reference, "ref", new, {"good": 300, "bad": 300}, champion, 0.01)
    rows = report["champion_on_new"]["per_batch"]
    assert rows["bad"]["p_value"] < 0.005 < rows["good"]["p_value"]  # Bonferroni: 0.01 / 2
    (flag,) = [flag for flag in report["flags"] if "on the batch " in flag]
    assert "on the batch bad (0.9333)" in flag
    page = to_markdown(report, "Drift")
    assert "| bad | 280 | 300 | 0.9333 |" in page and "| good | 297 | 300 | 0.9900 |" in page

    alone = ChampionOnNew("3", {"bad": (280, 300)}, 985, 1000)
    one = images_of(images[fresh[:300]], labels[fresh[:300]], "incoming/bad")
    report = drift(reference, "ref", one, {"bad": 300}, alone, 0.01)
    assert not any("on the batch " in flag for flag in report["flags"])  # the overall test says it
    assert any("less accurate on the new images" in flag for flag in report["flags"])


def test_drift_flags_a_change_in_the_pixels(mnist_train):
    images, labels = mnist_train
    reference, fresh = samples(mnist_train)
    faint = images_of(images[fresh[:600]] // 2, labels[fresh[:600]], "incoming/w")  # half the ink
    report = drift(reference, "ref", faint, {"w": 600}, None, 0.01)
    shifted = [flag for flag in report["flags"] if flag.startswith("pixels of class ")]
    assert shifted and all(" per-image " in flag and "Welch p = " in flag for flag in shifted)
    assert report["summary"] == f"{len(report['flags'])} of {report['checks']} checks flag drift"
    assert not any(flag.startswith("class frequencies") for flag in report["flags"])


def test_drift_weighs_a_perfect_test_score_as_a_measurement(mnist_train):
    """A champion right on all 200 test images is not 'less accurate' for one new mistake in
    1000 (an exact binomial test against p = 1 would say p = 0), but is for 100 mistakes."""
    images, labels = mnist_train
    reference, fresh = samples(mnist_train)
    new = images_of(images[fresh[:300]], labels[fresh[:300]], "incoming/w")
    verdicts = {}
    for correct in (999, 900):
        champion = ChampionOnNew("1", {"w": (correct, 1000)}, test_correct=200, test_images=200)
        report = drift(reference, "ref", new, {"w": 300}, champion, 0.01)
        verdicts[correct] = report["champion_on_new"]["p_value"]
        flagged = any("less accurate on the new images" in flag for flag in report["flags"])
        assert flagged == (verdicts[correct] < 0.01)
    assert verdicts[999] > 0.5 and verdicts[900] < 1e-6
