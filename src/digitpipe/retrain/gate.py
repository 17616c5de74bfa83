"""The promotion gate: champion and challenger on the same test images, compared by the exact
McNemar test on their paired correctness.

Pure statistics (numpy, scipy): the registry feeds it predictions and records what it decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from digitpipe.core.config import TrackParams


@dataclass(frozen=True)
class Comparison:
    """Two models' correctness on the same images.

    ``champion_only`` (McNemar's b) counts the images only the champion gets right,
    ``challenger_only`` (c) those only the challenger gets right; the images both get right or
    both get wrong say nothing about which model is better.
    """

    images: int
    challenger_correct: int
    champion_correct: int
    champion_only: int
    challenger_only: int
    p_value: float

    @property
    def challenger_accuracy(self) -> float:
        return self.challenger_correct / self.images

    @property
    def champion_accuracy(self) -> float:
        return self.champion_correct / self.images


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under "equally good", each of the b + c discordant
    images is the challenger's with probability 1/2 (a binomial test); 1 without any."""
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def compare(challenger_correct: np.ndarray, champion_correct: np.ndarray) -> Comparison:
    """Compare two boolean vectors: image i correctly classified by each model."""
    challenger_correct = np.asarray(challenger_correct, bool)
    champion_correct = np.asarray(champion_correct, bool)
    if challenger_correct.shape != champion_correct.shape or not len(challenger_correct):
        raise ValueError("compare needs the two models' results on the same, non-empty images")
    b = int(np.sum(champion_correct & ~challenger_correct))
    c = int(np.sum(challenger_correct & ~champion_correct))
    return Comparison(
        images=len(challenger_correct),
        challenger_correct=int(challenger_correct.sum()),
        champion_correct=int(champion_correct.sum()),
        champion_only=b,
        challenger_only=c,
        p_value=mcnemar_exact(b, c),
    )


@dataclass(frozen=True)
class Verdict:
    """Whether the challenger becomes champion, and why (one sentence)."""

    promote: bool
    reason: str


def judge(
    accuracy: float,
    comparison: Comparison | None,
    champion_version: str | None,
    track: TrackParams,
    no_comparison: str | None = None,
) -> Verdict:
    """The gate. Against a champion (``comparison`` on the same images): promote only if the
    challenger's accuracy beats the champion's by more than ``track.promotion_margin`` and the
    exact McNemar p is below ``track.promotion_alpha``. Without one (``comparison`` None; the
    champion is absent, or ``no_comparison`` says why it could not be compared): promote only
    if ``accuracy`` reaches ``track.min_accuracy``."""
    if comparison is None:
        why = no_comparison or "no champion yet"
        if accuracy >= track.min_accuracy:
            return Verdict(
                True,
                f"{why}, and test accuracy {accuracy:.4f} reaches track.min_accuracy "
                f"{track.min_accuracy}",
            )
        return Verdict(
            False,
            f"{why}, and test accuracy {accuracy:.4f} is below track.min_accuracy "
            f"{track.min_accuracy}: registered, not promoted",
        )
    n, margin, alpha = comparison.images, track.promotion_margin, track.promotion_alpha
    a, b = comparison.challenger_accuracy, comparison.champion_accuracy
    against = f"champion version {champion_version}'s {b:.4f} on the same {n} test images"
    discordant = (
        f"{comparison.challenger_only} images only the challenger gets right, "
        f"{comparison.champion_only} only the champion, exact McNemar p = "
        f"{comparison.p_value:.4g}"
    )
    if a <= b + margin:
        return Verdict(
            False,
            f"test accuracy {a:.4f} does not beat {against} by more than "
            f"track.promotion_margin {margin} ({discordant})",
        )
    if comparison.p_value >= alpha:
        return Verdict(
            False,
            f"test accuracy {a:.4f} beats {against} by more than track.promotion_margin "
            f"{margin}, but not significantly: {discordant} >= track.promotion_alpha {alpha}",
        )
    return Verdict(
        True,
        f"test accuracy {a:.4f} beats {against} by more than track.promotion_margin {margin}, "
        f"significantly: {discordant} < track.promotion_alpha {alpha}",
    )
