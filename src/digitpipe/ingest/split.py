"""Seeded, stratified sampling of row indices by label."""

from __future__ import annotations

import numpy as np


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of ``count`` rows whose class shares match ``labels`` (largest remainder).

    The same labels, count and seed always give the same rows.
    """
    classes, class_sizes = np.unique(labels, return_counts=True)
    quota = class_sizes * (count / len(labels))
    per_class = np.floor(quota).astype(np.int64)
    shortfall = count - int(per_class.sum())
    per_class[np.argsort(-(quota - per_class), kind="stable")[:shortfall]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:n]
        for label, n in zip(classes, per_class, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def split_off(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) sorted index arrays; ``fraction`` of the rows held out, stratified."""
    held_out = stratified_sample(labels, round(fraction * len(labels)), seed)
    kept = np.setdiff1d(np.arange(len(labels)), held_out, assume_unique=True)
    return kept, held_out
