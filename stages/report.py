"""DVC stage `report`: reports/report.md and report.html (see digitpipe.report.run)."""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("digitpipe.report.run"))
