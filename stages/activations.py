"""DVC stage `activations`: layer outputs of chosen test images (see digitpipe.activations.run)."""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("digitpipe.activations.run"))
