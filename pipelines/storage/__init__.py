"""Layer 2, storage: Parquet partitions on the data root, atomic writes, the history database, the report store."""
