//! Tests of the parent module.

mod logs;
use super::*;
use crate::runtime::block_on;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Field, Fields, Float64Type, Int64Type, TimeUnit};
use object_store::local::LocalFileSystem;
use parquet::arrow::ArrowWriter;
use serde_json::json;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/delta/events")
}

fn expected() -> Value {
    let path = fixture_dir().with_file_name("events.expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load_fixture(version: Option<i64>) -> (Arc<dyn ObjectStore>, DeltaSnapshot) {
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    let dir = std::fs::canonicalize(fixture_dir()).unwrap();
    let root = Path::from_filesystem_path(&dir).unwrap();
    let url = format!("file://{}", dir.display());
    let snapshot = block_on(load_snapshot(store.as_ref(), &root, &url, version)).unwrap();
    (store, snapshot)
}

/// Rows and sum of `id` over the snapshot's data files, fetched from the store and decoded.
fn scan(store: &Arc<dyn ObjectStore>, snapshot: &DeltaSnapshot) -> (usize, i64, f64) {
    let (mut rows, mut sum, mut sum_x) = (0, 0, 0.0);
    for file in &snapshot.files {
        let bytes = block_on(get_bytes(store.as_ref(), &file.path)).unwrap();
        assert_eq!(bytes.len() as u64, file.size, "{}", file.path);
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let names: Vec<_> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "x", "name", "amount", "ts"], "{}", file.path);
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            rows += batch.num_rows();
            sum += batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>();
            sum_x += batch
                .column(1)
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .sum::<f64>();
        }
    }
    (rows, sum, sum_x)
}

#[test]
fn fixture_latest_version_matches_delta_rs() {
    let expected = expected();
    let (store, snapshot) = load_fixture(None);
    assert_eq!(snapshot.version, expected["version"].as_i64().unwrap());
    assert_eq!(
        snapshot.files.len() as u64,
        expected["files"].as_u64().unwrap()
    );
    assert_eq!(snapshot.partition_columns, ["event_date", "region"]);
    let fields: Vec<_> = snapshot
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        fields,
        [
            ("id", DataType::Int64, false),
            ("x", DataType::Float64, true),
            ("name", DataType::Utf8, true),
            ("amount", DataType::Decimal128(10, 2), true),
            (
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true
            ),
            ("event_date", DataType::Date32, true),
            ("region", DataType::Utf8, true),
        ]
    );
    let rows = expected["rows"].as_u64().unwrap();
    let records: u64 = snapshot.files.iter().map(|f| f.num_records.unwrap()).sum();
    assert_eq!(records, rows);
    assert!(snapshot.files.windows(2).all(|w| w[0].path < w[1].path));

    // Partition values: the null region, and "ap/south" whose directory is `region=ap%2Fsouth`
    // and whose logged path is double-encoded (`ap%252Fsouth`).
    let regions: std::collections::BTreeSet<_> = snapshot
        .files
        .iter()
        .map(|f| f.partition_values[1].clone())
        .collect();
    assert_eq!(
        regions,
        [
            None,
            Some("ap/south".into()),
            Some("eu".into()),
            Some("us".into())
        ]
        .into()
    );
    let south = snapshot
        .files
        .iter()
        .find(|f| f.partition_values[1].as_deref() == Some("ap/south"))
        .unwrap();
    assert!(
        south.path.as_ref().contains("/region=ap%2Fsouth/part-"),
        "{}",
        south.path
    );
    assert!(snapshot.files.iter().all(|f| {
        f.partition_values[0]
            .as_deref()
            .unwrap()
            .starts_with("2024-03-0")
    }));

    let (scanned, sum_id, sum_x) = scan(&store, &snapshot);
    assert_eq!(scanned as u64, rows);
    assert_eq!(sum_id, expected["sum_id"].as_i64().unwrap());
    assert!(
        (sum_x - expected["sum_x"].as_f64().unwrap()).abs() < 1e-6,
        "{sum_x}"
    );
}

#[test]
fn fixture_time_travel_to_version_1() {
    let expected = &expected()["version_1"];
    let (store, snapshot) = load_fixture(Some(1));
    assert_eq!(snapshot.version, 1);
    let records: u64 = snapshot.files.iter().map(|f| f.num_records.unwrap()).sum();
    assert_eq!(records, expected["rows"].as_u64().unwrap());
    let (rows, sum_id, _) = scan(&store, &snapshot);
    assert_eq!(rows as u64, expected["rows"].as_u64().unwrap());
    assert_eq!(sum_id, expected["sum_id"].as_i64().unwrap());
}

/// A table directory in the temp dir, removed on drop; holds only what the test writes.
struct TempTable {
    dir: PathBuf,
}

impl TempTable {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("millrace-delta-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("t").join(LOG_DIR)).unwrap();
        TempTable { dir }
    }

    fn log_file(&self, name: &str) -> PathBuf {
        self.dir.join("t").join(LOG_DIR).join(name)
    }

    fn commit(&self, version: i64, actions: &[Value]) {
        let lines: Vec<String> = actions.iter().map(Value::to_string).collect();
        std::fs::write(self.log_file(&commit_name(version)), lines.join("\n")).unwrap();
    }

    fn url(&self) -> String {
        format!("file://{}/t", self.dir.display())
    }

    fn load(&self, version: Option<i64>) -> Result<DeltaSnapshot> {
        let store = LocalFileSystem::new_with_prefix(&self.dir).unwrap();
        block_on(load_snapshot(
            &store,
            &Path::from("t"),
            &self.url(),
            version,
        ))
    }

    /// Paths relative to the table root, and their numRecords.
    fn files(&self, version: Option<i64>) -> Vec<(String, Option<u64>)> {
        let snapshot = self.load(version).unwrap();
        let files = snapshot.files.iter();
        files
            .map(|f| {
                (
                    f.path.as_ref().strip_prefix("t/").unwrap().to_string(),
                    f.num_records,
                )
            })
            .collect()
    }
}

impl Drop for TempTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn protocol(reader: i32, features: Option<&[&str]>) -> Value {
    let mut p = json!({"minReaderVersion": reader, "minWriterVersion": 7});
    if let Some(features) = features {
        p["readerFeatures"] = json!(features);
        p["writerFeatures"] = json!(features);
    }
    json!({ "protocol": p })
}

fn metadata(configuration: Value) -> Value {
    let schema = json!({"type": "struct", "fields": [
        {"name": "id", "type": "long", "nullable": false, "metadata": {}},
        {"name": "p", "type": "string", "nullable": true, "metadata": {}},
    ]});
    json!({"metaData": {"id": "t", "format": {"provider": "parquet", "options": {}},
        "schemaString": schema.to_string(), "partitionColumns": ["p"],
        "configuration": configuration, "createdTime": 0}})
}

fn add(path: &str, p: Option<&str>, rows: u64) -> Value {
    json!({"add": {"path": path, "partitionValues": {"p": p}, "size": 100,
        "modificationTime": 0, "dataChange": true,
        "stats": json!({"numRecords": rows}).to_string()}})
}

fn remove(path: &str) -> Value {
    json!({"remove": {"path": path, "deletionTimestamp": 0, "dataChange": true}})
}

fn simple_table(name: &str) -> TempTable {
    let t = TempTable::new(name);
    t.commit(
        0,
        &[
            json!({"commitInfo": {"operation": "WRITE"}}),
            protocol(1, None),
            metadata(json!({})),
            add("p=a/f1.parquet", Some("a"), 10),
            add("p=b/f2.parquet", Some("b"), 20),
        ],
    );
    t
}

#[test]
fn remove_cancels_add_and_a_later_add_restores_it() {
    let t = simple_table("remove");
    t.commit(
        1,
        &[
            remove("p=a/f1.parquet"),
            add("p=a/f3.parquet", Some("a"), 5),
        ],
    );
    t.commit(
        2,
        &[
            add("p=a/f1.parquet", Some("a"), 11),
            remove("p=b/f2.parquet"),
        ],
    );
    assert_eq!(
        t.files(Some(0)),
        [
            ("p=a/f1.parquet".into(), Some(10)),
            ("p=b/f2.parquet".into(), Some(20))
        ]
    );
    assert_eq!(
        t.files(Some(1)),
        [
            ("p=a/f3.parquet".into(), Some(5)),
            ("p=b/f2.parquet".into(), Some(20))
        ]
    );
    assert_eq!(
        t.files(None),
        [
            ("p=a/f1.parquet".into(), Some(11)),
            ("p=a/f3.parquet".into(), Some(5))
        ]
    );
    let snapshot = t.load(None).unwrap();
    assert_eq!(snapshot.version, 2);
    assert_eq!(snapshot.partition_columns, ["p"]);
    assert_eq!(snapshot.files[0].partition_values, [Some("a".to_string())]);
    assert_eq!(snapshot.files[0].size, 100);
}

#[test]
fn paths_are_decoded_once_and_absolute_uris_must_be_under_the_root() {
    let t = simple_table("paths");
    let inside = format!("{}/p=c/f4.parquet", t.url());
    t.commit(
        1,
        &[
            add("p=ap%252Fsouth/f%20x.parquet", Some("ap/south"), 1),
            add(&inside, Some(""), 2),
        ],
    );
    let files = t.files(None);
    assert_eq!(files[0], ("p=a/f1.parquet".into(), Some(10)));
    assert_eq!(files[1], ("p=ap%2Fsouth/f x.parquet".into(), Some(1)));
    assert_eq!(files[3], ("p=c/f4.parquet".into(), Some(2)));
    // An empty partition value is null.
    assert_eq!(t.load(None).unwrap().files[3].partition_values, [None]);

    t.commit(2, &[add("s3://elsewhere/data/f5.parquet", Some("z"), 1)]);
    let err = t.load(None).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("s3://elsewhere/data/f5.parquet")
            && msg.contains("00000000000000000002.json` line 1"),
        "{msg}"
    );
    assert_eq!(t.load(Some(1)).unwrap().files.len(), 4);
}
