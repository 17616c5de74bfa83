"""DVC stage `ingest`: raw IDX/CSV under data/raw into data/processed/*.parquet."""

import sys

from digitpipe.core.stage import run_stage
from digitpipe.ingest.run import run

if __name__ == "__main__":
    sys.exit(run_stage(run))
