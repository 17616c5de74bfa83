"""The train stage's outputs: the model, and how its training went."""

from __future__ import annotations

from pathlib import Path

from digitpipe.outputs import Declared, StageReport

MODEL_DIR = Path("models")
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
CHECKPOINT_FILE = "model.ckpt"
RECIPE_FILE = "recipe.json"  # the resolved training recipe, beside the weights it trained
TRAIN_REPORTS = Path("reports/train")
HISTORY = TRAIN_REPORTS / "history.csv"  # drawn by dvc.yaml's top-level plots
SUMMARY = TRAIN_REPORTS / "summary.json"
LEARNING_CURVES = TRAIN_REPORTS / "learning_curves.png"
# Not outputs: how long training took differs between identical runs (a top-level metric,
# hashed into no dvc.lock), and the resume state removed on success.
SPEED = TRAIN_REPORTS / "speed.json"
CHECKPOINT_ROOT = Path("checkpoints")

DECLARED = Declared(outs=(MODEL_DIR, HISTORY, SUMMARY), plots=(LEARNING_CURVES,))


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
