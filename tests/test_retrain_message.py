"""What `digitpipe retrain` prints and the drift page it writes, on fixed data (no pipeline, no
MLflow): the decision first, lines of at most 100 columns, the drift counted, not listed, and
every flag one line of drift.md."""

from __future__ import annotations

import mlflow
import mlflow.pyfunc
from mlflow.tracking import MlflowClient
from mlflow.utils import logging_utils
from test_gate import images_of, samples

from digitpipe.retrain.command import MESSAGE_WIDTH, Outcome
from digitpipe.retrain.drift import ChampionOnNew, drift, to_markdown
from digitpipe.retrain.promotion import registered_version
from digitpipe.tracking.runs import RunRef


def faint_batch_report(mnist_train) -> dict:
    """A batch of half-ink images on which the champion does worse: a flag or two per class."""
    images, labels = mnist_train
    reference, fresh = samples(mnist_train)
    pick = fresh[:600]
    faint = images_of(images[pick] // 2, labels[pick], "incoming/w")
    champion = ChampionOnNew("4", {"w": (480, 600)}, test_correct=970, test_images=1000)
    return drift(
        reference, "the training split of champion version 4", faint, {"w": 600}, champion, 0.01
    )


def test_the_retrain_message_leads_with_the_decision_in_short_lines(mnist_train):
    report = faint_batch_report(mnist_train)
    assert len(report["flags"]) >= 10 and report["checks"] == 2 + 20 + 1
    reason = (
        "test accuracy 0.9512 beats champion version 4's 0.9400 on the same 10000 test images by "
        "more than track.promotion_margin 0.0, significantly: 151 images only the challenger "
        "gets right, 31 only the champion, exact McNemar p = 1.2e-19 < track.promotion_alpha 0.05"
    )
    outcome = Outcome("5", True, reason, False, report["summary"], "0123456789abcdef" * 2)
    lines = outcome.message().splitlines()
    assert lines[0] == "digitpipe retrain: version 5 promoted to champion."
    assert max(map(len, lines)) <= MESSAGE_WIDTH
    assert " ".join(" ".join(lines).split()).count(reason) == 1  # wrapped between words only
    drift_line = f"  drift: {len(report['flags'])} of 23 checks flag drift: see "
    assert drift_line + "reports/retrain/drift.md." in lines
    assert len(outcome.message()) < 600  # 20 flags made a paragraph of over 1,000 characters

    kept = Outcome(
        "5",
        False,
        "no champion yet, and test accuracy 0.4 is below ...",
        False,
        "nothing flagged in 22 checks",
        "abc",
    )
    assert kept.message().splitlines()[:2] == [
        "digitpipe retrain: version 5 not promoted.",
        "  why: no champion yet, and test accuracy 0.4 is below ....",
    ]
    nothing = Outcome("5", False, "version 5 is already the champion " * 6, nothing_new=True)
    assert nothing.message().startswith("digitpipe retrain: nothing new: version 5 is already")
    assert max(map(len, nothing.message().splitlines())) <= MESSAGE_WIDTH


def test_drift_md_lists_each_flag_on_its_own_line(mnist_train):
    report = faint_batch_report(mnist_train)
    page = to_markdown(report, "Drift")
    flagged = page.split("## Flagged\n\n")[1].split("\n\n")[0].splitlines()
    assert len(flagged) == len(report["flags"]) >= 3
    assert all(line.startswith("- ") for line in flagged)
    assert any(line.startswith("- pixels of class 1 shifted") for line in flagged)
    assert f"- Checks at level 0.01: {report['summary']}." in page


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_registering_a_version_prints_nothing(tmp_path, capfd, monkeypatch):
    """MLflow's "Successfully registered model" and "Created version" lines stay out of the
    retrain's output (they are printed to MLflow's own stream, not logged)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mlflow.set_tracking_uri(store)
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    capfd.readouterr()
    ref = RunRef(store, run.info.experiment_id, run.info.run_id, info.model_uri)
    client = MlflowClient(store)
    assert registered_version(client, "quiet", ref) == "1"
    assert registered_version(client, "quiet", ref) == "1"  # found, not registered again
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == "", printed
    assert logging_utils.MLFLOW_LOGGING_STREAM.enabled  # MLflow's own logging is back on
