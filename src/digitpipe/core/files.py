"""Files that may be hostile: only regular files are opened (a folder, device, FIFO or socket
could block or never end), and small files are read only up to their bound."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from digitpipe.core.errors import DigitpipeError, excerpt, invalid_field

FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}
Report = TypeVar("Report", bound=BaseModel)
MAX_REPORT_BYTES = 16 * 2**20  # a stage's JSON or Markdown report holds at most a few hundred KB


class UnreadableFile(DigitpipeError):
    """A file that cannot be read as asked: ``problem`` says why, the message adds ``advice``."""

    def __init__(self, path: Path, problem: str, advice: str = "") -> None:
        super().__init__(f"{path}: {problem}; {advice}" if advice else f"{path}: {problem}.")
        self.problem = problem


def cannot_read(exc: OSError) -> str:
    """The problem when opening or reading a file failed with ``exc``."""
    return f"cannot read the file ({exc.strerror})"


def check_regular(path: Path, advice: str = "") -> None:
    """Refuse, without opening it, anything but an existing regular file."""
    try:
        info = path.stat()
    except OSError as exc:
        raise UnreadableFile(path, cannot_read(exc), advice) from exc
    if not stat.S_ISREG(info.st_mode):
        kind = FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a plain file")
        raise UnreadableFile(path, f"not a regular file ({kind})", advice)


def read_bounded(path: Path, limit: int, advice: str = "") -> bytes:
    """The bytes of the regular file ``path``, refused unread beyond ``limit`` of them."""
    check_regular(path, advice)
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UnreadableFile(path, cannot_read(exc), advice) from exc
    if len(data) > limit:
        raise UnreadableFile(path, f"larger than {limit / 2**20:g} MiB", advice)
    return data


def rerun(stage: str) -> str:
    """The advice for a file the ``stage`` stage writes that is missing or damaged."""
    return f"rerun the {stage} stage (dvc repro {stage})."


def read_report(path: Path, stage: str) -> str:
    """The text of ``path``, a report the ``stage`` stage writes: at most MAX_REPORT_BYTES of
    UTF-8."""
    try:
        return read_bounded(path, MAX_REPORT_BYTES, rerun(stage)).decode()
    except UnicodeDecodeError as exc:
        raise UnreadableFile(path, f"not UTF-8 text ({exc.reason})", rerun(stage)) from None


def read_json_report(path: Path, stage: str, shape: type[Report]) -> Report:
    """The JSON object in ``path``, a report the ``stage`` stage writes, checked against
    ``shape`` (see ``digitpipe.outputs``)."""
    try:
        report = json.loads(read_report(path, stage))
    except (ValueError, RecursionError) as exc:
        raise UnreadableFile(path, f"not valid JSON ({exc})", rerun(stage)) from None
    if not isinstance(report, dict):
        raise UnreadableFile(path, f"expected a JSON object, not {excerpt(report)}", rerun(stage))
    try:
        return shape.model_validate(report)
    except ValidationError as exc:
        faults = exc.errors()
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        problem = f"unexpected content: {invalid_field(faults[0])}{more}"
        raise UnreadableFile(path, problem, rerun(stage)) from None
