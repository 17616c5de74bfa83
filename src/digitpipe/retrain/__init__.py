"""`digitpipe retrain`: the pipeline on a schedule, a fair champion/challenger gate, drift."""
