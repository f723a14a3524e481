"""Reads a dataset millrace wrote (e.g. [output] predictions) with real Spark and prints what Spark
sees: the schema (partition columns included), the row count, and rows per partition value.

    .infra/spark-venv/bin/python scripts/spark/read_back.py DIR [--expect-rows N]

Exits 1 when Spark cannot read it, or the row count differs from --expect-rows.
"""
import argparse
import json
import sys

from pyspark.sql import SparkSession

parser = argparse.ArgumentParser()
parser.add_argument("path")
parser.add_argument("--expect-rows", type=int)
args = parser.parse_args()

spark = (
    SparkSession.builder.master("local[1]")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")
df = spark.read.parquet(args.path)
rows = df.count()
partition = [f.name for f in df.schema.fields][-1]
report = {
    "spark_version": spark.version,
    "rows": rows,
    "schema": [[f.name, f.dataType.simpleString()] for f in df.schema.fields],
    "rows_per_" + partition: {
        str(r[0]): r[1] for r in df.groupBy(partition).count().orderBy(partition).collect()
    },
}
print(json.dumps(report, indent=1))
spark.stop()
if args.expect_rows is not None and rows != args.expect_rows:
    print(f"Spark read {rows} rows, expected {args.expect_rows}", file=sys.stderr)
    sys.exit(1)
