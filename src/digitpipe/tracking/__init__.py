"""Tracking: pipeline runs in MLflow, the model registry, and scheduled retraining."""
