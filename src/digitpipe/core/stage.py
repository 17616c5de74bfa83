"""The error boundary every stage and command shares: bad input becomes one message, exit 2."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from digitpipe.core.config import Params, load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.paths import PARAMS_FILE


def fail(message: str) -> int:
    """Print a user-facing error and return the exit status for it."""
    print(f"digitpipe: error: {message}", file=sys.stderr)
    return 2


# Libraries whose INFO lines (hardware probes, tips, database migrations) are noise in a
# stage's log; their warnings still show.
QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "mlflow", "alembic")


def quiet_libraries() -> None:
    """Show only warnings and errors from the libraries the stages use, and no MLflow artifact
    progress bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_stage(stage: Callable[[Params], object], params_file: Path = PARAMS_FILE) -> int:
    """Load params and run one stage, turning user errors into a message and exit status 2."""
    quiet_libraries()
    try:
        stage(load_params(params_file))
    except DigitpipeError as exc:
        return fail(str(exc))
    return 0
