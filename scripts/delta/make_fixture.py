#!/usr/bin/env python3
"""Writes the Delta Lake fixture table `tests/fixtures/delta/events/` with delta-rs (the `deltalake`
package) and records what delta-rs's own reader sees in `tests/fixtures/delta/events.expected.json`.

Commits, in order:
  0  initial write, partitioned by event_date (date) and region (string, one null, one "ap/south")
  1  append
  2  delete of rows with x < 0.2 (rewrites files: remove + add actions)
  3  overwrite of the partition event_date = 2024-03-02 / region = eu (replaceWhere)
  -  checkpoint at version 3 (`00000000000000000003.checkpoint.parquet` + `_last_checkpoint`)
  4  append after the checkpoint, so a reader must replay the checkpoint and then a JSON commit

Run from the repository root:  .infra/delta-venv/bin/python scripts/delta/make_fixture.py
"""

import datetime as dt
import decimal
import json
import os
import pathlib
import random
import shutil

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "delta"
TABLE = OUT / "events"
PARTITIONS = ["event_date", "region"]

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("x", pa.float64()),
        pa.field("name", pa.string()),
        pa.field("amount", pa.decimal128(10, 2)),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("event_date", pa.date32()),
        pa.field("region", pa.string()),
    ]
)

DATES = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
REGIONS = ["eu", "us", "ap/south", None]


def batch(rng: random.Random, first_id: int, n: int, dates=DATES, regions=REGIONS) -> pa.Table:
    ids = list(range(first_id, first_id + n))
    base = dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)
    cols = {
        "id": ids,
        "x": [round(rng.random(), 6) for _ in ids],
        "name": [None if i % 7 == 0 else f"user-{i % 23}" for i in ids],
        "amount": [decimal.Decimal(rng.randint(-50000, 500000)) / 100 for _ in ids],
        "ts": [base + dt.timedelta(seconds=rng.randint(0, 3 * 86400)) for _ in ids],
        "event_date": [dates[i % len(dates)] for i in ids],
        "region": [regions[(i // len(dates)) % len(regions)] for i in ids],
    }
    return pa.table(cols, schema=SCHEMA)


def summary(table: pa.Table) -> dict:
    ids = sorted(table.column("id").to_pylist())
    return {
        "rows": table.num_rows,
        "sum_id": sum(ids),
        "sum_x": round(sum(v for v in table.column("x").to_pylist() if v is not None), 6),
        "ids_sorted_first_10": ids[:10],
    }


def main() -> None:
    rng = random.Random(20240301)
    if TABLE.exists():
        shutil.rmtree(TABLE)
    uri = str(TABLE)

    write_deltalake(uri, batch(rng, 0, 240), partition_by=PARTITIONS, mode="error", name="events")
    write_deltalake(uri, batch(rng, 240, 60), partition_by=PARTITIONS, mode="append")
    DeltaTable(uri).delete("x < 0.2")
    replacement = batch(rng, 1000, 12, dates=[dt.date(2024, 3, 2)], regions=["eu"])
    write_deltalake(
        uri,
        replacement,
        partition_by=PARTITIONS,
        mode="overwrite",
        predicate="event_date = '2024-03-02' AND region = 'eu'",
    )
    DeltaTable(uri).create_checkpoint()
    write_deltalake(uri, batch(rng, 2000, 30), partition_by=PARTITIONS, mode="append")

    table = DeltaTable(uri)
    latest = table.to_pyarrow_table()
    expected = {
        "version": table.version(),
        **summary(latest),
        "files": len(table.file_uris()),
        "partition_columns": table.metadata().partition_columns,
        "version_1": {
            k: v for k, v in summary(DeltaTable(uri, version=1).to_pyarrow_table()).items()
            if k in ("rows", "sum_id")
        },
    }
    (OUT / "events.expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2), flush=True)


if __name__ == "__main__":
    main()
    # deltalake 1.6's native runtime aborts ("terminate called without an active exception") while
    # the interpreter shuts down; everything is written by now, so skip the shutdown.
    os._exit(0)
