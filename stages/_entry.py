"""What every stage script runs: its digitpipe module behind the library's error boundary, or
one clear message when the Python that DVC started has no digitpipe installed."""

import sys


def main(module: str) -> int:
    """Run the stage ``module``; exit status 2 with advice when digitpipe is not importable."""
    try:
        from digitpipe.core.stage import run_stage
    except ModuleNotFoundError as exc:
        if exc.name != "digitpipe":
            raise
        print(
            f"digitpipe: error: {sys.executable} has no digitpipe installed. Run `make install`,"
            " then `source .venv/bin/activate` before `dvc ...` (or use `make repro`), so that"
            " the stages run with the project's Python.",
            file=sys.stderr,
        )
        return 2
    return run_stage(module)
