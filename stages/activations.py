"""DVC stage `activations`: layer outputs of chosen test images (see digitpipe.explain.run)."""

import sys

from digitpipe.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("digitpipe.explain.run"))
