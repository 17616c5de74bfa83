"""DVC stage `ingest`: raw IDX/CSV under data/raw into data/processed/*.parquet."""

import sys

from digitpipe.core.stage import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("digitpipe.ingest.run"))
