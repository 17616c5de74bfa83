"""Tracking: every pipeline run in MLflow, and the model registry for scheduled retraining."""
