"""The dataset layer: ImageSet, the Parquet splits, the IDX and pixel-CSV readers, and the
shape and value checks (:mod:`.shapes`, :mod:`.checks`) that ingest and predict share."""
