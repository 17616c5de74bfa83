"""The `digitpipe` command line, and the runner that DVC stage scripts share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from digitpipe.config import PARAMS_FILE, Params, load_params
from digitpipe.errors import DigitpipeError


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


def _ingest(args: argparse.Namespace) -> int:
    from digitpipe.data.ingest import run

    return run_stage(run, args.params)


def _train(args: argparse.Namespace) -> int:
    from digitpipe.train.run import run

    return run_stage(run, args.params)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest", help="raw IDX/CSV data into Parquet splits")
    ingest.add_argument("--params", type=Path, default=PARAMS_FILE)
    ingest.set_defaults(handler=_ingest)
    train = commands.add_parser("train", help="train the configured model (Lightning)")
    train.add_argument("--params", type=Path, default=PARAMS_FILE)
    train.set_defaults(handler=_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
