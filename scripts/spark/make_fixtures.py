#!/usr/bin/env python3
"""Generate Parquet fixtures with real Apache Spark (pyspark, local mode) plus
JSON files recording what Spark itself reads back from them.

Usage (see scripts/spark/README.md):

    .infra/spark-venv/bin/python scripts/spark/make_fixtures.py \
        --out tests/fixtures/spark --rows 6000 --seed 42

For every variant a directory <out>/<variant>/ is (re)written by Spark's own
committer (so `_SUCCESS` and `.crc` files are present), and
<out>/expected/<variant>.json records the schema, per-column stats and a few
sample rows as Spark reads them back with its default read settings.  All
values are formatted by Spark SQL (not Python datetime), see `render()`.
"""

import argparse
import datetime as dt
import json
import math
import os
import random
import shutil
import sys
import time
from decimal import Decimal

# Everything in UTC, for the Python driver and the JVM alike.
os.environ["TZ"] = "UTC"
if hasattr(time, "tzset"):
    time.tzset()
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import (  # noqa: E402
    BooleanType,
    ByteType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

EPOCH_ORD = dt.date(1970, 1, 1).toordinal()
MICROS_PER_DAY = 86_400_000_000

# Old (pre-Gregorian-switch and ancient) values. Python's `date` is proleptic
# Gregorian, like Spark 3+, so toordinal() gives the right epoch-day numbers.
OLD_DATES = [
    dt.date(1, 1, 1),
    dt.date(1000, 6, 15),
    dt.date(1500, 3, 1),
    dt.date(1582, 10, 4),   # last Julian day in the hybrid calendar
    dt.date(1582, 10, 15),  # first Gregorian day (same in both calendars)
]
# (date, hour, minute, second, micros)
OLD_TIMESTAMPS = [
    (dt.date(1, 1, 1), 0, 0, 0, 1),
    (dt.date(1000, 1, 1), 12, 0, 0, 0),
    (dt.date(1582, 10, 4), 23, 59, 59, 123456),
    (dt.date(1900, 1, 1), 0, 0, 0, 0),
]

REGIONS = ["eu-central", "us-east", "ap/south:1", None]
REGION_WEIGHTS = [40, 35, 15, 10]
EVENT_DATES = [dt.date(2024, 3, d) for d in (1, 2, 3, 4)]
REFERRERS = ["google.com", "bing.com", "news.ycombinator.com", "t.co",
             "ünïcode.example", "📈 stocks", "Zebra", ""]
DEVICES = ["mobile", "desktop", "tablet", "tv"]

TS_FMT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'"
PARTITION_COLS = ["event_date", "region"]


def epoch_days(d):
    return d.toordinal() - EPOCH_ORD


def epoch_micros(d, h=0, m=0, s=0, us=0):
    return epoch_days(d) * MICROS_PER_DAY + ((h * 60 + m) * 60 + s) * 1_000_000 + us


# --------------------------------------------------------------------------
# Deterministic data
# --------------------------------------------------------------------------

RAW_SCHEMA = StructType([
    StructField("id", LongType(), False),
    StructField("user_id", LongType(), True),
    StructField("f_age", IntegerType(), True),
    StructField("f_sessions", LongType(), True),
    StructField("f_ctr", FloatType(), False),
    StructField("f_score", DoubleType(), False),
    StructField("income", DoubleType(), True),
    StructField("referrer", StringType(), True),
    StructField("device_type", StringType(), False),
    StructField("amount", DecimalType(12, 2), True),
    StructField("big_amount", DecimalType(25, 4), True),
    StructField("is_active", BooleanType(), True),
    StructField("account_open_days", IntegerType(), True),   # -> date
    StructField("event_ts_micros", LongType(), True),        # -> timestamp
    StructField("label", IntegerType(), True),
    StructField("event_date_days", IntegerType(), False),    # -> date
    StructField("region", StringType(), True),
])


def generate_rows(n, seed):
    rng = random.Random(seed)
    if n < 40:
        raise SystemExit("--rows must be >= 40")
    # ids carrying the old dates / timestamps (never 0..2, distinct)
    special = rng.sample(range(3, n), len(OLD_DATES) + len(OLD_TIMESTAMPS))
    old_date_ids = dict(zip(special[:len(OLD_DATES)], OLD_DATES))
    old_ts_ids = dict(zip(special[len(OLD_DATES):], OLD_TIMESTAMPS))
    # make sure one old date row and one old timestamp row coincide
    first_ts_id = special[len(OLD_DATES)]
    old_date_ids[first_ts_id] = dt.date(1000, 6, 15)

    d2000 = epoch_days(dt.date(2000, 1, 1))
    d2024 = epoch_days(dt.date(2024, 12, 31))
    ts_lo = epoch_micros(dt.date(2024, 3, 1))
    ts_hi = epoch_micros(dt.date(2024, 4, 1)) - 1

    rows = []
    for i in range(n):
        def maybe(p_null, value):
            return None if rng.random() < p_null else value

        user_id = maybe(0.05, rng.randint(1, 100_000))
        f_age = maybe(0.08, rng.randint(18, 90))
        f_sessions = maybe(0.06, rng.randint(0, 5_000_000_000))
        f_ctr = rng.random()
        f_score = rng.gauss(0.0, 1.0) * 100.0
        income = maybe(0.10, round(rng.lognormvariate(10.0, 1.0), 2))
        referrer = maybe(0.30, rng.choice(REFERRERS))
        device = rng.choice(DEVICES)
        amount = maybe(0.07, Decimal(rng.randint(-10**9, 10**11)).scaleb(-2))
        big_amount = maybe(0.10, Decimal(rng.randint(-(10**24) + 1, 10**24 - 1)).scaleb(-4))
        is_active = maybe(0.05, rng.random() < 0.6)
        open_days = maybe(0.04, rng.randint(d2000, d2024))
        ts = maybe(0.03, rng.randint(ts_lo, ts_hi))
        label = maybe(0.02, rng.randint(0, 1))
        event_date = epoch_days(rng.choice(EVENT_DATES))
        region = rng.choices(REGIONS, weights=REGION_WEIGHTS)[0]
        if i in old_date_ids:
            open_days = epoch_days(old_date_ids[i])
        if i in old_ts_ids:
            ts = epoch_micros(*old_ts_ids[i])
        rows.append((i, user_id, f_age, f_sessions, f_ctr, f_score, income,
                     referrer, device, amount, big_amount, is_active,
                     open_days, ts, label, event_date, region))
    return rows, sorted(set(old_date_ids) | set(old_ts_ids))


def build_df(spark, rows):
    raw = spark.createDataFrame(rows, RAW_SCHEMA)
    df = raw.select(
        "id", "user_id", "f_age", "f_sessions", "f_ctr", "f_score", "income",
        "referrer", "device_type", "amount", "big_amount", "is_active",
        F.expr("date_from_unix_date(account_open_days)").alias("account_open_date"),
        F.expr("timestamp_micros(event_ts_micros)").alias("event_ts"),
        "label",
        F.expr("date_from_unix_date(event_date_days)").alias("event_date"),
        "region",
    )
    # Nullability must be what RAW_SCHEMA says (the converted columns keep
    # the nullability of their inputs).
    for f in df.schema.fields:
        src = {"account_open_date": "account_open_days", "event_ts": "event_ts_micros",
               "event_date": "event_date_days"}.get(f.name, f.name)
        if f.nullable != RAW_SCHEMA[src].nullable:
            raise AssertionError(f"{f.name}: nullable={f.nullable}, wanted {RAW_SCHEMA[src].nullable}")
    return df


# --------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------

BASE_CONF = {
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.writeLegacyFormat": "false",
}

VARIANTS = [
    # name, conf overrides, description
    ("etl_snappy", {}, "defaults: snappy, INT64 TIMESTAMP_MICROS, CORRECTED rebase"),
    ("etl_int96", {"spark.sql.parquet.outputTimestampType": "INT96"},
     "timestamps as INT96, int96 rebase CORRECTED"),
    ("etl_legacy_rebase", {"spark.sql.parquet.datetimeRebaseModeInWrite": "LEGACY"},
     "dates and INT64 micros rebased to the hybrid Julian calendar"),
    ("etl_int96_legacy", {"spark.sql.parquet.outputTimestampType": "INT96",
                          "spark.sql.parquet.int96RebaseModeInWrite": "LEGACY",
                          "spark.sql.parquet.datetimeRebaseModeInWrite": "LEGACY"},
     "INT96 timestamps and dates rebased to the hybrid Julian calendar"),
    ("etl_legacy_format", {"spark.sql.parquet.writeLegacyFormat": "true"},
     "writeLegacyFormat: decimal(12,2) as FIXED_LEN_BYTE_ARRAY"),
    ("etl_int_partition", {}, "partitionBy int `bucket` only, zstd, maxRecordsPerFile"),
]



def int_partition_max_records(rows):
    # each of the 5 buckets holds rows/5 rows -> 3 files per bucket
    return rows // 15 + 1


class conf_scope:
    """spark.conf.set for the duration of one write, then restore."""

    def __init__(self, spark, settings):
        self.spark, self.settings, self.saved = spark, settings, {}

    def __enter__(self):
        for k, v in self.settings.items():
            self.saved[k] = self.spark.conf.get(k, None)
            self.spark.conf.set(k, v)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                self.spark.conf.unset(k)
            else:
                self.spark.conf.set(k, v)


def write_variant(spark, df, df_rows, name, overrides, path):
    if os.path.exists(path):
        shutil.rmtree(path)
    settings = dict(BASE_CONF)
    settings.update(overrides)
    with conf_scope(spark, settings):
        if name == "etl_int_partition":
            (df.withColumn("bucket", (F.col("id") % 5).cast("int"))
               .coalesce(1)
               .sortWithinPartitions("bucket", "id")
               .write.mode("overwrite")
               .option("compression", "zstd")
               .option("maxRecordsPerFile", int_partition_max_records(df_rows))
               .partitionBy("bucket")
               .parquet(path))
        else:
            # Two write tasks. The eu-central / us-east leaves get rows from
            # both tasks (2 files each); the escaped and the NULL (default
            # partition) region leaves only from one task (1 file each).
            big = F.coalesce(F.col("region").isin("eu-central", "us-east"), F.lit(False))
            task1 = big & (F.col("id") % 2 == 1)
            # (A union of two coalesce(1) is planned as one partition in
            # Spark 4, so hash-repartition on a key whose two values land in
            # different partitions: Spark's partitioning is pmod(hash(key), n).)
            pm = spark.range(1).select(
                *[F.expr(f"pmod(hash(CAST({k} AS INT)), 2)").alias(str(k)) for k in range(8)]).first()
            k0 = next(k for k in range(8) if pm[str(k)] == 0)
            k1 = next(k for k in range(8) if pm[str(k)] == 1)
            key = F.when(task1, F.lit(k1)).otherwise(F.lit(k0)).cast("int")
            parts = df.repartition(2, key)
            (parts.sortWithinPartitions(*PARTITION_COLS, "id")
               .write.mode("overwrite")
               .partitionBy(*PARTITION_COLS)
               .parquet(path))


# --------------------------------------------------------------------------
# Expected values, computed and formatted by Spark
# --------------------------------------------------------------------------

INT_TYPES = (ByteType, ShortType, IntegerType, LongType)


def render(col, dtype):
    """Spark SQL expression rendering a value in the agreed JSON format."""
    if isinstance(dtype, INT_TYPES) or isinstance(dtype, (DoubleType, BooleanType, StringType)):
        return col
    if isinstance(dtype, FloatType):
        return col.cast("double")
    if isinstance(dtype, DecimalType):
        return col.cast("string")
    if isinstance(dtype, DateType):
        return F.date_format(col, "yyyy-MM-dd")
    if isinstance(dtype, TimestampType):
        return F.date_format(col, TS_FMT)
    raise TypeError(f"unsupported type {dtype}")


def is_numeric(dtype):
    return isinstance(dtype, INT_TYPES + (FloatType, DoubleType, DecimalType))


def type_name(dtype):
    return dtype.simpleString()


def stats(df, name, sample_ids):
    """Row count, schema, per-column stats and sample rows of `df`."""
    fields = df.schema.fields
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for i, f in enumerate(fields):
        c = F.col(f"`{f.name}`")
        aggs.append((F.count(F.lit(1)) - F.count(c)).alias(f"n{i}"))
        aggs.append(render(F.min(c), f.dataType).alias(f"mn{i}"))
        aggs.append(render(F.max(c), f.dataType).alias(f"mx{i}"))
        if is_numeric(f.dataType):
            s = F.sum(c)
            s = s.cast("string") if isinstance(f.dataType, DecimalType) else s
            aggs.append(s.alias(f"s{i}"))
        # Sanity: our date/timestamp rendering agrees with Spark's CAST.
        if isinstance(f.dataType, DateType):
            aggs.append(F.sum((render(c, f.dataType) != c.cast("string")).cast("int")).alias(f"chk{i}"))
    agg = df.agg(*aggs).collect()[0].asDict()
    columns = {}
    for i, f in enumerate(fields):
        if agg.get(f"chk{i}"):
            raise AssertionError(f"{name}.{f.name}: date_format != CAST AS STRING for {agg[f'chk{i}']} rows")
        entry = {"nulls": agg[f"n{i}"], "min": agg[f"mn{i}"], "max": agg[f"mx{i}"]}
        if is_numeric(f.dataType):
            entry["sum"] = agg[f"s{i}"]
        columns[f.name] = entry

    sample_df = (df.where(F.col("id").isin(sample_ids))
                   .select(*[render(F.col(f"`{f.name}`"), f.dataType).alias(f.name) for f in fields])
                   .orderBy("id"))
    sample = [r.asDict() for r in sample_df.collect()]
    if [r["id"] for r in sample] != sorted(sample_ids):
        raise AssertionError(f"{name}: sample ids {[r['id'] for r in sample]} != {sorted(sample_ids)}")

    return {
        "rows": agg["__rows"],
        "schema": [{"name": f.name, "type": type_name(f.dataType), "nullable": f.nullable}
                   for f in fields],
        "columns": columns,
        "sample": sample,
    }


def read_expected(spark, name, path, sample_ids):
    st = stats(spark.read.parquet(path), name, sample_ids)
    files, partitions = [], set()
    for root, _dirs, names in os.walk(path):
        for fn in names:
            if fn.startswith("part-") and fn.endswith(".parquet"):
                files.append(os.path.join(root, fn))
                rel = os.path.relpath(root, path)
                if rel != ".":
                    partitions.add(rel.replace(os.sep, "/"))
    return {
        "spark_version": spark.version,
        "variant": name,
        "rows": st["rows"],
        "files": len(files),
        "partitions": sorted(partitions),
        "schema": st["schema"],
        "columns": st["columns"],
        "sample": st["sample"],
    }, sorted(files)


def pick_sample_ids(rows, special_ids):
    ids = {0, 1, 2} | set(special_ids)
    region_idx = RAW_SCHEMA.names.index("region")
    null_region = next(r[0] for r in rows if r[region_idx] is None and r[0] > 2)
    escaped_region = next(r[0] for r in rows if r[region_idx] == "ap/south:1" and r[0] > 2)
    return sorted(ids | {null_region, escaped_region})


# --------------------------------------------------------------------------
# Cross-variant agreement
# --------------------------------------------------------------------------

def values_agree(a, b, float_sum):
    if float_sum and isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b and type(a) is type(b)


def check_against_reference(ref, exp):
    problems = []
    ref_types = {f["name"]: f["type"] for f in ref["schema"]}
    exp_types = {f["name"]: f["type"] for f in exp["schema"]}
    shared = [n for n in ref_types if n in exp_types]
    if exp["rows"] != ref["rows"]:
        problems.append(f"rows {exp['rows']} != {ref['rows']}")
    for n in shared:
        if ref_types[n] != exp_types[n]:
            problems.append(f"type of {n}: {exp_types[n]} != {ref_types[n]}")
            continue
        rc, ec = ref["columns"][n], exp["columns"][n]
        for k in ("nulls", "min", "max", "sum"):
            if (k in rc) != (k in ec):
                problems.append(f"{n}.{k} present in only one")
            elif k in rc and not values_agree(rc[k], ec[k], k == "sum" and ref_types[n] in ("float", "double")):
                problems.append(f"{n}.{k}: {ec[k]!r} != {rc[k]!r}")
    if [r["id"] for r in exp["sample"]] != [r["id"] for r in ref["sample"]]:
        problems.append("sample ids differ")
    else:
        for rr, er in zip(ref["sample"], exp["sample"]):
            for n in shared:
                if not values_agree(rr[n], er[n], False):
                    problems.append(f"sample id={rr['id']} {n}: {er[n]!r} != {rr[n]!r}")
    if problems:
        raise AssertionError(f"variant {exp['variant']} disagrees with etl_snappy:\n  " + "\n  ".join(problems))
    return shared


# --------------------------------------------------------------------------
# Physical layout checks with pyarrow
# --------------------------------------------------------------------------

def physical_info(files):
    """Union over files of per-column physical descriptions, codecs, kv keys."""
    cols, codecs, keys = {}, set(), None
    for f in files:
        pf = pq.ParquetFile(f)
        md = pf.metadata
        s = pf.schema
        kv = set(k.decode() for k in (md.metadata or {}))
        keys = kv if keys is None else keys & kv
        for i in range(len(s)):
            c = s.column(i)
            lt = c.logical_type
            lts = "" if lt is None or lt.type == "NONE" else str(lt).replace("\n", " ").strip()
            desc = c.physical_type
            if c.physical_type == "FIXED_LEN_BYTE_ARRAY":
                desc += f"({c.length})"
            if lts:
                desc += f" {lts}"
            elif c.converted_type not in (None, "NONE"):
                desc += f" {c.converted_type}"
            desc += " required" if c.max_definition_level == 0 else " optional"
            cols.setdefault(c.name, set()).add(desc)
        for rg in range(md.num_row_groups):
            for ci in range(md.num_columns):
                codecs.add(md.row_group(rg).column(ci).compression)
    return cols, codecs, keys or set()


def check_physical(name, files):
    cols, codecs, keys = physical_info(files)
    want_ts = "INT96" if "int96" in name else "INT64"
    want_amount = "FIXED_LEN_BYTE_ARRAY" if name == "etl_legacy_format" else "INT64"
    want_codec = "ZSTD" if name == "etl_int_partition" else "SNAPPY"
    want_keys = {"org.apache.spark.version", "org.apache.spark.sql.parquet.row.metadata"}
    if name in ("etl_legacy_rebase", "etl_int96_legacy"):
        want_keys.add("org.apache.spark.legacyDateTime")
    if name == "etl_int96_legacy":
        want_keys.add("org.apache.spark.legacyINT96")
    problems = []

    def phys(col):
        ds = cols.get(col, set())
        if len(ds) != 1:
            problems.append(f"{col}: {sorted(ds)} (expected exactly one description)")
            return ""
        return next(iter(ds))

    if not phys("event_ts").startswith(want_ts):
        problems.append(f"event_ts is {phys('event_ts')}, wanted {want_ts}")
    if not phys("amount").startswith(want_amount):
        problems.append(f"amount is {phys('amount')}, wanted {want_amount}")
    if not phys("big_amount").startswith("FIXED_LEN_BYTE_ARRAY"):
        problems.append(f"big_amount is {phys('big_amount')}")
    if not phys("account_open_date").startswith("INT32"):
        problems.append(f"account_open_date is {phys('account_open_date')}")
    if not phys("id").endswith("required"):
        problems.append(f"id is {phys('id')}, wanted required")
    if codecs != {want_codec}:
        problems.append(f"codecs {sorted(codecs)}, wanted {want_codec}")
    missing = want_keys - keys
    if missing:
        problems.append(f"missing key-value metadata {sorted(missing)} (have {sorted(keys)})")
    unexpected = {"org.apache.spark.legacyDateTime", "org.apache.spark.legacyINT96"} & (keys - want_keys)
    if unexpected:
        problems.append(f"unexpected key-value metadata {sorted(unexpected)}")
    for pc in PARTITION_COLS + ["bucket"]:
        in_files = pc in cols
        should = name == "etl_int_partition" and pc != "bucket"
        if in_files != should:
            problems.append(f"column {pc} {'present' if in_files else 'absent'} in files")
    return cols, codecs, keys, problems


def raw_old_values(files, special_ids):
    """Raw stored day / micros numbers for the special rows (as pyarrow reads
    them, i.e. without any rebase), keyed by id."""
    out = {}
    for f in files:
        t = pq.read_table(f, columns=["id", "account_open_date", "event_ts"],
                          coerce_int96_timestamp_unit="us")
        ids = t.column("id").to_pylist()
        days = t.column("account_open_date").cast(pa.int32()).to_pylist()
        micros = t.column("event_ts").cast(pa.int64()).to_pylist()
        for i, d, m in zip(ids, days, micros):
            if i in special_ids:
                out[i] = (d, m)
    return out


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/fixtures/spark")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()

    t0 = time.time()
    spark = (SparkSession.builder
             .master(args.master)
             .appName("millrace-fixtures")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
             .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "1g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    jvm_tz = spark.sparkContext._jvm.java.util.TimeZone.getDefault().getID()
    print(f"spark {spark.version}, pyarrow {pa.__version__}, JVM TZ {jvm_tz}, "
          f"session TZ {spark.conf.get('spark.sql.session.timeZone')}, "
          f"started in {time.time() - t0:.1f}s")
    if jvm_tz != "UTC":
        raise SystemExit(f"JVM default time zone is {jvm_tz}, expected UTC")
    for k in ("spark.sql.parquet.datetimeRebaseModeInRead", "spark.sql.parquet.int96RebaseModeInRead",
              "spark.sql.parquet.datetimeRebaseModeInWrite", "spark.sql.parquet.int96RebaseModeInWrite",
              "spark.sql.parquet.outputTimestampType", "spark.sql.ansi.enabled"):
        print(f"  default {k} = {spark.conf.get(k)}")

    rows, special_ids = generate_rows(args.rows, args.seed)
    df = build_df(spark, rows).cache()
    sample_ids = pick_sample_ids(rows, special_ids)
    print(f"built {df.count()} rows; special (old date/ts) ids {special_ids}; sample ids {sample_ids}")
    df.printSchema()

    os.makedirs(os.path.join(args.out, "expected"), exist_ok=True)
    results, raw = {}, {}
    failures = []
    for name, overrides, _desc in VARIANTS:
        t = time.time()
        path = os.path.join(args.out, name)
        write_variant(spark, df, args.rows, name, overrides, path)
        t_write = time.time() - t
        exp, files = read_expected(spark, name, path, sample_ids)
        results[name] = exp
        with open(os.path.join(args.out, "expected", f"{name}.json"), "w", encoding="utf-8") as fh:
            json.dump(exp, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        cols, codecs, keys, problems = check_physical(name, files)
        per_leaf = {}
        for f in files:
            leaf = os.path.relpath(os.path.dirname(f), path).replace(os.sep, "/")
            per_leaf[leaf] = per_leaf.get(leaf, 0) + 1
        for leaf, k in sorted(per_leaf.items()):
            if name == "etl_int_partition":
                want = 3
            else:
                want = 2 if ("eu-central" in leaf or "us-east" in leaf) else 1
            if k != want:
                problems.append(f"{leaf}: {k} files, wanted {want}")
        raw[name] = raw_old_values(files, set(special_ids))
        print(f"\n== {name}: {exp['files']} files, {len(exp['partitions'])} leaves, {exp['rows']} rows "
              f"(write {t_write:.1f}s, read+check {time.time() - t - t_write:.1f}s)")
        for c in ("id", "f_ctr", "amount", "big_amount", "account_open_date", "event_ts"):
            print(f"   {c:18s} {' | '.join(sorted(cols.get(c, {'-'})))}")
        print(f"   codecs {sorted(codecs)}; kv keys {sorted(keys)}")
        for p in problems:
            print(f"   !! {p}")
            failures.append(f"{name}: {p}")

    # Legacy variants must store different raw numbers for pre-1582-10-15
    # values and identical ones otherwise (proves the rebase really happened).
    print("\n== raw stored values of the special rows vs etl_snappy (days / micros deltas)")
    ref_raw = raw["etl_snappy"]
    for name in results:
        if name == "etl_snappy":
            continue
        deltas = {}
        for i in special_ids:
            (rd, rm), (d, m) = ref_raw[i], raw[name][i]
            deltas[i] = (None if rd is None else d - rd, None if rm is None else m - rm)
        legacy_dates = name in ("etl_legacy_rebase", "etl_int96_legacy")
        legacy_ts = legacy_dates  # INT64 rebased by datetime mode, INT96 by int96 mode
        changed_d = sorted(i for i, (dd, _) in deltas.items() if dd)
        changed_t = sorted(i for i, (_, dm) in deltas.items() if dm)
        print(f"   {name:18s} date deltas (days) { {i: dd for i, (dd, _) in deltas.items() if dd} } "
              f"ts deltas (days) { {i: dm / MICROS_PER_DAY for i, (_, dm) in deltas.items() if dm} }")
        date_idx = RAW_SCHEMA.names.index("account_open_days")
        ts_idx = RAW_SCHEMA.names.index("event_ts_micros")
        cut_d = epoch_days(dt.date(1582, 10, 15))
        want_d = sorted(i for i in special_ids
                        if rows[i][date_idx] is not None and rows[i][date_idx] < cut_d) if legacy_dates else []
        want_t = sorted(i for i in special_ids
                        if rows[i][ts_idx] is not None and rows[i][ts_idx] < cut_d * MICROS_PER_DAY) if legacy_ts else []
        if changed_d != want_d:
            failures.append(f"{name}: raw dates changed for ids {changed_d}, expected {want_d}")
        if changed_t != want_t:
            failures.append(f"{name}: raw timestamps changed for ids {changed_t}, expected {want_t}")

    # The in-memory DataFrame (never written) is the reference for etl_snappy,
    # etl_snappy the reference for the others.
    source = stats(df, "source", sample_ids)
    source["variant"] = "source"
    try:
        check_against_reference(source, results["etl_snappy"])
        print(f"   etl_snappy: agrees with the in-memory source DataFrame")
    except AssertionError as e:
        failures.append(str(e).replace("disagrees with etl_snappy", "disagrees with the source DataFrame"))
    ref = results["etl_snappy"]
    for name, exp in results.items():
        if exp["rows"] != args.rows:
            failures.append(f"{name}: {exp['rows']} rows, wanted {args.rows}")
        if name == "etl_snappy":
            continue
        try:
            shared = check_against_reference(ref, exp)
            print(f"   {name}: agrees with etl_snappy on {len(shared)} shared columns")
        except AssertionError as e:
            failures.append(str(e))

    spark.stop()
    print(f"\ntotal {time.time() - t0:.1f}s")
    if failures:
        print("\nFAILURES:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
