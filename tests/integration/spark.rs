//! Spark ETL output, as real Spark wrote it (tests/fixtures/spark, made by
//! scripts/spark/make_fixtures.py), read by millrace and compared with what Spark itself read back:
//! row counts, per-column null counts, min, max and sums, and exact sample rows; plus the ways such
//! output goes wrong (truncated files, bad partition values, junk files) and planning across workers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use millrace::connectors::inspect::json_value;
use millrace::connectors::parquet::{DatasetOptions, ParquetDataset, PartitionFilter, ScanOptions};
use serde_json::Value;

use crate::common::scratch;

pub const VARIANTS: [&str; 6] = [
    "etl_snappy",
    "etl_int96",
    "etl_legacy_rebase",
    "etl_int96_legacy",
    "etl_legacy_format",
    "etl_int_partition",
];

pub fn fixture(variant: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spark")
        .join(variant)
}

pub fn expected(variant: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spark/expected")
        .join(format!("{variant}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Equal as JSON, with floating-point numbers equal to a relative 1e-9 (sums depend on order).
pub fn same_value(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
        }
        _ => got == want,
    }
}

/// Checks a location's statistics against Spark's record of a variant; returns the rows read.
pub fn check_against_spark(location: &str, options: &DatasetOptions, variant: &str) -> u64 {
    let want = expected(variant);
    let report = millrace::inspect::inspect(location, options, 2, false).unwrap();
    assert_eq!(
        report.stats.rows,
        want["rows"].as_u64().unwrap(),
        "{variant}: rows"
    );
    assert_eq!(
        report.files as u64,
        want["files"].as_u64().unwrap(),
        "{variant}: files"
    );
    let columns = want["columns"].as_object().unwrap();
    assert_eq!(
        report.stats.columns.len(),
        columns.len(),
        "{variant}: columns {:?}",
        report
            .stats
            .columns
            .iter()
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
    for got in &report.stats.columns {
        let spark = &columns[&got.name];
        let ctx = format!("{variant}.{}", got.name);
        assert_eq!(got.nulls, spark["nulls"].as_u64().unwrap(), "{ctx}: nulls");
        for (key, value) in [("min", &got.min), ("max", &got.max), ("sum", &got.sum)] {
            let value = value.clone().unwrap_or(Value::Null);
            let spark_value = spark.get(key).cloned().unwrap_or(Value::Null);
            assert!(
                same_value(&value, &spark_value),
                "{ctx}: {key} is {value}, Spark read {spark_value}"
            );
        }
    }
    report.stats.rows
}

/// Every row of a dataset keyed by `id`, each column rendered as in the expectations.
fn rows_by_id(dataset: &ParquetDataset, ids: &[i64]) -> BTreeMap<i64, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for unit in dataset.plan(1).concat() {
        for item in dataset.read_unit(&unit, &ScanOptions::default()).unwrap() {
            let (_, batch) = item.unwrap();
            let id_col = batch.schema().index_of("id").unwrap();
            for row in 0..batch.num_rows() {
                let id = json_value(batch.column(id_col).as_ref(), row)
                    .as_i64()
                    .unwrap();
                if ids.contains(&id) {
                    let record = batch
                        .schema()
                        .fields()
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (f.name().clone(), json_value(batch.column(i).as_ref(), row)))
                        .collect();
                    out.insert(id, record);
                }
            }
        }
    }
    out
}

#[test]
fn every_variant_reads_as_spark_reads_it() {
    for variant in VARIANTS {
        let path = fixture(variant);
        check_against_spark(&path.to_string_lossy(), &DatasetOptions::default(), variant);

        let want = expected(variant);
        let sample = want["sample"].as_array().unwrap();
        let ids: Vec<i64> = sample.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        let dataset = ParquetDataset::open_path(&path).unwrap();
        let got = rows_by_id(&dataset, &ids);
        assert_eq!(got.len(), ids.len(), "{variant}: sample rows found");
        for spark_row in sample {
            let id = spark_row["id"].as_i64().unwrap();
            for (column, spark_value) in spark_row.as_object().unwrap() {
                let value = &got[&id][column];
                assert!(
                    same_value(value, spark_value),
                    "{variant} id {id} column {column}: millrace {value}, Spark {spark_value}"
                );
            }
        }
    }
}

#[test]
fn partition_columns_are_typed_and_escaped_values_decoded() {
    let dataset = ParquetDataset::open_path(fixture("etl_snappy")).unwrap();
    assert_eq!(dataset.partition_columns(), vec!["event_date", "region"]);
    let schema = dataset.schema();
    let date = schema.field_with_name("event_date").unwrap();
    assert_eq!(date.data_type(), &arrow::datatypes::DataType::Date32);
    let region = schema.field_with_name("region").unwrap();
    assert_eq!(region.data_type(), &arrow::datatypes::DataType::Utf8);
    let ints = ParquetDataset::open_path(fixture("etl_int_partition")).unwrap();
    let bucket = ints.schema().field_with_name("bucket").unwrap().clone();
    assert_eq!(bucket.data_type(), &arrow::datatypes::DataType::Int32);
    // The files themselves do not hold the partition columns.
    assert!(dataset.file_schema().field_with_name("region").is_err());
}

#[test]
fn partition_filters_prune_directories_and_keep_exact_rows() {
    let path = fixture("etl_snappy");
    let all = ParquetDataset::open_path(&path).unwrap();
    // Reference: count the matching rows by reading everything.
    let mut expected_rows = 0u64;
    for unit in all.plan(1).concat() {
        for item in all
            .read_unit(
                &unit,
                &ScanOptions {
                    projection: Some(vec!["event_date".into(), "region".into()]),
                    batch_size: 0,
                },
            )
            .unwrap()
        {
            let (_, batch) = item.unwrap();
            for row in 0..batch.num_rows() {
                let date = json_value(batch.column(0).as_ref(), row);
                let region = json_value(batch.column(1).as_ref(), row);
                if date.as_str() >= Some("2024-03-03") && region == "eu-central" {
                    expected_rows += 1;
                }
            }
        }
    }
    assert!(expected_rows > 0);
    let options = DatasetOptions {
        partition_filters: vec![
            PartitionFilter::parse("event_date >= '2024-03-03'").unwrap(),
            PartitionFilter::parse("region = 'eu-central'").unwrap(),
        ],
        ..DatasetOptions::default()
    };
    let pruned = ParquetDataset::open_with(&path.to_string_lossy(), &options).unwrap();
    assert_eq!(pruned.num_rows(), expected_rows);
    assert!(pruned.files().len() < all.files().len());
    assert!(pruned.files().iter().all(|f| {
        let p = f.path.to_string_lossy();
        p.contains("region=eu-central") && !p.contains("2024-03-01") && !p.contains("2024-03-02")
    }));
    let nulls = DatasetOptions {
        partition_filters: vec![PartitionFilter::parse("region is null").unwrap()],
        ..DatasetOptions::default()
    };
    let null_part = ParquetDataset::open_with(&path.to_string_lossy(), &nulls).unwrap();
    let want = expected("etl_snappy");
    assert_eq!(
        null_part.num_rows(),
        want["columns"]["region"]["nulls"].as_u64().unwrap()
    );
    let err = ParquetDataset::open_with(
        &path.to_string_lossy(),
        &DatasetOptions {
            partition_filters: vec![PartitionFilter::parse("country = 'x'").unwrap()],
            ..DatasetOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("`country` is not a partition column") && err.contains("event_date, region"),
        "{err}"
    );
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn first_part_file(dir: &Path) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with("part-") {
                return p;
            }
        }
    }
    panic!("no part file under {}", dir.display());
}

#[test]
fn truncated_part_file_fails_at_open_naming_it() {
    let dir = scratch("spark-truncated").join("etl");
    copy_dir(&fixture("etl_snappy"), &dir);
    let victim = first_part_file(&dir);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = ParquetDataset::open_path(&dir).unwrap_err().to_string();
    assert!(err.contains(&*victim.to_string_lossy()), "{err}");
    assert!(err.contains("not a readable Parquet file"), "{err}");
}

#[test]
fn partition_value_that_does_not_parse_names_the_directory() {
    let dir = scratch("spark-bad-partition").join("etl");
    copy_dir(&fixture("etl_snappy"), &dir);
    std::fs::rename(
        dir.join("event_date=2024-03-02"),
        dir.join("event_date=2024-13-45"),
    )
    .unwrap();
    // Inferred, the column falls back to a string, as in Spark.
    let inferred = ParquetDataset::open_path(&dir).unwrap();
    assert_eq!(
        inferred
            .schema()
            .field_with_name("event_date")
            .unwrap()
            .data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    // Declared as a date, the bad directory is named.
    let options = DatasetOptions {
        partition_types: BTreeMap::from([("event_date".to_string(), "date".to_string())]),
        ..DatasetOptions::default()
    };
    let err = ParquetDataset::open_with(&dir.to_string_lossy(), &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("event_date=2024-13-45"), "{err}");
    assert!(err.contains("2024-13-45") && err.contains("date"), "{err}");
}

#[test]
fn committer_and_hidden_files_are_ignored() {
    let dir = scratch("spark-junk").join("etl");
    copy_dir(&fixture("etl_int_partition"), &dir);
    for junk in [
        "_committed_4711",
        "_started_4711",
        ".hidden",
        "bucket=1/.part-x.crc",
    ] {
        std::fs::write(dir.join(junk), b"not parquet").unwrap();
    }
    std::fs::create_dir_all(dir.join("_temporary/0")).unwrap();
    std::fs::write(dir.join("_temporary/0/part-00000.parquet"), b"half written").unwrap();
    let rows = check_against_spark(
        &dir.to_string_lossy(),
        &DatasetOptions::default(),
        "etl_int_partition",
    );
    assert_eq!(
        rows,
        expected("etl_int_partition")["rows"].as_u64().unwrap()
    );
}

#[test]
fn every_row_is_planned_exactly_once_for_any_worker_count() {
    for variant in ["etl_snappy", "etl_int_partition"] {
        let dataset = ParquetDataset::open_path(fixture(variant)).unwrap();
        let total = expected(variant)["rows"].as_u64().unwrap();
        for workers in [1, 2, 3, 5, 64] {
            let plan = dataset.plan(workers);
            assert_eq!(plan.len(), workers);
            let mut ids = Vec::new();
            for units in &plan {
                for unit in units {
                    for item in dataset
                        .read_unit(
                            unit,
                            &ScanOptions {
                                projection: Some(vec!["id".into()]),
                                batch_size: 1000,
                            },
                        )
                        .unwrap()
                    {
                        let (_, batch) = item.unwrap();
                        for row in 0..batch.num_rows() {
                            ids.push(json_value(batch.column(0).as_ref(), row).as_i64().unwrap());
                        }
                    }
                }
            }
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len() as u64, total, "{variant} on {workers} workers");
            // Balanced by size: with a few workers no part is empty, and none holds more than
            // twice its share of the bytes.
            if workers <= 3 {
                let bytes: Vec<u64> = plan
                    .iter()
                    .map(|units| {
                        units
                            .iter()
                            .map(|u| {
                                let file = &dataset.files()[u.file_index];
                                u.row_groups
                                    .iter()
                                    .map(|&g| file.row_groups[g].compressed_bytes)
                                    .sum::<u64>()
                            })
                            .sum()
                    })
                    .collect();
                let share = bytes.iter().sum::<u64>() / workers as u64;
                assert!(
                    bytes.iter().all(|&b| b > 0 && b <= 2 * share),
                    "{variant}: {bytes:?}"
                );
            }
        }
    }
}

#[test]
fn delta_table_reads_latest_and_older_versions() {
    let table = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta/events");
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(table.with_file_name("events.expected.json")).unwrap(),
    )
    .unwrap();
    let report = millrace::inspect::inspect(
        &table.to_string_lossy(),
        &DatasetOptions::default(),
        2,
        false,
    )
    .unwrap();
    assert_eq!(report.format, "delta");
    assert_eq!(report.delta_version, want["version"].as_i64());
    assert_eq!(report.stats.rows, want["rows"].as_u64().unwrap());
    assert_eq!(report.files as u64, want["files"].as_u64().unwrap());
    let sum_id = report
        .stats
        .columns
        .iter()
        .find(|c| c.name == "id")
        .unwrap()
        .sum
        .clone();
    assert_eq!(sum_id, Some(want["sum_id"].clone()));
    let v1 = &want["version_1"];
    let old = millrace::inspect::inspect(
        &table.to_string_lossy(),
        &DatasetOptions {
            delta_version: Some(1),
            ..DatasetOptions::default()
        },
        1,
        false,
    )
    .unwrap();
    assert_eq!(old.stats.rows, v1["rows"].as_u64().unwrap());
    let old_sum = old
        .stats
        .columns
        .iter()
        .find(|c| c.name == "id")
        .unwrap()
        .sum
        .clone();
    assert_eq!(old_sum, Some(v1["sum_id"].clone()));
}
