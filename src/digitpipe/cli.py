"""The `digitpipe` command line: the pipeline stages, predict, stats and retrain."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from digitpipe import __version__
from digitpipe.core.config import TrackParams, load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.numbers import json_safe
from digitpipe.core.paths import PARAMS_FILE
from digitpipe.core.stage import quiet_libraries, run_stage, user_errors
from digitpipe.outputs.train import MODEL_DIR

# Pipeline stages: `digitpipe NAME` runs the stage's `run(params)` like `dvc repro` would.
STAGES = {
    "ingest": ("digitpipe.ingest.run", "raw IDX/CSV data into Parquet splits"),
    "train": ("digitpipe.train.run", "train the configured model (Lightning)"),
    "evaluate": ("digitpipe.evaluate.run", "metrics, confusion matrix and worst cases on test"),
    "activations": ("digitpipe.activations.run", "export and draw layer outputs of chosen images"),
    "report": ("digitpipe.report.run", "assemble reports/report.md and report.html"),
}


def _stage(module: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return run_stage(module, args.params)

    return handler


@user_errors
def _retrain(args: argparse.Namespace) -> int:
    from digitpipe.retrain.command import Busy, history, retrain

    quiet_libraries()  # MLflow's INFO lines (store migrations, ...) are no part of the decision
    params = load_params(args.params)
    if args.history:
        print(history(params.track))
        return 0
    try:
        outcome = retrain(params, wait_s=args.wait)
    except Busy as busy:
        print(f"digitpipe retrain: skipped: {busy}.")
        return 0
    print(outcome.message())
    return 0


def _transfer(direction: str) -> Callable[[argparse.Namespace], int]:
    @user_errors
    def handler(args: argparse.Namespace) -> int:
        from digitpipe import remote

        print(getattr(remote, direction)(args.remote))
        return 0

    return handler


def stats_command(path: Path, as_json: bool) -> str:
    """What `digitpipe stats` prints: Markdown tables, or one standard JSON object (null where a
    statistic is undefined)."""
    from digitpipe.evaluate.stats import confusion_stats, read_confusion_csv, to_markdown

    stats = confusion_stats(*read_confusion_csv(path))
    if as_json:
        return json.dumps(json_safe(stats.to_dict()), indent=2, allow_nan=False)
    return to_markdown(stats).rstrip("\n")


@user_errors
def _stats(args: argparse.Namespace) -> int:
    print(stats_command(args.confusion, args.json))
    return 0


@user_errors
def _predict(args: argparse.Namespace) -> int:
    from digitpipe.predict.command import predict
    from digitpipe.predict.inputs import LABEL_COLUMN
    from digitpipe.predict.predictor import Predictor

    # A --params given must be read; the default params.yaml only when there is one.
    params_file = args.params or PARAMS_FILE
    params = load_params(params_file) if args.params or PARAMS_FILE.exists() else None
    predictor = (
        Predictor.from_uri(args.model_uri, params.track if params else TrackParams(), Path("."))
        if args.model_uri
        else Predictor.from_dir(_model_dir(args.model))
    )
    label_column = params.data.csv_label_column if params else LABEL_COLUMN
    summary = predict(
        args.inputs,
        predictor,
        args.out,
        args.submission,
        strict=args.strict,
        label_column=label_column,
    )
    print(summary)
    return 0


def _model_dir(given: Path | None) -> Path:
    """``--model``, else ``models`` in the current folder; outside a project (no params.yaml
    here) a missing one is refused as such, not as a model to train."""
    if given is None and not MODEL_DIR.is_dir() and not PARAMS_FILE.exists():
        raise DigitpipeError(
            f"no model folder {MODEL_DIR} in the current folder ({Path.cwd()}); run predict "
            "from the project folder, or pass --model DIR (a train-stage model folder) or "
            "--model-uri URI (a registered model)."
        )
    return given or MODEL_DIR


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, 0 or more (filelock waits forever on a negative or
    NaN timeout)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def described(commands, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose one-line help is also its description in `digitpipe NAME --help`."""
    return commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digitpipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in STAGES.items():
        stage = commands.add_parser(
            name,
            help=help_text,
            description=f"The {name} stage, as dvc repro runs it: {help_text}.",
        )
        stage.add_argument(
            "--params", type=Path, default=PARAMS_FILE, help="the parameters (default: params.yaml)"
        )
        stage.set_defaults(handler=_stage(module))
    stats = described(
        commands, "stats", "accuracy CI, kappa, McNemar and per-class statistics of a confusion CSV"
    )
    stats.add_argument(
        "confusion",
        type=Path,
        metavar="CONFUSION.csv",
        help="header row and first column: class names; rows actual, columns predicted",
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=_stats)
    predict = described(
        commands, "predict", "classify pictures (files or folders), pixel CSVs or IDX files"
    )
    predict.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="a picture, a folder of pictures (searched recursively), a pixel CSV or an IDX file",
    )
    source = predict.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="a train-stage model folder (default: models, in the current folder)",
    )
    source.add_argument(
        "--model-uri", metavar="URI", help="a registered model, e.g. models:/digitpipe@champion"
    )
    predict.add_argument(
        "--params",
        type=Path,
        help="the project's params: the tracking store of --model-uri (track section; a "
        "relative SQLite path is in the current folder, the project, as for every command) and "
        "a CSV's label column (data.csv_label_column); default: params.yaml if present",
    )
    predict.add_argument(
        "--out",
        type=Path,
        default=Path("predictions.csv"),
        metavar="FILE",
        help=".csv or .parquet: id, predicted class, probability, top 3",
    )
    predict.add_argument(
        "--submission",
        type=Path,
        metavar="FILE",
        help="also write a Kaggle ImageId,Label file (one pixel-CSV input)",
    )
    predict.add_argument(
        "--strict", action="store_true", help="fail on an unreadable input instead of skipping it"
    )
    predict.set_defaults(handler=_predict)
    retrain = described(
        commands,
        "retrain",
        "run dvc repro, register the model, promote it if it significantly beats the champion "
        "on the same test images; write a drift report",
    )
    retrain.add_argument(
        "--params", type=Path, default=PARAMS_FILE, help="the parameters (default: params.yaml)"
    )
    retrain.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a running retrain to finish (default: skip)",
    )
    retrain.add_argument(
        "--history",
        action="store_true",
        help="list the registered versions (date, data size, accuracy, p-value, decision); "
        "retrain nothing",
    )
    retrain.set_defaults(handler=_retrain)
    for direction, text in (
        ("push", "push data, outputs and the run-cache to the DVC remote"),
        ("pull", "pull data, outputs and the run-cache from the DVC remote (empty: nothing)"),
    ):
        transfer = described(commands, direction, text)
        transfer.add_argument(
            "--remote",
            default=os.environ.get("DVC_REMOTE"),
            metavar="URL|NAME",
            help="a remote URL (s3://bucket/path, ssh://host/path, a folder) or a configured "
            "remote's name, for this command only: nothing is written to .dvc/config or "
            ".dvc/config.local (default: $DVC_REMOTE, else the default remote)",
        )
        transfer.set_defaults(handler=_transfer(direction))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a reader gone away shows here rather than at exit
    except BrokenPipeError:
        # The reader stopped reading (`| head`): stop quietly, as a command killed by SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
