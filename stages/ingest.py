"""DVC stage `ingest`: raw IDX/CSV under data/raw into data/processed/*.parquet."""

import sys

from _entry import main

if __name__ == "__main__":
    sys.exit(main("digitpipe.ingest.run"))
