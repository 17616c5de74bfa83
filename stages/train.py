"""DVC stage `train`: data/processed into models/ and reports/train/ (see digitpipe.train.run)."""

import sys

from digitpipe.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("digitpipe.train.run"))
