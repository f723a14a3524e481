//! Damaged and unusual logs (gaps, bad versions, bad JSON, unsupported features), checkpoints found by listing, and the type mapping.

use super::*;

#[test]
fn a_gap_in_the_log_names_the_missing_commit() {
    let t = simple_table("gap");
    t.commit(1, &[add("p=a/f3.parquet", Some("a"), 1)]);
    t.commit(3, &[add("p=a/f4.parquet", Some("a"), 1)]);
    let msg = t.load(None).unwrap_err().to_string();
    assert!(msg.contains("00000000000000000002.json"), "{msg}");
    assert!(msg.contains("version 3 cannot be rebuilt"), "{msg}");
    assert_eq!(t.load(Some(1)).unwrap().files.len(), 3);

    std::fs::remove_file(t.log_file(&commit_name(0))).unwrap();
    let msg = t.load(Some(1)).unwrap_err().to_string();
    assert!(
        msg.contains("00000000000000000000.json` is missing") && msg.contains("no checkpoint"),
        "{msg}"
    );
}

#[test]
fn bad_versions_and_empty_logs_are_user_errors() {
    let t = simple_table("versions");
    let msg = t.load(Some(5)).unwrap_err().to_string();
    assert!(
        msg.contains("has no version 5") && msg.contains("latest version is 0"),
        "{msg}"
    );
    assert!(matches!(
        t.load(Some(-1)),
        Err(Error::InvalidOption {
            option: "version",
            ..
        })
    ));
    std::fs::remove_file(t.log_file(&commit_name(0))).unwrap();
    let msg = t.load(None).unwrap_err().to_string();
    assert!(msg.contains("not a Delta table"), "{msg}");
}

#[test]
fn a_stale_or_damaged_last_checkpoint_is_only_a_hint() {
    let t = simple_table("lastcp");
    t.commit(1, &[add("p=a/f3.parquet", Some("a"), 1)]);
    std::fs::write(t.log_file(LAST_CHECKPOINT), r#"{"version":1,"size":3}"#).unwrap();
    assert_eq!(t.files(None).len(), 3);
    std::fs::write(t.log_file(LAST_CHECKPOINT), "{not json").unwrap();
    assert_eq!(t.files(None).len(), 3);
}

#[test]
fn bad_json_line_names_file_and_line() {
    let t = simple_table("badjson");
    let good = add("p=a/f3.parquet", Some("a"), 1).to_string();
    std::fs::write(
        t.log_file(&commit_name(1)),
        format!("{good}\n{{\"add\": {{\"path\": \n"),
    )
    .unwrap();
    let msg = t.load(None).unwrap_err().to_string();
    assert!(
        msg.contains("_delta_log/00000000000000000001.json"),
        "{msg}"
    );
    assert!(msg.contains("line 2: not a valid Delta action"), "{msg}");
}

#[test]
fn deletion_vectors_are_rejected_only_when_a_live_file_has_one() {
    let t = TempTable::new("dv");
    let features = ["deletionVectors"];
    t.commit(
        0,
        &[
            protocol(3, Some(&features)),
            metadata(json!({"delta.enableDeletionVectors": "true"})),
            add("p=a/f1.parquet", Some("a"), 10),
        ],
    );
    assert_eq!(t.files(None).len(), 1, "the feature alone is readable");
    let mut with_dv = add("p=a/f1.parquet", Some("a"), 10);
    with_dv["add"]["deletionVector"] = json!({"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^", "offset": 4, "sizeInBytes": 40, "cardinality": 6});
    t.commit(1, &[with_dv]);
    let err = t.load(None).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("deletion vectors") && msg.contains("REORG TABLE"),
        "{msg}"
    );
    assert!(msg.contains("00000000000000000001.json` line 1"), "{msg}");
    t.commit(2, &[remove("p=a/f1.parquet")]);
    assert!(t.files(None).is_empty());
}

#[test]
fn column_mapping_and_unknown_features_are_unsupported() {
    let t = TempTable::new("colmap");
    t.commit(
        0,
        &[
            protocol(2, None),
            metadata(json!({"delta.columnMapping.mode": "name"})),
        ],
    );
    let err = t.load(None).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("column mapping") && msg.contains("`name`"),
        "{msg}"
    );

    t.commit(1, &[metadata(json!({"delta.columnMapping.mode": "none"}))]);
    assert!(t.load(None).is_ok());
    t.commit(2, &[protocol(3, Some(&["timestampNtz", "v2Checkpoint"]))]);
    let msg = t.load(None).unwrap_err().to_string();
    assert!(msg.contains("reader feature `v2Checkpoint`"), "{msg}");
    t.commit(3, &[protocol(4, None)]);
    let msg = t.load(None).unwrap_err().to_string();
    assert!(msg.contains("reader version 4"), "{msg}");
}

/// Copies the fixture's log (`*.json` only) into a temp table; data files are not needed.
fn fixture_log_copy(name: &str) -> TempTable {
    let t = TempTable::new(name);
    for entry in std::fs::read_dir(fixture_dir().join(LOG_DIR)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".json") {
            std::fs::copy(
                entry.path(),
                t.log_file(&entry.file_name().to_string_lossy()),
            )
            .unwrap();
        }
    }
    t
}

fn fixture_files(version: Option<i64>) -> Vec<(String, Option<u64>)> {
    let (_, snapshot) = load_fixture(version);
    let root = Path::from_filesystem_path(std::fs::canonicalize(fixture_dir()).unwrap()).unwrap();
    let files = snapshot.files.iter();
    files
        .map(|f| {
            (
                f.path
                    .prefix_match(&root)
                    .unwrap()
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                f.num_records,
            )
        })
        .collect()
}

#[test]
fn json_only_replay_agrees_with_the_checkpoint() {
    let t = fixture_log_copy("jsononly");
    assert_eq!(t.files(None), fixture_files(None));
    // Version 2 is older than the fixture's `_last_checkpoint` (3): read by listing the log.
    assert_eq!(t.files(Some(2)), fixture_files(Some(2)));
    assert_ne!(fixture_files(Some(2)), fixture_files(None));
}

#[test]
fn multi_part_checkpoint_found_by_listing() {
    let t = fixture_log_copy("multipart");
    // Split the fixture's checkpoint in two parts, and drop the commits it covers and
    // `_last_checkpoint`, so only a listing of the multi-part checkpoint can rebuild the table.
    let single = std::fs::File::open(
        fixture_dir()
            .join(LOG_DIR)
            .join("00000000000000000003.checkpoint.parquet"),
    )
    .unwrap();
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(single)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let half = batch.num_rows() / 2;
    for (part, slice) in [
        (1, batch.slice(0, half)),
        (2, batch.slice(half, batch.num_rows() - half)),
    ] {
        let file = std::fs::File::create(t.log_file(&format!(
            "00000000000000000003.checkpoint.{part:010}.0000000002.parquet"
        )))
        .unwrap();
        let mut writer = ArrowWriter::try_new(file, slice.schema(), None).unwrap();
        writer.write(&slice).unwrap();
        writer.close().unwrap();
    }
    for v in 0..=3 {
        std::fs::remove_file(t.log_file(&commit_name(v))).unwrap();
    }
    assert_eq!(t.files(None), fixture_files(None));
    // Version 2 is gone with its commits: the error says which version is the oldest readable.
    let msg = t.load(Some(2)).unwrap_err().to_string();
    assert!(msg.contains("read version 3 or later"), "{msg}");
    // An incomplete multi-part checkpoint is ignored.
    std::fs::remove_file(
        t.log_file("00000000000000000003.checkpoint.0000000002.0000000002.parquet"),
    )
    .unwrap();
    assert!(t.load(None).is_err());
}

#[test]
fn is_delta_table_looks_for_the_log() {
    let t = simple_table("isdelta");
    let store = LocalFileSystem::new_with_prefix(&t.dir).unwrap();
    assert!(block_on(is_delta_table(&store, &Path::from("t"))).unwrap());
    assert!(!block_on(is_delta_table(&store, &Path::from("nope"))).unwrap());
    std::fs::create_dir_all(t.dir.join("u").join(LOG_DIR)).unwrap();
    assert!(!block_on(is_delta_table(&store, &Path::from("u"))).unwrap());
}

#[test]
fn load_snapshot_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let store = LocalFileSystem::new();
    assert_send(&load_snapshot(&store, &Path::from("t"), "file:///t", None));
}

#[test]
fn delta_types_map_to_arrow() {
    let ty = |v: Value| delta_type_to_arrow(&v);
    for (name, expected) in [
        ("string", DataType::Utf8),
        ("long", DataType::Int64),
        ("integer", DataType::Int32),
        ("short", DataType::Int16),
        ("byte", DataType::Int8),
        ("float", DataType::Float32),
        ("double", DataType::Float64),
        ("boolean", DataType::Boolean),
        ("binary", DataType::Binary),
        ("date", DataType::Date32),
        (
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ),
        (
            "timestamp_ntz",
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        ("decimal(10,2)", DataType::Decimal128(10, 2)),
        ("decimal(38, 0)", DataType::Decimal128(38, 0)),
    ] {
        assert_eq!(ty(json!(name)), Ok(expected), "{name}");
    }
    assert!(
        ty(json!("decimal(39,2)"))
            .unwrap_err()
            .contains("bad decimal type `decimal(39,2)`")
    );
    assert!(ty(json!("decimal(5,6)")).is_err());
    assert_eq!(
        ty(json!("variant")),
        Err("unknown or unsupported type `variant`".into())
    );

    let nested = json!({"type": "struct", "fields": [
        {"name": "tags", "type": {"type": "array", "elementType": "string", "containsNull": false}, "nullable": true, "metadata": {}},
        {"name": "attrs", "type": {"type": "map", "keyType": "string", "valueType": "double", "valueContainsNull": true}, "nullable": false, "metadata": {}},
        {"name": "point", "type": {"type": "struct", "fields": [{"name": "x", "type": "float", "nullable": false, "metadata": {}}]}, "nullable": true, "metadata": {}},
    ]});
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]);
    assert_eq!(
        ty(nested),
        Ok(DataType::Struct(Fields::from(vec![
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))),
                true
            ),
            Field::new(
                "attrs",
                DataType::Map(
                    Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
                    false
                ),
                false
            ),
            Field::new(
                "point",
                DataType::Struct(Fields::from(vec![Field::new(
                    "x",
                    DataType::Float32,
                    false
                )])),
                true
            ),
        ])))
    );
    let bad = json!({"type": "struct", "fields": [{"name": "a", "type": {"type": "struct", "fields": [{"name": "b", "type": "uuid"}]}}]});
    assert_eq!(
        ty(bad),
        Err("field `a`: field `b`: unknown or unsupported type `uuid`".into())
    );
}

#[test]
fn log_names_parse() {
    assert!(matches!(
        parse_log_name("00000000000000000012.json"),
        Some(LogFile::Commit(12))
    ));
    assert!(matches!(
        parse_log_name("00000000000000000010.checkpoint.parquet"),
        Some(LogFile::Checkpoint(10))
    ));
    assert!(matches!(
        parse_log_name("00000000000000000010.checkpoint.0000000002.0000000003.parquet"),
        Some(LogFile::CheckpointPart {
            version: 10,
            part: 2,
            parts: 3
        })
    ));
    for other in [
        "00000000000000000010.crc",
        "00000000000000000010.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json",
        "_last_checkpoint",
        "0000000000000000001.json",
        "00000000000000000010.checkpoint.0000000004.0000000003.parquet",
        "00000000000000000001.00000000000000000009.compacted.json",
    ] {
        assert!(parse_log_name(other).is_none(), "{other}");
    }
}
