"""The ingest stage: raw IDX/CSV sources into validated, split Parquet files plus a first look."""
