"""Where a result came from: the git commit of the source, and the digests of files and params."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from digitpipe.core.errors import DigitpipeError

# DVC deletes a stage's outputs before running it, git-tracked metrics and plots included: only
# the source (code, params, raw data) counts as changed.
SOURCE_PATHS = (":(exclude)reports", ":(exclude)dvc.lock")


@dataclass(frozen=True)
class Commit:
    """A git commit, and whether the work tree's source differs from it."""

    sha: str
    dirty: bool

    def describe(self) -> str:
        return f"{self.sha[:10]}{' with uncommitted changes' if self.dirty else ''}"


def file_digest(path: Path, length: int = 64) -> str:
    """The first ``length`` hex digits of the file's SHA-256, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:length]


WEIGHTS_DIGEST_KEY = "weights_sha256"  # model.json's record of model.safetensors' SHA-256


def check_weights_digest(weights: Path, recorded: str | None, actual: str | None = None) -> str:
    """The SHA-256 of ``weights`` (model.safetensors), refused when it is not the one its
    model.json records: one flipped bit moved a test accuracy from 79.5% to 75.5% unnoticed. A
    model.json of earlier versions records none: nothing to check. ``actual``: the digest
    already taken (the report's pipeline state holds it), not taken again."""
    actual = file_digest(weights) if actual is None else actual
    if recorded is not None and actual != recorded:
        raise DigitpipeError(
            f"{weights}: the weights' SHA-256 is {actual[:16]}..., but model.json records "
            f"{recorded[:16]}...: the file was damaged or changed after training, and is not "
            "used. Restore it with `dvc checkout models` (or retrain: `dvc repro`)."
        )
    return actual


def git_commit(root: Path) -> Commit | None:
    """The commit checked out at ``root``; None outside a git repository."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS))
    except (OSError, subprocess.CalledProcessError):
        return None
    return Commit(sha, dirty)


def files_digest(paths: list[Path]) -> str:
    """One SHA-256 over the files' names and SHA-256s: the same files, the same digest."""
    listing = "\n".join(f"{path.name} {file_digest(path)}" for path in paths)
    return hashlib.sha256(listing.encode()).hexdigest()


def json_digest(value: object) -> str:
    """The SHA-256 of ``value`` as canonical JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
