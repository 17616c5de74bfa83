"""The pipeline state, named by what determines it: the trained weights, the data they were
trained on, and the params of every stage. The report prints these digests and the MLflow run of
the state carries them as tags, so the report finds its run through MLflow, never through a run
id or a date in its own bytes (those would make the report differ between identical runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from digitpipe.core.config import Params
from digitpipe.core.files import UnreadableFile, cannot_read, check_regular, rerun
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import MODEL_DIR, WEIGHTS_FILE
from digitpipe.provenance import file_digest, files_digest, json_digest

# The params.yaml sections the stages read that can change a result (not track, not runtime).
PIPELINE_SECTIONS = ("data", "model", "train", "evaluate", "activations", "report")
TRAINING_SPLITS = ("train", "val")  # what the weights were fitted and selected on

WEIGHTS_DIGEST_TAG = "digitpipe.model_digest"  # SHA-256 of the run's model.safetensors
DATA_DIGEST_TAG = "digitpipe.data_digest"
PARAMS_DIGEST_TAG = "digitpipe.params_digest"
STATE_TAG = "digitpipe.state"
STATE_LENGTH = 16  # hex digits: short enough to read, far from any collision among runs


def readable(paths: list[Path], stage: str) -> list[Path]:
    """``paths``, each a regular file the ``stage`` stage writes, else one message saying which
    is not and how to bring it back."""
    for path in paths:
        check_regular(path, rerun(stage))
    return paths


def weights_digest(root: Path) -> str:
    """The SHA-256 of the trained weights: what ties a model to the runs that used it."""
    (weights,) = readable([root / MODEL_DIR / WEIGHTS_FILE], "train")
    try:
        return file_digest(weights)
    except OSError as exc:
        raise UnreadableFile(weights, cannot_read(exc), rerun("train")) from exc


def training_data_digest(root: Path) -> str:
    """One SHA-256 over the processed splits the weights were trained on."""
    splits = readable([root / split_file(split) for split in TRAINING_SPLITS], "ingest")
    try:
        return files_digest(splits)
    except OSError as exc:
        where = Path(exc.filename or splits[0])
        raise UnreadableFile(where, cannot_read(exc), rerun("ingest")) from exc


def params_digest(params: Params) -> str:
    """The SHA-256 of the validated params of every stage."""
    return json_digest(params.model_dump(mode="json", include=set(PIPELINE_SECTIONS)))


@dataclass(frozen=True)
class PipelineState:
    weights: str
    data: str
    params: str

    @property
    def digest(self) -> str:
        return json_digest([self.weights, self.data, self.params])[:STATE_LENGTH]

    def tags(self) -> dict[str, str]:
        """The MLflow tags by which the run of this state is found."""
        return {
            WEIGHTS_DIGEST_TAG: self.weights,
            DATA_DIGEST_TAG: self.data,
            PARAMS_DIGEST_TAG: self.params,
            STATE_TAG: self.digest,
        }


def pipeline_state(params: Params, root: Path) -> PipelineState:
    return PipelineState(weights_digest(root), training_data_digest(root), params_digest(params))
