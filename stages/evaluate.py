"""DVC stage `evaluate`: the model on the test/val splits into reports/evaluate/ (see run.py)."""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("digitpipe.evaluate.run"))
