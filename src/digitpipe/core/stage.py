"""The error boundary every stage and command shares: bad input becomes one message, exit 2."""

from __future__ import annotations

import errno
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

from digitpipe.core.config import load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.lifetime import die_with_launcher
from digitpipe.core.paths import PARAMS_FILE

P = ParamSpec("P")


def fail(message: str, error: BaseException | None = None) -> int:
    """Print a user-facing error, with the notes added to ``error`` on its way out (what became
    of the MLflow run), and return the exit status for it."""
    notes = getattr(error, "__notes__", [])
    print(" ".join(["digitpipe: error:", message, *notes]), file=sys.stderr)
    return 2


# OS errors the user can fix (disk full, quota, read-only file system, permissions), as messages
# about the file ({}). Any other OSError is a bug and keeps its traceback.
FIXABLE_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device while writing {}; free space and rerun",
    errno.EDQUOT: "disk quota exceeded while writing {}; free space or raise the quota and rerun",
    errno.EROFS: "read-only file system while writing {}; make it writable and rerun",
    errno.EACCES: "permission denied on {}; give this user access to it and rerun",
    errno.ENAMETOOLONG: "the file name {} is too long for the file system; shorten it",
    errno.EISDIR: "{} is a folder where a file is written; give a file name",
    errno.ENOTDIR: "a part of the path {} is a file, not a folder; fix the path",
}


def fail_os(exc: OSError) -> int:
    """Report an OS error the user can fix like :func:`fail`; re-raise any other (a bug)."""
    if exc.errno not in FIXABLE_OS_ERRORS:
        raise exc
    named = exc.filename2 or exc.filename  # a rename's target, not the temporary file renamed
    where = "the outputs" if named is None else str(named)
    return fail(FIXABLE_OS_ERRORS[exc.errno].format(where) + ".", exc)


# Libraries whose INFO lines (hardware probes, tips, database migrations) are noise in a
# stage's log; their warnings still show.
QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic")
# MLflow logs each failed SQL store call with its traceback (a locked store: 13 of them) before
# raising it; the stage reports the error it raises once, naming the store.
SILENT_LOGGERS = ("mlflow.store.db.utils",)


def quiet_libraries() -> None:
    """Show only warnings and errors from the libraries the stages use, and no MLflow artifact
    progress bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SILENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def user_errors(handler: Callable[P, int]) -> Callable[P, int]:
    """``handler`` (returning an exit status) with user errors, a DigitpipeError or an OS error
    the user can fix, turned into one message and exit status 2."""

    @functools.wraps(handler)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return handler(*args, **kwargs)
        except DigitpipeError as exc:
            return fail(str(exc), exc)
        except BrokenPipeError:
            raise  # the reader of our output left: not the user's fault (cli.main ends quietly)
        except OSError as exc:
            return fail_os(exc)

    return guarded


@user_errors
def run_stage(module: str, params_file: Path = PARAMS_FILE) -> int:
    """Validate the params, then import the stage ``module`` and call its ``run(params)``;
    user errors become one message and exit status 2.

    The module is imported only after validation: torch, Lightning and MLflow take seconds to
    import, and a typo in params.yaml should be reported at once.
    """
    quiet_libraries()
    die_with_launcher()
    params = load_params(params_file)
    stage = importlib.import_module(module)
    quiet_libraries()  # importing Lightning set its INFO level again
    stage.run(params)
    return 0
