"""DVC stage `report`: reports/report.md and report.html (see digitpipe.report.run)."""

import sys

from digitpipe.core.stage import run_stage
from digitpipe.report.run import run

if __name__ == "__main__":
    sys.exit(run_stage(run))
