"""`digitpipe retrain`: run the pipeline, register the model, promote it only if it wins a fair
test against the champion, and report how the new data differs from the champion's.

Meant for schedules (cron, systemd timers, CI): one run at a time under a lock file, unchanged
stages skipped by DVC, new raw data under data/raw (the drop folder data.incoming included)
picked up, "nothing new" when there is no new model to judge, a clear exit status.

The fair test: the champion's safetensors weights are fetched from the registry and both models
predict the current test split; the challenger is promoted only if its accuracy beats the
champion's by more than track.promotion_margin and the exact McNemar test on the images exactly
one of them gets right gives p < track.promotion_alpha. With no champion, the challenger must
reach track.min_accuracy.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from filelock import FileLock, Timeout
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient
from torch import nn

from digitpipe.core.atomic import write_json, write_text
from digitpipe.core.config import Params, TrackParams
from digitpipe.core.errors import DigitpipeError
from digitpipe.core.lifetime import run_as_group
from digitpipe.dataset.images import ImageSet, batch_of, concat
from digitpipe.dataset.parquet import read_split
from digitpipe.model.export import ModelSpec, load_model
from digitpipe.model.inference import predict_probabilities
from digitpipe.outputs.ingest import split_file
from digitpipe.outputs.train import MODEL_DIR
from digitpipe.provenance import file_digest
from digitpipe.retrain.drift import (
    ChampionOnNew,
    batch_counts,
    data_stats,
    drift,
    rows_of,
    to_markdown,
)
from digitpipe.retrain.gate import Comparison, compare, judge
from digitpipe.retrain.promotion import (
    champion_version,
    check_loads,
    record,
    registered_version,
    run_json,
)
from digitpipe.terminal import wrapped
from digitpipe.tracking.registry import CHAMPION, download_weights, no_weights, versions
from digitpipe.tracking.runs import RunRef, find_training_run
from digitpipe.tracking.store import ensure_reachable, sqlite_file, tracking_uri

# Local state of this clone that no stage output depends on.
LOCK_FILE = Path(".digitpipe/retrain.lock")
RETRAIN_REPORTS = Path("reports/retrain")  # drift.md, drift.json, data_stats.json (not DVC's)
ARTIFACTS = "retrain"  # the same files in the training run of the judged version
STATS_FILE, DRIFT_JSON, DRIFT_MD = "data_stats.json", "drift.json", "drift.md"
STATS_ARTIFACT = f"{ARTIFACTS}/{STATS_FILE}"  # what a judged version was trained on
GATE_TAG = "gate"  # what the judgement depended on: champion, test split, gate settings


class Busy(Exception):
    """Another retrain holds the lock."""


@dataclass(frozen=True)
class Outcome:
    """What a retrain did with the pipeline's model."""

    version: str
    promoted: bool
    reason: str
    nothing_new: bool = False
    drift_summary: str | None = None
    run_id: str | None = None

    def message(self) -> str:
        """What `digitpipe retrain` prints: the decision first, then why and the drift, in lines
        of at most MESSAGE_WIDTH columns (a schedule's log, a mail)."""
        if self.nothing_new:
            return wrapped(f"nothing new: {self.reason}.", MESSAGE_WIDTH, f"{PROGRAM}: ", INDENT)
        verb = "promoted to champion" if self.promoted else "not promoted"
        details = [
            f"why: {self.reason}.",
            f"drift: {self.drift_summary}: see {RETRAIN_REPORTS / DRIFT_MD}.",
            f"logged to run {self.run_id} as {ARTIFACTS}/{DRIFT_MD}.",
        ]
        return "\n".join(
            [f"{PROGRAM}: version {self.version} {verb}."]
            + [wrapped(line, MESSAGE_WIDTH, "  ", INDENT) for line in details]
        )


PROGRAM = "digitpipe retrain"
MESSAGE_WIDTH = 100  # the project's line length: a schedule's log or mail shows it unwrapped
INDENT = "    "  # continuation lines, under the first line's text


@contextmanager
def exclusive(lock_path: Path, wait_s: float) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, waiting up to ``wait_s`` seconds for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(f"another retrain is running (it holds {lock_path})") from None
    try:
        yield
    finally:
        lock.release()


STOPPED = "digitpipe retrain: interrupted; `dvc repro` was stopped, nothing was registered."


def reproduce(root: Path) -> None:
    """`dvc repro`, with this interpreter's environment first on PATH (as `make` sets it), ended
    with this process (see ``run_as_group``)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    dvc = shutil.which("dvc", path=path)
    if dvc is None:
        raise DigitpipeError("dvc is not installed in this environment; run `make install`.")
    try:
        status = run_as_group([dvc, "repro"], cwd=root, env={**os.environ, "PATH": path})
    except (KeyboardInterrupt, SystemExit):
        print(STOPPED, file=sys.stderr, flush=True)
        raise
    if status:
        raise DigitpipeError("`dvc repro` failed (its output is above); nothing was registered.")


def retrain(params: Params, root: Path = Path("."), wait_s: float = 0.0) -> Outcome:
    """Reproduce the pipeline, then register its model and judge it against the champion."""
    if not params.track.enabled:
        raise DigitpipeError("retrain needs MLflow tracking: set track.enabled: true.")
    # A schedule's log wants the decision, not a progress bar per downloaded file.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with exclusive(root / LOCK_FILE, wait_s):
        reproduce(root)
        ref = find_training_run(params.track, root)
        if ref is None:
            return untracked_model(tracking_uri(params.track, root))
        return judge_model(params, root, ref)


def untracked_model(uri: str) -> Outcome:
    """ "Nothing new" for a model this store never saw: DVC restored it from its cache (as a
    scheduled job without a tracking server does when no data changed), or another store
    tracked its training."""
    return Outcome(
        "",
        False,
        f"no run in the MLflow store {uri} trained the model in models/ (DVC restored it from "
        "its cache, or another store tracked its training), so there is nothing to register "
        "and no champion to beat; point MLFLOW_TRACKING_URI at the tracking server that "
        "logged its training, or retrain it here (dvc repro -f train)",
        nothing_new=True,
    )


def gate_key(current: ModelVersion | None, test_digest: str, track: TrackParams) -> str:
    """Everything a judgement depends on besides the model: judging again gives the same."""
    return (
        f"champion={current.version if current else 'none'} test={test_digest} "
        f"margin={track.promotion_margin} alpha={track.promotion_alpha} "
        f"min_accuracy={track.min_accuracy}"
    )


def judge_model(params: Params, root: Path, ref: RunRef) -> Outcome:
    """Register the run's model and judge it: the gate, the drift report, the version's tags."""
    track, name = params.track, params.track.registered_model
    mlflow.set_tracking_uri(ref.tracking_uri)
    client = MlflowClient(ref.tracking_uri)
    version = registered_version(client, name, ref)
    current = champion_version(client, name)
    test_file = root / split_file("test")
    key = gate_key(current, file_digest(test_file), track)
    unchanged = already_judged(client, name, version, current, key)
    if unchanged is not None:
        return unchanged
    test, batch_size = read_split(test_file), params.evaluate.batch_size
    challenger_correct = correct(*load_model(root / MODEL_DIR), test, batch_size)
    accuracy = float(challenger_correct.mean())
    train, val = read_split(root / split_file("train")), read_split(root / split_file("val"))
    stats = data_stats(train, batch_counts(train, val))
    with tempfile.TemporaryDirectory() as tmp:
        champion, comparison, no_comparison = against_champion(
            client, name, current, ref, Path(tmp), test, challenger_correct, batch_size
        )
    verdict = judge(
        accuracy, comparison, current.version if current else None, track, no_comparison
    )
    report = drift_report(
        client, current, champion, comparison, train, val, stats, track, batch_size
    )
    write_drift(client, ref, root, version, current, stats, report)
    if verdict.promote:
        check_loads(name, version, test.images[:2, None].astype(np.float32))
    tags = version_tags(
        accuracy, comparison, current, test, train, verdict.promote, verdict.reason, key
    ) | {
        "drift_report": f"runs:/{ref.run_id}/{ARTIFACTS}/{DRIFT_MD}",
        "drift_flags": "; ".join(report["flags"]) or "none",
        "new_images": str(report["new"]["images"]),
    }
    record(client, name, version, tags, verdict.promote)
    return Outcome(version, verdict.promote, verdict.reason, False, report["summary"], ref.run_id)


def already_judged(
    client: MlflowClient, name: str, version: str, current: ModelVersion | None, key: str
) -> Outcome | None:
    """ "Nothing new" when the version is the champion, or was judged against the same champion
    on the same test images with the same gate settings (``key``); else None."""
    if current is not None and str(current.version) == version:
        reason = f"version {version} is already the champion; the pipeline produced no new model"
        return Outcome(version, False, reason, nothing_new=True)
    tags = client.get_model_version(name, version).tags
    if tags.get(GATE_TAG) != key:
        return None
    reason = (
        f"version {version} was already judged against the same champion on the same test "
        f"images with the same gate settings: {tags.get('decision')} ({tags.get('reason')})"
    )
    return Outcome(version, False, reason, nothing_new=True)


def against_champion(
    client: MlflowClient,
    name: str,
    current: ModelVersion | None,
    ref: RunRef,
    folder: Path,
    test: ImageSet,
    challenger_correct: np.ndarray,
    batch_size: int,
) -> tuple[tuple[nn.Module, ModelSpec] | None, Comparison | None, str | None]:
    """The champion's network and spec (downloaded into ``folder``, safetensors only) and its
    paired comparison with the challenger on ``test``; or why there is none to compare."""
    if current is None:
        return None, None, None
    missing = no_weights(client, current)
    if missing:
        return None, None, f"champion version {current.version} cannot be compared: {missing}"
    uri = f"models:/{name}/{current.version}"
    champion = load_model(download_weights(uri, ref.tracking_uri, folder))
    misfit = does_not_fit(champion[1], test)
    if misfit:
        return None, None, f"champion version {current.version} cannot be compared: {misfit}"
    return champion, compare(challenger_correct, correct(*champion, test, batch_size)), None


def write_drift(
    client: MlflowClient,
    ref: RunRef,
    root: Path,
    version: str,
    current: ModelVersion | None,
    stats: dict,
    report: dict,
) -> None:
    """reports/retrain/: the data statistics and the drift report, also logged to the run."""
    title = f"Drift: the new data of version {version}" + (
        f" against champion version {current.version}" if current else ""
    )
    folder = root / RETRAIN_REPORTS
    write_json(folder / STATS_FILE, stats)
    write_json(folder / DRIFT_JSON, report)
    write_text(folder / DRIFT_MD, to_markdown(report, title))
    for file in (STATS_FILE, DRIFT_JSON, DRIFT_MD):
        client.log_artifact(ref.run_id, str(folder / file), ARTIFACTS)


def correct(net: nn.Module, spec: ModelSpec, images: ImageSet, batch_size: int) -> np.ndarray:
    """Whether ``net`` (as ``spec`` says it predicts) classifies each labelled image correctly."""
    probabilities = predict_probabilities(net, images.images, batch_size, spec.test_time_shift)
    return probabilities.argmax(axis=1) == images.labels


def does_not_fit(spec: ModelSpec, test: ImageSet) -> str | None:
    """Why a model cannot be scored on ``test`` (image size, classes), or None."""
    if (spec.height, spec.width) != test.image_size:
        return (
            f"it takes {spec.height}x{spec.width} images, the test split has "
            f"{test.image_size[0]}x{test.image_size[1]}"
        )
    if list(spec.class_names) != list(test.class_names):
        return f"its classes {spec.class_names} are not the data's {list(test.class_names)}"
    return None


def drift_report(
    client: MlflowClient,
    current: ModelVersion | None,
    champion_model: tuple[nn.Module, ModelSpec] | None,
    comparison: Comparison | None,
    train: ImageSet,
    val: ImageSet,
    stats: dict,
    track: TrackParams,
    batch_size: int,
) -> dict:
    """Compare the drop-folder batches the champion has not seen with the data it trained on."""
    recorded = (
        run_json(client, current.run_id, STATS_ARTIFACT) if current and current.run_id else None
    )
    if recorded is not None and recorded.get("class_names") == list(train.class_names):
        seen = set(recorded["batches"])
        reference, label = recorded, f"the training split of champion version {current.version}"
    else:
        seen = set()
        reference = data_stats(rows_of(train, set(stats["batches"]), inside=False), {})
        label = "the current training split without the drop-folder batches" + (
            f" (champion version {current.version} has no record of its training data)"
            if current is not None
            else " (no champion yet)"
        )
    fresh = {batch for batch in stats["batches"] if batch not in seen}
    new = concat([rows_of(train, fresh, inside=True), rows_of(val, fresh, inside=True)])
    champion = None
    if champion_model is not None and comparison is not None and len(new):
        right = correct(*champion_model, new, batch_size)
        batch_of_row = np.array([batch_of(i) for i in new.ids], dtype=object)
        per_batch = {
            batch: (int(right[mask].sum()), int(mask.sum()))
            for batch in sorted(fresh)
            if (mask := batch_of_row == batch).any()
        }
        champion = ChampionOnNew(
            str(current.version), per_batch, comparison.champion_correct, comparison.images
        )
    report = drift(
        reference,
        label,
        new,
        {batch: stats["batches"][batch] for batch in sorted(fresh)},
        champion,
        track.drift_alpha,
    )
    return report


def version_tags(
    accuracy: float,
    comparison: Comparison | None,
    current: ModelVersion | None,
    test: ImageSet,
    train: ImageSet,
    promote: bool,
    reason: str,
    key: str,
) -> dict[str, str]:
    """The judgement as version tags (strings; empty where there was no champion)."""
    return {
        "test_accuracy": f"{accuracy:.6f}",
        "test_images": str(len(test)),
        "train_images": str(len(train)),
        "champion_version": "" if current is None else str(current.version),
        "champion_accuracy": "" if comparison is None else f"{comparison.champion_accuracy:.6f}",
        "champion_only_correct": "" if comparison is None else str(comparison.champion_only),
        "challenger_only_correct": "" if comparison is None else str(comparison.challenger_only),
        "mcnemar_p_value": "" if comparison is None else f"{comparison.p_value:.6g}",
        "decision": "promoted" if promote else "kept",
        "reason": reason,
        "judged_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        GATE_TAG: key,
    }


HISTORY_COLUMNS = (
    ("version", ""),
    ("judged", "judged_at"),
    ("train images", "train_images"),
    ("test images", "test_images"),
    ("accuracy", "test_accuracy"),
    ("champion", "champion_version"),
    ("champion acc.", "champion_accuracy"),
    ("p-value", "mcnemar_p_value"),
    ("decision", "decision"),
)


def history(track: TrackParams, root: Path = Path(".")) -> str:
    """Every registered version as a table: when it was judged, the data it was trained and
    tested on, its accuracy against the champion's on the same images, the McNemar p-value and
    the decision; the current champion is starred."""
    uri = tracking_uri(track, root)
    store = sqlite_file(uri)
    if store is not None and not store.exists():  # reading the history never creates a store
        return f"no versions of {track.registered_model} in {uri} (there is no store yet)"
    ensure_reachable(uri)
    client = MlflowClient(uri)
    found = versions(client, track.registered_model)
    if not found:
        return f"no versions of {track.registered_model} in {uri}"
    current = champion_version(client, track.registered_model)
    rows = []
    for version in found:
        tags = version.tags
        judged = tags.get("judged_at") or time.strftime(
            "%Y-%m-%d %H:%M:%S %Z", time.localtime(version.creation_timestamp / 1000)
        )
        star = "*" if current is not None and current.version == version.version else ""
        rows.append(
            [f"{version.version}{star}", judged]
            + [tags.get(tag) or "-" for _, tag in HISTORY_COLUMNS[2:]]
        )
    header = [title for title, _ in HISTORY_COLUMNS]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    title = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))
    note = f"{track.registered_model} in {uri}; * = @{CHAMPION}"
    return "\n".join([note, title.rstrip(), *(line.rstrip() for line in lines)])
