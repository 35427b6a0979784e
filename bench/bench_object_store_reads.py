"""Object-store read options: the largest generated Parquet file put into moto (S3 on loopback) and its first
1,048,576 rows read in 131,072-row batches, with 1 MB or 8 MB buffered reads and with pre-buffered row groups
(what `lake.parquet_file` does on S3). Prints seconds per option.

    uv run python bench/bench_object_store_reads.py [--data /tmp/bench-dist/data]

The data comes from bench_distributed.py (its --folder's data/).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/bench-dist/data", help="a data root made by bench_distributed.py")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    from harness.topology import free_port, s3_client

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    store = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(store, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        import pyarrow.parquet as pq
        from pyarrow import fs

        from pipelines.core.paths import s3_filesystem

        s3_client({"endpoint_url": f"http://127.0.0.1:{port}", **store}).create_bucket(Bucket="bench-reads")
        source = max(Path(args.data).glob("incoming/ds=*/*.parquet"), key=lambda p: p.stat().st_size)
        s3 = s3_filesystem()
        fs.copy_files(
            str(source), "bench-reads/x.parquet", source_filesystem=fs.LocalFileSystem(), destination_filesystem=s3
        )
        footer = pq.read_metadata("bench-reads/x.parquet", filesystem=s3)
        print(f"{source}: {footer.num_rows:,} rows in {footer.num_row_groups} row groups")
        columns = [c for c in footer.schema.names if c != "application_id"]
        for pre_buffer, buffer_size in ((False, 1 << 20), (False, 8 << 20), (True, 0)):
            started, rows = time.perf_counter(), 0
            reader = pq.ParquetFile(
                "bench-reads/x.parquet", filesystem=s3, pre_buffer=pre_buffer, buffer_size=buffer_size
            )
            for batch in reader.iter_batches(batch_size=131_072, columns=columns, use_threads=False):
                rows += batch.num_rows
                if rows >= 1_048_576:
                    break
            seconds = time.perf_counter() - started
            print(f"pre_buffer={pre_buffer}, buffer {buffer_size >> 20} MB: {rows:,} rows in {seconds:.1f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
