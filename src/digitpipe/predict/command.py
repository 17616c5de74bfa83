"""`digitpipe predict INPUT...`: read the inputs, check them against the model, predict, write."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from digitpipe.core.errors import DigitpipeError
from digitpipe.core.numbers import counted
from digitpipe.predict.inputs import LABEL_COLUMN, read_inputs
from digitpipe.predict.output import (
    check_format,
    predictions_frame,
    write_predictions,
    write_submission,
)
from digitpipe.predict.predictor import Predictor


def real(path: Path) -> Path:
    """``path`` with its links followed as far as they go (a link loop stays as it is, and is
    then refused where it is read)."""
    return Path(os.path.realpath(path))


def check_outputs(inputs: list[Path], out: Path, submission: Path | None) -> None:
    """Refuse, before any work, an output that is a folder or under a file, that would
    overwrite an input, or the other output."""
    for output in (out, submission):
        if output is None:
            continue
        if output.is_dir():
            raise DigitpipeError(f"{output}: is a folder; give the output a file name.")
        blocking = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise DigitpipeError(
                f"{output}: cannot be written, {blocking} is a file, not a folder."
            )
    if submission is not None and real(out) == real(submission):
        raise DigitpipeError(
            f"{out}: given as both --out and --submission; write them to two files."
        )
    for output in (out, submission):
        source = next((p for p in inputs if output and real(p) == real(output)), None)
        if source is not None:
            raise DigitpipeError(
                f"{output}: writing the predictions there would overwrite the input {source}; "
                "choose another output file."
            )


def predict(
    inputs: list[Path],
    predictor: Predictor,
    out: Path,
    submission: Path | None,
    *,
    strict: bool,
    label_column: str = LABEL_COLUMN,
) -> str:
    """Predict every readable input into ``out`` (and ``submission``); return the summary line.

    Skipped files are reported on stderr; with ``strict`` the first one raises instead.
    Nothing is written unless every check passes.
    """
    check_format(out)
    check_outputs(inputs, out, submission)
    read = read_inputs(inputs, predictor.image_size, strict=strict, label_column=label_column)
    for message in read.skipped:
        print(f"digitpipe: warning: skipped {message}", file=sys.stderr)
    if not read.batches:
        raise DigitpipeError("nothing to predict: no input could be read.")
    for batch in read.batches:
        predictor.check(batch)
    for warning in filter(None, map(predictor.scale_warning, read.batches)):
        print(f"digitpipe: warning: {warning}", file=sys.stderr)
    if submission is not None and [b.kind for b in read.batches] != ["csv"]:
        raise DigitpipeError(
            f"{submission}: a Kaggle submission needs exactly one input, a pixel CSV in the "
            "Kaggle test.csv layout (its ImageId is the row number)."
        )
    probabilities = predictor.probabilities(*(batch.images for batch in read.batches))
    frame = predictions_frame(read.batches, probabilities, predictor.spec.class_names)
    write_predictions(frame, out)
    if submission is not None:
        write_submission(submission, frame["predicted"])
    summary = f"predicted {counted(len(frame), 'image')} -> {out}"
    if submission is not None:
        summary += f" and {submission}"
    if "label" in frame:
        labelled = frame["label"].notna()
        accuracy = (frame["predicted"] == frame["label"])[labelled].mean()
        summary += f" (accuracy {accuracy:.4f} on {labelled.sum()} labelled)"
    if read.skipped:
        summary += f"; {len(read.skipped)} unreadable files skipped"
    return summary
