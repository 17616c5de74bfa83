"""The error boundary every stage and command shares: bad input becomes one message, exit 2."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

from digitpipe.core.config import load_params
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


def run_stage(module: str, params_file: Path = PARAMS_FILE) -> int:
    """Validate the params, then import the stage ``module`` and call its ``run(params)``;
    user errors become one message and exit status 2.

    The module is imported only after validation: torch, Lightning and MLflow take seconds to
    import, and a typo in params.yaml should be reported at once.
    """
    quiet_libraries()
    try:
        params = load_params(params_file)
        importlib.import_module(module).run(params)
    except DigitpipeError as exc:
        return fail(str(exc))
    return 0
