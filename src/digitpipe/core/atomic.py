"""Atomic outputs: write to a temporary sibling, then rename into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from digitpipe.core.numbers import json_safe


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_leftovers(target: Path) -> None:
    """Remove the temporary files or folders an interrupted write to ``target`` left behind
    (one writer per target: DVC runs a stage once at a time)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _prepared(target: str | os.PathLike) -> Path:
    """``target`` as a Path whose folder exists, cleared of an interrupted write's leftovers."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    return target


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success."""
    target = _prepared(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_umask())
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.filename is None:  # a full disk fails the write at close, naming no file
            exc.filename = str(target)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented, standard JSON (NaN and infinities as null) to ``target``
    atomically."""
    write_text(target, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


@contextmanager
def staged_outputs(root: str | os.PathLike, stage: str, outputs: Sequence[Path]) -> Iterator[Path]:
    """Yield a staging folder inside ``root`` in which the ``stage`` writes all its ``outputs``
    (paths relative to ``root``, files or folders) at the same relative paths; on success publish
    them together, else leave the previous outputs as they were.

    Every byte is written before anything is published, so a full disk or a failed step never
    leaves a mix of old and new outputs; publishing is only renames, and a failed or interrupted
    one puts the previous outputs back. An output the stage did not write is removed.
    """
    label = _prepared(Path(root) / f"{stage}-outputs")
    staging = Path(tempfile.mkdtemp(prefix=f".{label.name}.", suffix=".tmp", dir=label.parent))
    try:
        yield staging
        _publish(staging, label.parent, outputs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _publish(staging: Path, root: Path, outputs: Sequence[Path]) -> None:
    """Move each staged output onto its place under ``root``, the previous one set aside first;
    on any failure (a signal's SystemExit included) undo every move, newest first."""
    moves: list[tuple[Path, Path]] = []  # (from, to), in the order done
    try:
        for output in outputs:
            target, staged = root / output, staging / output
            remove_leftovers(target)
            if target.exists() or target.is_symlink():
                previous = target.with_name(f".{target.name}.previous.tmp")
                os.replace(target, previous)
                moves.append((target, previous))
            if staged.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
                moves.append((staged, target))
    except BaseException:
        for origin, moved in reversed(moves):
            os.replace(moved, origin)
        raise
    for _, moved in moves:
        if moved.name.endswith(".previous.tmp"):
            _remove(moved)
