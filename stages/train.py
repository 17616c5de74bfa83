"""DVC stage `train`: data/processed into models/ and reports/train/ (see digitpipe.train.run)."""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("digitpipe.train.run"))
