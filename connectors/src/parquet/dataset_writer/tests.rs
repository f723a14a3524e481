//! Tests of the parent module.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type};
use object_store::local::LocalFileSystem;

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "millrace-dataset-writer-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn local_store(dir: &TempDir) -> Arc<dyn ObjectStore> {
    Arc::new(
        LocalFileSystem::new_with_prefix(&dir.0)
            .unwrap()
            .with_automatic_cleanup(true),
    )
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]))
}

fn batch(ids: &[i64], regions: &[Option<&str>]) -> RecordBatch {
    let scores: Vec<f64> = ids.iter().map(|&i| i as f64 * 0.5).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
            Arc::new(StringArray::from(regions.to_vec())),
            Arc::new(Float64Array::from(scores)),
        ],
    )
    .unwrap()
}

fn options(partition_by: &[&str]) -> DatasetWriterOptions {
    DatasetWriterOptions {
        partition_by: partition_by.iter().map(|s| s.to_string()).collect(),
        job_id: "job-1".into(),
        ..DatasetWriterOptions::default()
    }
}

fn writer(store: &Arc<dyn ObjectStore>, options: DatasetWriterOptions) -> DatasetWriter {
    DatasetWriter::new(
        Arc::clone(store),
        StorePath::from("preds"),
        "file:///tmp/preds".into(),
        schema(),
        options,
    )
    .unwrap()
}

/// Every file's rows as (id, region from the directory, score), with the file's schema
/// checked to hold no partition column.
fn read_back(root: &Path, files: &WrittenFiles) -> BTreeMap<i64, (Option<String>, f64)> {
    let mut rows = BTreeMap::new();
    for file in &files.files {
        let dir = file.path.rsplit_once('/').map(|(dir, _)| dir);
        let region = dir.map(|d| hive::parse_segment(d).unwrap().1);
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(root.join(&file.path)).unwrap())
                .unwrap();
        let names: Vec<_> = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "score"], "{}", file.path);
        let mut count = 0;
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let scores = batch.column(1).as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                let region = region.clone().unwrap_or(None);
                let previous = rows.insert(ids.value(i), (region, scores.value(i)));
                assert!(previous.is_none(), "row {} read twice", ids.value(i));
                count += 1;
            }
        }
        assert_eq!(count, file.rows, "{}", file.path);
        let size = std::fs::metadata(root.join(&file.path)).unwrap().len();
        assert_eq!(size, file.bytes, "{}", file.path);
    }
    rows
}

fn files_on_disk(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

#[test]
fn partitioned_write_escapes_values_and_reads_back_every_row() {
    let dir = TempDir::new("partitioned");
    let store = local_store(&dir);
    let mut w = writer(&store, options(&["region"]));
    w.write(&batch(
        &[1, 2, 3, 4],
        &[Some("eu"), Some("ap/south:1"), None, Some("eu")],
    ))
    .unwrap();
    w.write(&batch(
        &[5, 6, 7],
        &[Some(""), Some("ap/south:1"), Some("us")],
    ))
    .unwrap();
    let written = w.finish().unwrap();

    let part = "part-00000-job-1.c000.snappy.parquet";
    let paths: Vec<_> = written.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("region=__HIVE_DEFAULT_PARTITION__/{part}"),
            format!("region=ap%2Fsouth%3A1/{part}"),
            format!("region=eu/{part}"),
            format!("region=us/{part}"),
        ]
    );
    let rows: Vec<_> = written.files.iter().map(|f| f.rows).collect();
    assert_eq!(rows, [2, 2, 2, 1]);
    assert_eq!(written.rows, 7);
    // The directory names on disk are the escaped names, not re-encoded ones.
    let root = dir.0.join("preds");
    assert_eq!(files_on_disk(&root), paths);
    assert!(root.join("region=ap%2Fsouth%3A1").is_dir());

    let got = read_back(&root, &written);
    let expected: BTreeMap<i64, (Option<String>, f64)> = [
        (1, Some("eu")),
        (2, Some("ap/south:1")),
        (3, None),
        (4, Some("eu")),
        (5, None), // Spark writes "" as the default partition too
        (6, Some("ap/south:1")),
        (7, Some("us")),
    ]
    .into_iter()
    .map(|(id, r)| (id, (r.map(String::from), id as f64 * 0.5)))
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn nested_partitions_follow_partition_by_order() {
    let dir = TempDir::new("nested");
    let store = local_store(&dir);
    let schema = Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("year", DataType::Int32, false),
        Field::new("v", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec!["eu", "eu", "us"])) as ArrayRef,
            Arc::new(Int32Array::from(vec![2024, 2023, 2024])),
            Arc::new(Int32Array::from(vec![1, 2, 3])),
        ],
    )
    .unwrap();
    let mut w = DatasetWriter::new(
        Arc::clone(&store),
        StorePath::from("t"),
        "file:///t".into(),
        schema,
        DatasetWriterOptions {
            file: WriterOptions {
                compression: Compression::None,
                ..WriterOptions::default()
            },
            ..options(&["year", "region"])
        },
    )
    .unwrap();
    w.write(&batch).unwrap();
    let written = w.finish().unwrap();
    let files: Vec<_> = written
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.rows))
        .collect();
    assert_eq!(
        files,
        [
            ("year=2023/region=eu/part-00000-job-1.c000.parquet", 1),
            ("year=2024/region=eu/part-00000-job-1.c000.parquet", 1),
            ("year=2024/region=us/part-00000-job-1.c000.parquet", 1),
        ]
    );
    let file = File::open(dir.0.join("t").join(files[2].0)).unwrap();
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<std::result::Result<_, _>>()
        .unwrap();
    assert_eq!(batches[0].num_columns(), 1);
    assert_eq!(batches[0].column(0).as_primitive::<Int32Type>().value(0), 3);
}

#[test]
fn max_rows_per_file_rolls_to_the_next_file() {
    let dir = TempDir::new("roll");
    let store = local_store(&dir);
    let mut w = writer(
        &store,
        DatasetWriterOptions {
            max_rows_per_file: 4,
            file: WriterOptions {
                compression: Compression::Zstd,
                row_group_rows: 2,
            },
            ..options(&["region"])
        },
    );
    for start in [0, 3, 6, 9] {
        let ids: Vec<i64> = (start..(start + 3).min(10)).collect();
        let regions = vec![Some("eu"); ids.len()];
        w.write(&batch(&ids, &regions)).unwrap();
    }
    let written = w.finish().unwrap();
    let files: Vec<_> = written
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.rows))
        .collect();
    assert_eq!(
        files,
        [
            ("region=eu/part-00000-job-1.c000.zstd.parquet", 4),
            ("region=eu/part-00000-job-1.c001.zstd.parquet", 4),
            ("region=eu/part-00000-job-1.c002.zstd.parquet", 2),
        ]
    );
    let got = read_back(&dir.0.join("preds"), &written);
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(got[&9], (Some("eu".into()), 4.5));
}

#[test]
fn max_open_files_closes_the_biggest_and_reopens_with_the_next_number() {
    let dir = TempDir::new("open-files");
    let store = local_store(&dir);
    let mut w = writer(
        &store,
        DatasetWriterOptions {
            max_open_files: 2,
            ..options(&["region"])
        },
    );
    // "eu" buffers the most rows, so opening "us" closes it; its later rows go to c001.
    w.write(&batch(
        &[1, 2, 3, 4],
        &[Some("eu"), Some("eu"), Some("eu"), Some("ap")],
    ))
    .unwrap();
    w.write(&batch(&[5, 6], &[Some("us"), Some("eu")])).unwrap();
    let written = w.finish().unwrap();
    let files: Vec<_> = written
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.rows))
        .collect();
    assert_eq!(
        files,
        [
            ("region=ap/part-00000-job-1.c000.snappy.parquet", 1),
            ("region=eu/part-00000-job-1.c000.snappy.parquet", 3),
            ("region=eu/part-00000-job-1.c001.snappy.parquet", 1),
            ("region=us/part-00000-job-1.c000.snappy.parquet", 1),
        ]
    );
    let got = read_back(&dir.0.join("preds"), &written);
    assert_eq!(got.len(), 6);
    assert_eq!(got[&6], (Some("eu".into()), 3.0));
}

#[test]
fn tasks_of_one_job_write_distinct_files_and_success_marks_the_end() {
    let dir = TempDir::new("tasks");
    let store = local_store(&dir);
    let job = DatasetWriter::new_job_id();
    assert_eq!(uuid::Uuid::parse_str(&job).unwrap().get_version_num(), 4);
    let mut all = WrittenFiles::default();
    for (task, ids) in [(0, [1, 2]), (3, [3, 4])] {
        let mut w = writer(
            &store,
            DatasetWriterOptions {
                task,
                job_id: job.clone(),
                ..options(&["region"])
            },
        );
        w.write(&batch(&ids, &[Some("eu"), Some("us")])).unwrap();
        let written = w.finish().unwrap();
        all.rows += written.rows;
        all.files.extend(written.files);
    }
    let root = dir.0.join("preds");
    assert!(!root.join("_SUCCESS").exists());
    write_success(
        store.as_ref(),
        &StorePath::from("preds"),
        "file:///tmp/preds",
    )
    .unwrap();
    assert_eq!(std::fs::metadata(root.join("_SUCCESS")).unwrap().len(), 0);

    let mut expected: Vec<String> = ["eu", "us"]
        .iter()
        .flat_map(|r| [0, 3].map(|t| format!("region={r}/part-{t:05}-{job}.c000.snappy.parquet")))
        .collect();
    expected.push("_SUCCESS".into());
    expected.sort();
    assert_eq!(files_on_disk(&root), expected);
    let got = read_back(&root, &all);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(got[&4], (Some("us".into()), 2.0));
}

#[test]
fn abort_leaves_nothing_behind() {
    let dir = TempDir::new("abort");
    let store = local_store(&dir);
    let mut w = writer(
        &store,
        DatasetWriterOptions {
            max_rows_per_file: 2,
            ..options(&["region"])
        },
    );
    // Two completed files in "eu" and one open in "eu" and "us".
    w.write(&batch(
        &[1, 2, 3, 4, 5, 6],
        &[
            Some("eu"),
            Some("eu"),
            Some("eu"),
            Some("eu"),
            Some("eu"),
            Some("us"),
        ],
    ))
    .unwrap();
    assert_eq!(files_on_disk(&dir.0.join("preds")).len(), 2);
    w.abort().unwrap();
    assert_eq!(files_on_disk(&dir.0), Vec::<String>::new());
    let listed: Vec<_> = runtime::block_on(store.list(None).try_collect::<Vec<_>>()).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[test]
fn delete_prefix_deletes_only_under_the_root() {
    let dir = TempDir::new("delete");
    let store = local_store(&dir);
    let mut w = writer(&store, options(&["region"]));
    w.write(&batch(&[1, 2, 3], &[Some("eu"), Some("us"), None]))
        .unwrap();
    w.finish().unwrap();
    let root = StorePath::from("preds");
    write_success(store.as_ref(), &root, "file:///tmp/preds").unwrap();
    runtime::block_on(store.put(&StorePath::from("preds2/keep"), PutPayload::from("x"))).unwrap();

    assert_eq!(
        delete_prefix(store.as_ref(), &root, "file:///tmp/preds").unwrap(),
        4
    );
    assert_eq!(files_on_disk(&dir.0), ["preds2/keep"]);
    assert_eq!(
        delete_prefix(store.as_ref(), &root, "file:///tmp/preds").unwrap(),
        0
    );
}

#[test]
fn unpartitioned_write_puts_part_files_at_the_root() {
    let dir = TempDir::new("flat");
    let store = local_store(&dir);
    let mut w = writer(&store, options(&[]));
    w.write(&batch(&[1, 2], &[Some("eu"), None])).unwrap();
    w.write(&batch(&[], &[])).unwrap();
    let written = w.finish().unwrap();
    assert_eq!(written.files.len(), 1);
    assert_eq!(
        written.files[0].path,
        "part-00000-job-1.c000.snappy.parquet"
    );
    assert_eq!(written.rows, 2);
    let file = File::open(dir.0.join("preds").join(&written.files[0].path)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(reader.schema().fields().len(), 3);
    let batch = reader.build().unwrap().next().unwrap().unwrap();
    let regions = batch.column(1).as_string::<i32>();
    assert_eq!(regions.value(0), "eu");
    assert!(regions.is_null(1));
}

#[test]
fn bad_options_are_named() {
    let dir = TempDir::new("options");
    let store = local_store(&dir);
    let new = |schema: SchemaRef, options: DatasetWriterOptions| {
        DatasetWriter::new(
            Arc::clone(&store),
            StorePath::from("preds"),
            "s3://bucket/preds".into(),
            schema,
            options,
        )
        .unwrap_err()
        .to_string()
    };
    let msg = new(schema(), options(&["regoin"]));
    assert!(msg.contains("`regoin`"), "{msg}");
    assert!(msg.contains("s3://bucket/preds"), "{msg}");
    assert!(
        msg.contains("available columns: id, region, score"),
        "{msg}"
    );

    let msg = new(schema(), options(&["region", "region"]));
    assert!(msg.contains("named twice"), "{msg}");

    let msg = new(schema(), options(&["id", "region", "score"]));
    assert!(msg.contains("every column"), "{msg}");

    let lists = Arc::new(Schema::new(vec![
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
            true,
        ),
        Field::new("v", DataType::Int32, true),
    ]));
    let msg = new(lists, options(&["tags"]));
    assert!(
        msg.contains("`tags`") && msg.contains("not supported"),
        "{msg}"
    );

    let msg = new(
        schema(),
        DatasetWriterOptions {
            job_id: "a/b".into(),
            ..options(&[])
        },
    );
    assert!(msg.contains("job_id") && msg.contains("`a/b`"), "{msg}");
}

#[test]
fn batch_of_another_schema_is_refused() {
    let dir = TempDir::new("schema");
    let store = local_store(&dir);
    let mut w = writer(&store, options(&["region"]));
    let other =
        RecordBatch::try_from_iter([("id", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
            .unwrap();
    let err = w.write(&other).unwrap_err();
    assert!(matches!(err, Error::BatchSchema { .. }), "{err}");
    w.abort().unwrap();
}

#[test]
fn large_files_upload_in_parts_and_abort_mid_upload() {
    let dir = TempDir::new("multipart");
    let store = local_store(&dir);
    let big = |first: i64| {
        let ids: Vec<i64> = (first..first + 400_000).collect();
        batch(&ids, &vec![Some("eu"); ids.len()])
    };
    let file = WriterOptions {
        compression: Compression::None,
        row_group_rows: 100_000,
    };
    let mut w = writer(
        &store,
        DatasetWriterOptions {
            file,
            ..options(&["region"])
        },
    );
    // Three batches of ~6.4 MB of raw ids: past one upload part, so a multipart upload.
    for first in [0, 400_000, 800_000] {
        w.write(&big(first)).unwrap();
    }
    let written = w.finish().unwrap();
    assert_eq!(written.rows, 1_200_000);
    assert!(
        written.files[0].bytes > UPLOAD_PART_BYTES as u64 * 2,
        "{written:?}"
    );
    let got = read_back(&dir.0.join("preds"), &written);
    assert_eq!(got.len(), 1_200_000);
    assert_eq!(got[&1_199_999], (Some("eu".into()), 599_999.5));

    let mut w = writer(
        &store,
        DatasetWriterOptions {
            file,
            task: 1,
            ..options(&["region"])
        },
    );
    w.write(&big(0)).unwrap();
    w.write(&big(400_000)).unwrap();
    w.abort().unwrap();
    // Only the first writer's file: no staging file of the aborted upload is left.
    assert_eq!(
        files_on_disk(&dir.0.join("preds")),
        [written.files[0].path.clone()]
    );
}

#[test]
fn store_failures_name_the_file_and_finish_cleans_up() {
    let dir = TempDir::new("store-error");
    let store = local_store(&dir);
    // A plain file where the writer needs the directory `region=us`.
    std::fs::create_dir_all(dir.0.join("preds")).unwrap();
    std::fs::write(dir.0.join("preds/region=us"), b"in the way").unwrap();
    let mut w = writer(&store, options(&["region"]));
    w.write(&batch(&[1, 2], &[Some("eu"), Some("us")])).unwrap();
    let err = w.finish().unwrap_err();
    match &err {
        Error::Store { url, op, .. } => {
            assert_eq!(
                url,
                "file:///tmp/preds/region=us/part-00000-job-1.c000.snappy.parquet"
            );
            assert_eq!(*op, "write");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    // The file that did complete (region=eu) was deleted again.
    assert_eq!(files_on_disk(&dir.0.join("preds")), ["region=us"]);
}

#[test]
fn writer_is_send() {
    fn send<T: Send>() {}
    send::<DatasetWriter>();
}
