"""Prediction files: the predictions table (CSV or Parquet) and a Kaggle submission.

The table has one row per image, in input order:

- ``source``: the INPUT argument the image came from (a picture, folder, CSV or IDX file);
- ``id``: the picture's path, the CSV's 1-based row number or the IDX file's 0-based index;
- ``predicted``: the class name; ``probability``: its probability;
- ``top3``: the three likeliest classes with their probabilities, most likely first, as text
  such as ``7:0.981 1:0.012 9:0.003`` (readable as is, the same in CSV and Parquet);
- ``label``: the true class name, only when some input had labels (empty for those without).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from digitpipe.core.atomic import atomic_path, write_text
from digitpipe.core.errors import DigitpipeError
from digitpipe.predict.inputs import Batch

FORMATS = (".csv", ".parquet")
TOP_K = 3
SUBMISSION_HEADER = "ImageId,Label"


def check_format(path: Path) -> None:
    """Refuse an output path whose extension is not a known format (before any work)."""
    if path.suffix.lower() not in FORMATS:
        raise DigitpipeError(
            f"{path}: unknown output format '{path.suffix}'; use one of {', '.join(FORMATS)}."
        )


def as_text(name: str) -> str:
    """A file name as UTF-8 text: bytes that are not UTF-8 (Python keeps them as surrogates,
    which no UTF-8 file can hold) written as ``\\xe9``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def predictions_frame(
    batches: list[Batch], probabilities: np.ndarray, class_names: list[str]
) -> pd.DataFrame:
    """The predictions table (see the module docstring) of ``batches``, in order."""
    names = np.asarray(class_names, dtype=object)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :TOP_K]
    top = np.take_along_axis(probabilities, order, axis=1)
    frame = pd.DataFrame(
        {
            "source": np.repeat(
                [as_text(str(b.source)) for b in batches], [len(b.ids) for b in batches]
            ),
            "id": [as_text(image_id) for b in batches for image_id in b.ids],
            "predicted": names[order[:, 0]],
            "probability": top[:, 0],
            "top3": [
                " ".join(f"{names[k]}:{p:.3f}" for k, p in zip(ks, ps, strict=True))
                for ks, ps in zip(order, top, strict=True)
            ],
        }
    )
    if any(b.labels is not None for b in batches):
        labels = np.concatenate(
            [np.full(len(b.ids), -1) if b.labels is None else b.labels for b in batches]
        )
        frame["label"] = np.where(labels >= 0, names[labels], None)
    return frame


# A CSV cell a spreadsheet would run as a formula: OWASP's advice on CSV injection is to prefix it
# with a single quote, which the spreadsheet shows as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """``value``, prefixed with ``'`` when it is text a spreadsheet would run as a formula."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def write_predictions(frame: pd.DataFrame, path: Path) -> None:
    """Write the table as CSV (text cells spreadsheet-safe) or Parquet (as is), by the
    extension of ``path``, atomically."""
    check_format(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            frame.map(spreadsheet_safe).to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False, compression="zstd")


def write_submission(path: Path, predicted: Iterable[str]) -> None:
    """A Kaggle digit-recognizer submission: ``ImageId,Label``, ImageId counting from 1 (labels
    spreadsheet-safe)."""
    rows = (
        f"{image_id},{spreadsheet_safe(label)}" for image_id, label in enumerate(predicted, start=1)
    )
    write_text(path, "\n".join([SUBMISSION_HEADER, *rows]) + "\n")
