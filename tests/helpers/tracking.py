"""What a test's MLflow store holds."""

from __future__ import annotations

from mlflow.tracking import MlflowClient


def experiment_runs(client: MlflowClient, name: str) -> list:
    """The runs of the experiment ``name``, newest first (none if it does not exist)."""
    experiment = client.get_experiment_by_name(name)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])
