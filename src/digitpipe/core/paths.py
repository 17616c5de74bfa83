"""Where every artifact lives, relative to the project root: dvc.yaml declares the same paths
(tests/test_layout.py checks that they agree)."""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")

# ingest
PROCESSED_DIR = Path("data/processed")
INGEST_REPORTS = Path("reports/ingest")

# train
MODEL_DIR = Path("models")
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
CHECKPOINT_FILE = "model.ckpt"
RECIPE_FILE = "recipe.json"  # the resolved training recipe, beside the weights it trained
TRAIN_REPORTS = Path("reports/train")
CHECKPOINT_ROOT = Path("checkpoints")  # resume state, outside DVC's outputs; removed on success

# evaluate, activations, report
EVALUATE_REPORTS = Path("reports/evaluate")
ACTIVATIONS_REPORTS = Path("reports/activations")
REPORTS = Path("reports")

# local state of this clone that no stage output depends on (locks, the last MLflow run)
STATE_DIR = Path(".digitpipe")


def split_file(split: str) -> Path:
    """The Parquet file of one split (train, val, test, predict)."""
    return PROCESSED_DIR / f"{split}.parquet"
