"""The drift report of a retrain: does the new data look like the data the champion learned from?

"New data" are the drop-folder batches (image ids ``incoming/<batch>-000012``) in the current
train and val splits that the champion did not train on; the "reference" is the training split
of the champion, as recorded by :func:`data_stats` when it was judged (logged to its run), or,
for a champion without that record or no champion, the current training split without the new
batches. Compared: class frequencies (chi-square), per class the mean and standard deviation of
pixel intensity and the ink area (fraction of pixels > 0, Welch tests), and the champion's
accuracy on the new images against its accuracy on the test split (one-sided Fisher exact test:
both accuracies are measured, so a perfect test score is not taken as certain), overall and,
when there are several new batches, per batch at the Bonferroni level.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import chisquare, fisher_exact, ttest_ind_from_stats

from digitpipe.core.numbers import counted, json_safe
from digitpipe.dataset.images import ImageSet, batch_of
from digitpipe.markdown import literal

MIN_EFFECT = 0.2  # a pixel shift is flagged only from this standardized size (Cohen's small)


def batch_counts(*splits: ImageSet) -> dict[str, int]:
    """Images per drop-folder batch in ``splits``, by batch name."""
    counts = Counter(batch for split in splits for batch in map(batch_of, split.ids) if batch)
    return dict(sorted(counts.items()))


def rows_of(images: ImageSet, batches: set[str], *, inside: bool) -> ImageSet:
    """The rows of ``images`` from (``inside``) or not from the named batches."""
    keep = np.array([(batch_of(i) in batches) == inside for i in images.ids], bool)
    return images.take(np.flatnonzero(keep))


def class_stats(images: ImageSet) -> dict[str, dict[str, float]]:
    """Per class: images, mean and standard deviation of all pixel values (0..255), the
    standard deviation of the per-image mean intensity, and the mean and standard deviation of
    the per-image ink area (fraction of pixels > 0)."""
    stats = {}
    for label, name in enumerate(images.class_names):
        pixels = images.images[images.labels == label].reshape(-1, np.prod(images.image_size))
        n = len(pixels)
        if n == 0:
            stats[name] = {"images": 0}
            continue
        per_image = pixels.mean(axis=1, dtype=np.float64)
        ink = (pixels > 0).mean(axis=1, dtype=np.float64)
        stats[name] = {
            "images": n,
            "pixel_mean": float(per_image.mean()),
            "pixel_std": float(pixels.std(dtype=np.float64)),
            "image_mean_std": float(per_image.std(ddof=1)) if n > 1 else 0.0,
            "ink_mean": float(ink.mean()),
            "ink_std": float(ink.std(ddof=1)) if n > 1 else 0.0,
        }
    return stats


def data_stats(train: ImageSet, batches: dict[str, int]) -> dict:
    """What a model was trained on, logged with it: the training split's size, class counts and
    pixel statistics, and the drop-folder batches it saw (images in train and val)."""
    return {
        "images": len(train),
        "class_names": list(train.class_names),
        "per_class": class_stats(train),
        "batches": batches,
    }


@dataclass(frozen=True)
class ChampionOnNew:
    """The champion's results on each new batch, beside its accuracy on the test split."""

    version: str
    per_batch: dict[str, tuple[int, int]]  # (correct, images) by batch
    test_correct: int
    test_images: int

    @property
    def correct(self) -> int:
        return sum(correct for correct, _ in self.per_batch.values())

    @property
    def images(self) -> int:
        return sum(images for _, images in self.per_batch.values())

    @property
    def test_accuracy(self) -> float:
        return self.test_correct / self.test_images

    def less_accurate_p(self, correct: int, images: int) -> float:
        """One-sided Fisher exact p-value: ``correct`` of ``images`` new images is below the
        test accuracy."""
        table = [
            [correct, images - correct],
            [self.test_correct, self.test_images - self.test_correct],
        ]
        return float(fisher_exact(table, alternative="less").pvalue)


def drift(
    reference: dict,
    reference_label: str,
    new: ImageSet,
    new_batches: dict[str, int],
    champion: ChampionOnNew | None,
    alpha: float,
) -> dict:
    """Compare ``new`` images with the ``reference`` statistics (:func:`data_stats`); return
    the report as a JSON-ready mapping whose ``flags`` list what differs at level ``alpha``."""
    names = list(new.class_names)
    report: dict = {
        "reference": {"what": reference_label, "images": reference["images"]},
        "new": {"images": len(new), "batches": new_batches},
        "alpha": alpha,
        "flags": [],
    }
    if not len(new):
        report["summary"] = "no new data: no drop-folder batch the champion has not seen"
        return report
    new_stats = class_stats(new)
    ref_counts = np.array([reference["per_class"][c]["images"] for c in names], float)
    new_counts = np.array([new_stats[c]["images"] for c in names], float)
    report["classes"] = _class_frequencies(names, ref_counts, new_counts, alpha, report["flags"])
    report["pixels"] = _pixel_shifts(names, reference, new_stats, alpha, report["flags"])
    if champion is not None:
        accuracy = champion.correct / champion.images
        p = champion.less_accurate_p(champion.correct, champion.images)
        report["champion_on_new"] = {
            "version": champion.version,
            "accuracy": accuracy,
            "correct": champion.correct,
            "images": champion.images,
            "test_accuracy": champion.test_accuracy,
            "test_images": champion.test_images,
            "p_value": p,
            "per_batch": _batch_accuracy(champion, alpha, report["flags"]),
        }
        if p < alpha:
            report["flags"].append(
                f"champion version {champion.version} is less accurate on the new images "
                f"({accuracy:.4f}) than on the test split ({champion.test_accuracy:.4f}): "
                f"one-sided Fisher exact p = {p:.3g}"
            )
    report["checks"] = checks(report)
    report["summary"] = summary(report)
    return json_safe(report)


def checks(report: dict) -> int:
    """How many checks a report with new data made: classes absent from the reference, class
    frequencies, each pixel test, and the champion's accuracy overall and per batch (with
    several); each flag is one of them."""
    champion = report.get("champion_on_new")
    batches = len(champion["per_batch"]) if champion else 0
    on_new = 0 if champion is None else 1 + (batches if batches > 1 else 0)
    return 2 + report["pixels"]["tests"] + on_new


def summary(report: dict) -> str:
    """The report in one short line: how many checks flag drift."""
    flagged, made = len(report["flags"]), report["checks"]
    if not flagged:
        return f"nothing flagged in {counted(made, 'check')}"
    return f"{flagged} of {counted(made, 'check')} {'flags' if flagged == 1 else 'flag'} drift"


def _batch_accuracy(champion: ChampionOnNew, alpha: float, flags: list[str]) -> dict:
    """Per new batch, the champion's accuracy and its Fisher exact test; with several batches,
    those below the Bonferroni level are flagged (with one, the overall test is the batch's)."""
    rows = {
        batch: {
            "correct": correct,
            "images": images,
            "accuracy": correct / images,
            "p_value": champion.less_accurate_p(correct, images),
        }
        for batch, (correct, images) in champion.per_batch.items()
    }
    if len(rows) < 2:
        return rows
    level = alpha / len(rows)
    flags += [
        f"champion version {champion.version} is less accurate on the batch {batch} "
        f"({row['accuracy']:.4f}) than on the test split: Fisher exact p = "
        f"{row['p_value']:.3g}, Bonferroni level {level:.2g}"
        for batch, row in rows.items()
        if row["p_value"] < level
    ]
    return rows


def _class_frequencies(
    names: list[str], ref: np.ndarray, new: np.ndarray, alpha: float, flags: list[str]
) -> dict:
    """Chi-square goodness of fit of the new class counts to the reference shares."""
    known = ref > 0
    unseen = [names[i] for i in np.flatnonzero(~known & (new > 0))]
    if unseen:
        flags.append(f"classes absent from the reference data: {', '.join(unseen)}")
    expected = np.zeros_like(ref)
    expected[known] = ref[known] / ref[known].sum() * new[known].sum()
    result: dict = {
        "per_class": {
            name: {
                "reference": int(ref[i]),
                "reference_share": float(ref[i] / max(ref.sum(), 1)),
                "new": int(new[i]),
                "new_share": float(new[i] / max(new.sum(), 1)),
                "expected": float(expected[i]),
            }
            for i, name in enumerate(names)
        }
    }
    if known.sum() < 2 or new[known].sum() == 0:
        return result | {"chi_square": None, "dof": None, "p_value": None}
    statistic, p = chisquare(new[known], expected[known])
    result |= {
        "chi_square": float(statistic),
        "dof": int(known.sum() - 1),
        "p_value": float(p),
        "small_expected": bool((expected[known] < 5).any()),
    }
    if p < alpha:
        flags.append(
            f"class frequencies differ from the reference: chi-square {statistic:.1f} "
            f"({known.sum() - 1} dof), p = {p:.3g}"
        )
    return result


MEASURED = {"intensity": "mean intensity", "ink": "ink area"}  # as the flags name them


def _pixel_shifts(
    names: list[str], reference: dict, new: dict, alpha: float, flags: list[str]
) -> dict:
    """Per class, Welch tests of the per-image mean intensity and ink area (Bonferroni over all
    tests); a shift is flagged when significant and at least ``MIN_EFFECT`` reference standard
    deviations large."""
    measures = {"intensity": ("pixel_mean", "image_mean_std"), "ink": ("ink_mean", "ink_std")}
    rows: dict = {}
    tests = []
    for name in names:
        ref, cur = reference["per_class"][name], new[name]
        rows[name] = {"reference": ref, "new": cur}
        if ref["images"] < 2 or cur["images"] < 2:
            continue
        for measure, (mean, std) in measures.items():
            if ref[std] == 0 and cur[std] == 0:
                continue
            _, p = ttest_ind_from_stats(
                cur[mean], cur[std], cur["images"], ref[mean], ref[std], ref["images"], False
            )
            effect = (cur[mean] - ref[mean]) / ref[std] if ref[std] else math.inf
            tests.append((name, measure, float(p), float(effect)))
    level = alpha / max(len(tests), 1)
    for name, measure, p, effect in tests:
        rows[name][f"{measure}_p_value"] = p
        rows[name][f"{measure}_effect"] = effect
        if p < level and abs(effect) >= MIN_EFFECT:
            flags.append(
                f"pixels of class {name} shifted: per-image {MEASURED[measure]} "
                f"{effect:+.2f} reference sd (Welch p = {p:.3g}, Bonferroni level {level:.2g})"
            )
    return {"per_class": rows, "tests": len(tests), "level": level}


def to_markdown(report: dict, title: str) -> str:
    """The report as a short Markdown page."""
    lines = [f"# {title}", ""]
    new, ref = report["new"], report["reference"]
    batches = ", ".join(f"{name} ({count:,})" for name, count in new["batches"].items())
    lines += [
        f"- New data: {counted(new['images'], 'image')} from the drop-folder batches {batches}."
        if batches
        else "- New data: none (no drop-folder batch in the training data).",
        f"- Reference: {ref['what']}: {counted(ref['images'], 'image')}.",
        f"- Checks at level {report['alpha']}: {report['summary']}.",
        "",
    ]
    if "classes" not in report:
        return "\n".join(lines)
    if report["flags"]:
        lines += ["## Flagged", "", *(f"- {literal(flag)}" for flag in report["flags"]), ""]
    classes = report["classes"]
    p = classes["p_value"]
    lines += [
        "## Class frequencies",
        "",
        "chi-square "
        + (
            "not computed (fewer than two classes)"
            if p is None
            else f"{classes['chi_square']:.2f}, {classes['dof']} dof, p = {p:.3g}"
            + (" (some expected counts below 5: approximate)" if classes["small_expected"] else "")
        ),
        "",
        "| class | reference | share | new | share | expected |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in classes["per_class"].items():
        lines.append(
            f"| {literal(name)} | {row['reference']} | {row['reference_share']:.3f} | "
            f"{row['new']} | {row['new_share']:.3f} | {row['expected']:.1f} |"
        )
    lines += [
        "",
        "## Pixels per class",
        "",
        "Intensity: mean ± standard deviation of all pixel values (0-255); ink: mean fraction of "
        "pixels > 0 per image.",
        "",
        "| class | intensity, reference | intensity, new | ink, reference | ink, new |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in report["pixels"]["per_class"].items():
        ref_row, new_row = row["reference"], row["new"]
        lines.append(
            f"| {literal(name)} | {_intensity(ref_row)} | {_intensity(new_row)} | "
            f"{_ink(ref_row)} | {_ink(new_row)} |"
        )
    champion = report.get("champion_on_new")
    lines += ["", "## The champion on the new images", ""]
    if champion is None:
        lines.append("No champion to run.")
    else:
        lines.append(
            f"Champion version {champion['version']}: accuracy {champion['accuracy']:.4f} "
            f"({champion['correct']} of {champion['images']}) on the new images, "
            f"{champion['test_accuracy']:.4f} on the {champion['test_images']} test images "
            f"(one-sided Fisher exact p = {champion['p_value']:.3g})."
        )
        batches = champion.get("per_batch", {})
        if len(batches) > 1:
            lines += ["", "| batch | correct | images | accuracy | Fisher exact p |"]
            lines += ["| --- | ---: | ---: | ---: | ---: |"]
            lines += [
                f"| {literal(name)} | {row['correct']} | {row['images']} | "
                f"{row['accuracy']:.4f} | {row['p_value']:.3g} |"
                for name, row in batches.items()
            ]
    return "\n".join(lines) + "\n"


def _intensity(row: dict) -> str:
    return f"{row['pixel_mean']:.1f} ± {row['pixel_std']:.1f}" if row["images"] else "-"


def _ink(row: dict) -> str:
    return f"{row['ink_mean']:.3f}" if row["images"] else "-"
