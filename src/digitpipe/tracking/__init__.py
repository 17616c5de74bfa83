"""Tracking: the MLflow plumbing stages share: the store, pipeline runs, the logged model."""
