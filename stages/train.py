"""DVC stage `train`: data/processed into models/ and reports/train/ (see digitpipe.train.run)."""

import sys

from digitpipe.core.stage import run_stage
from digitpipe.train.run import run

if __name__ == "__main__":
    sys.exit(run_stage(run))
