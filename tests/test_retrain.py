"""`digitpipe retrain` on a tiny pipeline: promotes the first model, keeps a worse one, and two
concurrent runs never overlap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUICK_TRAIN, edit_params, init_pipeline_repo
from mlflow.tracking import MlflowClient

from digitpipe.core.config import load_params
from digitpipe.tracking.runs import find_training_run

pytestmark = pytest.mark.slow
DIGITPIPE = str(Path(sys.executable).parent / "digitpipe")


def retrain(project: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [DIGITPIPE, "retrain"],
        cwd=project,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_retrain_promotes_then_keeps_and_never_overlaps(tiny_project):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    edit_params(tiny_project, "track", enabled=True, registered_model="tiny-digits")
    env = init_pipeline_repo(tiny_project)
    env.pop("MLFLOW_TRACKING_URI", None)
    first = retrain(tiny_project, env)
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    assert "version 1 promoted to champion: first model" in output
    ref = find_training_run(load_params(tiny_project / "params.yaml").track, tiny_project)
    client = MlflowClient(ref.tracking_uri)
    champion = client.get_model_version_by_alias("tiny-digits", "champion")
    assert str(champion.version) == "1" and champion.tags["decision"] == "promoted"

    edit_params(tiny_project, "train", seed=7)  # a new model...
    edit_params(tiny_project, "track", promotion_margin=0.5)  # ...that cannot win by 0.5
    racers = [retrain(tiny_project, env) for _ in range(2)]
    outputs = [racer.communicate(timeout=600)[0] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    skipped = [out for out in outputs if "skipped: another retrain is running" in out]
    finished = [out for out in outputs if "version 2 not promoted" in out]
    assert len(skipped) == 1 and len(finished) == 1, outputs
    second = client.get_model_version("tiny-digits", "2")
    assert second.tags["decision"] == "kept" and "by more than 0.5" in second.tags["reason"]
    assert float(second.tags["champion_accuracy"]) == float(champion.tags["test_accuracy"])
    assert str(client.get_model_version_by_alias("tiny-digits", "champion").version) == "1"
    assert len(client.search_model_versions("name = 'tiny-digits'")) == 2
