"""DVC stage `report`: reports/report.md and report.html (see digitpipe.report.run)."""

import sys

from digitpipe.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("digitpipe.report.run"))
