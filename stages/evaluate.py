"""DVC stage `evaluate`: the model on the test/val splits into reports/evaluate/ (see run.py)."""

import sys

from digitpipe.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("digitpipe.evaluate.run"))
