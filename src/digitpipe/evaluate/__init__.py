"""Evaluation of trained models: confusion-matrix statistics and reports."""
