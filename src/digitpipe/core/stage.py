"""The error boundary every stage and command shares: bad input becomes one message, exit 2."""

from __future__ import annotations

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


def run_stage(stage: Callable[[Params], object], params_file: Path = PARAMS_FILE) -> int:
    """Load params and run one stage, turning user errors into a message and exit status 2."""
    try:
        stage(load_params(params_file))
    except DigitpipeError as exc:
        return fail(str(exc))
    return 0
