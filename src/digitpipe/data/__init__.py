"""Data: reading IDX and CSV inputs, validating them, and the Parquet splits."""
