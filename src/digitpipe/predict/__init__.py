"""Predict: the trained model over pictures, pixel CSVs and IDX files (`digitpipe predict`)."""
