//! Tests of the parent module.
use super::*;
use arrow::array::{Date32Array, TimestampMicrosecondArray, TimestampMillisecondArray};
use chrono::{Datelike, NaiveDate};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::schema::parser::parse_message_type;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const UTC: &str = "UTC";

/// Julian-calendar date → days since 1970-01-01, by the Fliegel–Van Flandern Julian day
/// number formula (an independent check of `julian_civil_from_days`; valid for year ≥ -4712).
fn julian_days(year: i64, month: i64, day: i64) -> i64 {
    let a = (14 - month) / 12;
    let y = year + 4800 - a;
    let m = month + 12 * a - 3;
    let jdn = day + (153 * m + 2) / 5 + 365 * y + y / 4 - 32083;
    jdn - 2_440_588
}

/// Proleptic Gregorian date → days since 1970-01-01, by chrono.
fn gregorian_days(year: i32, month: u32, day: u32) -> i64 {
    let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
    i64::from(date.num_days_from_ce()) - 719_163
}

fn at(days: i64, h: i64, m: i64, s: i64, micros: i64) -> i64 {
    days * MICROS_PER_DAY + ((h * 60 + m) * 60 + s) * 1_000_000 + micros
}

fn kv(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn day_rebase_known_values() {
    // Hand-computed: 0001-01-01 is -719164 (Julian) and -719162 (Gregorian).
    assert_eq!(rebase_julian_to_gregorian_days(-719_164), -719_162);
    // 1000-06-15: Julian JDN 2086474 (-354114), Gregorian JDN 2086468 (-354120).
    assert_eq!(julian_days(1000, 6, 15), -354_114);
    assert_eq!(gregorian_days(1000, 6, 15), -354_120);
    assert_eq!(rebase_julian_to_gregorian_days(-354_114), -354_120);
    // 1582-10-04, the last Julian day, is day -141438 in the proleptic Gregorian calendar.
    assert_eq!(julian_days(1582, 10, 4), -141_428);
    assert_eq!(rebase_julian_to_gregorian_days(-141_428), -141_438);
    // Spark's doc example: 1582-01-01 is -141704 (Julian) and -141714 (Gregorian).
    assert_eq!(rebase_julian_to_gregorian_days(-141_704), -141_714);
    // Julian-only leap day 1000-02-29 and the day after both become Gregorian 1000-03-01.
    assert_eq!(julian_days(1000, 2, 29), -354_221);
    assert_eq!(rebase_julian_to_gregorian_days(-354_221), -354_226);
    assert_eq!(rebase_julian_to_gregorian_days(-354_220), -354_226);
    assert_eq!(gregorian_days(1000, 3, 1), -354_226);
    // Before the common era the difference keeps growing: 201 BC (-200) differs by 4 days.
    assert_eq!(julian_days(-200, 1, 1), -792_580);
    assert_eq!(rebase_julian_to_gregorian_days(-792_580), -792_576);
    assert_eq!(gregorian_days(-200, 1, 1), -792_576);
    // 1582-10-15 and later are the same in both calendars.
    for days in [-141_427, -141_000, -1, 0, 19_000, i32::MAX] {
        assert_eq!(rebase_julian_to_gregorian_days(days), days);
    }
    // The extremes neither panic nor clamp.
    let min = rebase_julian_to_gregorian_days(i32::MIN);
    assert!(min > i32::MIN && min < i32::MIN + 50_000, "{min}");
}

#[test]
fn day_rebase_keeps_the_date_fields_everywhere() {
    // Every day from 4713 BC to the switch: same (y, m, d), Gregorian via chrono.
    let start = julian_days(-4712, 1, 1);
    for days in start..i64::from(LAST_SWITCH_JULIAN_DAY) {
        let (y, m, d) = julian_civil_from_days(days);
        assert_eq!(julian_days(y, m, d), days, "{y}-{m}-{d}");
        let rebased = i64::from(rebase_julian_to_gregorian_days(days as i32));
        let first = gregorian_days(y as i32, m as u32, 1);
        assert_eq!(rebased, first + d - 1, "{y}-{m}-{d}");
        if (y, m, d) >= (1, 1, 1) {
            // Spark's precomputed table for the common era (RebaseDateTime.scala).
            const SWITCHES: [i64; 14] = [
                -719_164, -682_945, -646_420, -609_895, -536_845, -500_320, -463_795, -390_745,
                -354_220, -317_695, -244_645, -208_120, -171_595, -141_427,
            ];
            const DIFFS: [i64; 14] = [2, 1, 0, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, 0];
            let i = SWITCHES.iter().rposition(|s| days >= *s).unwrap();
            assert_eq!(rebased, days + DIFFS[i], "{y}-{m}-{d}");
        }
    }
    assert_eq!(julian_civil_from_days(-141_428), (1582, 10, 4));
    assert_eq!(julian_civil_from_days(-719_165), (0, 12, 31));
}

#[test]
fn gregorian_day_numbers_match_chrono() {
    for year in (-3000..3000).step_by(7) {
        for (month, day) in [(1, 1), (2, 28), (3, 1), (12, 31)] {
            assert_eq!(
                gregorian_days_from_civil(i64::from(year), month, day),
                gregorian_days(year, month as u32, day as u32)
            );
        }
    }
}

#[test]
fn micros_rebase() {
    // 1000-01-01T12:00:00: Julian day -354280, Gregorian day -354285.
    let julian = at(julian_days(1000, 1, 1), 12, 0, 0, 0);
    assert_eq!(julian_days(1000, 1, 1), -354_280);
    assert_eq!(
        rebase_julian_to_gregorian_micros(julian),
        at(gregorian_days(1000, 1, 1), 12, 0, 0, 0)
    );
    // One microsecond before the switch is 1582-10-04T23:59:59.999999 (floor division: a
    // truncating one would see day -141427 and leave it alone).
    let switch = i64::from(LAST_SWITCH_JULIAN_DAY) * MICROS_PER_DAY;
    assert_eq!(
        rebase_julian_to_gregorian_micros(switch - 1),
        at(-141_438, 23, 59, 59, 999_999)
    );
    assert_eq!(rebase_julian_to_gregorian_micros(switch), switch);
    // Sub-second parts of negative values survive: 0001-01-01T00:00:00.000001.
    assert_eq!(
        rebase_julian_to_gregorian_micros(at(-719_164, 0, 0, 0, 1)),
        at(-719_162, 0, 0, 0, 1)
    );
    // Julian-only leap day: 1000-02-29T01:02:03.123456 → 1000-03-01T01:02:03.123456.
    assert_eq!(
        rebase_julian_to_gregorian_micros(at(-354_221, 1, 2, 3, 123_456)),
        at(-354_226, 1, 2, 3, 123_456)
    );
    // Modern values, including just before the epoch, are untouched.
    for micros in [-1, 0, 1_700_000_000_000_000, i64::MAX] {
        assert_eq!(rebase_julian_to_gregorian_micros(micros), micros);
    }
    // The extremes do not panic and move forward (the difference is positive that far back).
    assert!(rebase_julian_to_gregorian_micros(i64::MIN) > i64::MIN);
}

#[test]
fn key_value_parsing() {
    let none = SparkWriteInfo::from_key_value(None);
    assert_eq!(none, SparkWriteInfo::default());
    assert!(!none.needs_rebase());

    let spark24 = kv(&[
        (SPARK_VERSION_KEY, "2.4.8"),
        (SPARK_ROW_METADATA_KEY, r#"{"type":"struct","fields":[]}"#),
    ]);
    let info = SparkWriteInfo::from_key_value(Some(&spark24));
    assert_eq!(info.spark_version.as_deref(), Some("2.4.8"));
    assert!(info.legacy_datetime && info.legacy_int96 && info.needs_rebase());
    assert_eq!(info.time_zone, None);
    assert_eq!(
        info.row_metadata.as_deref(),
        Some(r#"{"type":"struct","fields":[]}"#)
    );
    assert_eq!(info.non_utc_time_zone(), None);

    // Spark 3.0 wrote dates proleptic but INT96 still in the hybrid calendar.
    let spark30 = kv(&[(SPARK_VERSION_KEY, "3.0.3")]);
    let info = SparkWriteInfo::from_key_value(Some(&spark30));
    assert!(!info.legacy_datetime && info.legacy_int96);

    let modern = kv(&[
        (SPARK_VERSION_KEY, "3.5.1"),
        (SPARK_TIME_ZONE_KEY, "Etc/UTC"),
    ]);
    let info = SparkWriteInfo::from_key_value(Some(&modern));
    assert!(!info.needs_rebase());
    assert_eq!(info.time_zone.as_deref(), Some("Etc/UTC"));

    let legacy = kv(&[
        (SPARK_VERSION_KEY, "4.0.0"),
        (SPARK_LEGACY_DATETIME_KEY, ""),
        (SPARK_TIME_ZONE_KEY, "America/Los_Angeles"),
    ]);
    let info = SparkWriteInfo::from_key_value(Some(&legacy));
    assert!(info.legacy_datetime && !info.legacy_int96);
    assert_eq!(info.non_utc_time_zone(), Some("America/Los_Angeles"));
    let legacy96 = kv(&[
        (SPARK_VERSION_KEY, "3.3.2"),
        (SPARK_LEGACY_INT96_KEY, ""),
        (SPARK_TIME_ZONE_KEY, "UTC"),
    ]);
    let info = SparkWriteInfo::from_key_value(Some(&legacy96));
    assert!(!info.legacy_datetime && info.legacy_int96);
    assert_eq!(info.non_utc_time_zone(), None);

    // Version strings: pre-releases, two components, numeric (not string) comparison.
    assert!(version_before("2.4", (3, 0, 0), "3.0.0"));
    assert!(!version_before("3.0.0-preview2", (3, 0, 0), "3.0.0"));
    assert!(version_before("3.0.0-preview2", (3, 1, 0), "3.1.0"));
    assert!(!version_before("10.0.0", (3, 0, 0), "3.0.0"));
    assert!(version_before("", (3, 0, 0), "3.0.0"));
    assert!(is_utc_zone("utc") && is_utc_zone("GMT") && is_utc_zone("Z"));
    assert!(!is_utc_zone("Europe/Paris") && !is_utc_zone("+01:00"));
}

const MESSAGE: &str = "message spark_schema {
    optional int64 id;
    optional int32 d (DATE);
    optional int64 ts (TIMESTAMP(MICROS,true));
    optional int96 t96;
    optional group s {
        optional int96 inner;
        optional binary name (STRING);
    }
    optional group l (LIST) {
        repeated group list {
            optional int96 element;
        }
    }
}";

#[test]
fn int96_hint_from_message_type() -> TestResult {
    let descriptor = SchemaDescriptor::new(Arc::new(parse_message_type(MESSAGE)?));
    assert_eq!(int96_columns(&descriptor), vec!["t96".to_string()]);
    let file_schema = parquet::arrow::parquet_to_arrow_schema(&descriptor, None)?;
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
    assert_eq!(file_schema.field_with_name("t96")?.data_type(), &ns);

    let hint = int96_schema_hint(&descriptor, &file_schema).unwrap();
    assert_eq!(hint.fields().len(), file_schema.fields().len());
    assert_eq!(hint.field_with_name("t96")?.data_type(), &spark_timestamp());
    assert_eq!(
        hint.field_with_name("ts")?.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
    );
    assert_eq!(hint.field_with_name("d")?.data_type(), &DataType::Date32);
    let DataType::Struct(s) = hint.field_with_name("s")?.data_type() else {
        panic!("s is not a struct");
    };
    assert_eq!(s[0].data_type(), &spark_timestamp());
    assert_eq!(s[1].data_type(), &DataType::Utf8);
    let DataType::List(element) = hint.field_with_name("l")?.data_type() else {
        panic!("l is not a list");
    };
    assert_eq!(element.data_type(), &spark_timestamp());

    // No INT96 column: no hint.
    let plain = SchemaDescriptor::new(Arc::new(parse_message_type(
        "message m { optional int32 d (DATE); optional int64 x; }",
    )?));
    let plain_schema = parquet::arrow::parquet_to_arrow_schema(&plain, None)?;
    assert!(int96_schema_hint(&plain, &plain_schema).is_none());
    assert!(int96_columns(&plain).is_empty());
    // A schema already asking for microseconds needs no hint either.
    assert!(int96_schema_hint(&descriptor, &hint).is_none());
    Ok(())
}

/// A batch like Spark's: a date, an INT64 timestamp, an INT96 one, an NTZ one, milliseconds.
fn sample_batch(old: bool) -> RecordBatch {
    let day = if old { -354_114 } else { 19_000 };
    let micros = if old {
        at(-354_280, 12, 0, 0, 0)
    } else {
        1_700_000_000_000_000
    };
    let utc = |a: TimestampMicrosecondArray| a.with_timezone(UTC);
    let schema = Arc::new(Schema::new(vec![
        Field::new("d", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            true,
        ),
        Field::new("t96", spark_timestamp(), true),
        Field::new(
            "ntz",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new(
            "ms",
            DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
            true,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Date32Array::from(vec![Some(day), None, Some(0)])),
            Arc::new(utc(vec![Some(micros), None, Some(0)].into())),
            Arc::new(utc(vec![Some(micros), None, Some(0)].into())),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(micros),
                None,
                Some(0),
            ])),
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(micros / 1000), None, Some(0)])
                    .with_timezone(UTC),
            ),
        ],
    )
    .unwrap()
}

fn first_i64(batch: &RecordBatch, name: &str) -> i64 {
    let column = batch.column_by_name(name).unwrap();
    match column.data_type() {
        DataType::Date32 => i64::from(column.as_primitive::<Date32Type>().value(0)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            column.as_primitive::<TimestampMillisecondType>().value(0)
        }
        _ => column.as_primitive::<TimestampMicrosecondType>().value(0),
    }
}

#[test]
fn rebase_batch_under_each_flag_combination() -> TestResult {
    let int96 = vec!["t96".to_string()];
    let (day, micros) = (-354_114_i64, at(-354_280, 12, 0, 0, 0));
    let (new_day, new_micros) = (-354_120_i64, at(-354_285, 12, 0, 0, 0));
    for (legacy_datetime, legacy_int96) in
        [(false, false), (true, false), (false, true), (true, true)]
    {
        let info = SparkWriteInfo {
            legacy_datetime,
            legacy_int96,
            ..SparkWriteInfo::default()
        };
        let before = sample_batch(true);
        let out = rebase_batch(before.clone(), &info, &int96)?;
        assert_eq!(out.schema(), before.schema());
        assert_eq!(out.num_rows(), 3);
        let expect = |rebased: bool, old: i64, new: i64| if rebased { new } else { old };
        assert_eq!(first_i64(&out, "d"), expect(legacy_datetime, day, new_day));
        assert_eq!(
            first_i64(&out, "ts"),
            expect(legacy_datetime, micros, new_micros)
        );
        assert_eq!(
            first_i64(&out, "ms"),
            expect(legacy_datetime, micros / 1000, new_micros / 1000)
        );
        assert_eq!(
            first_i64(&out, "t96"),
            expect(legacy_int96, micros, new_micros)
        );
        // TIMESTAMP_NTZ is never rebased by Spark.
        assert_eq!(first_i64(&out, "ntz"), micros);
        for i in 0..out.num_columns() {
            // Nulls and modern values are kept; untouched columns are the same buffers.
            assert!(out.column(i).is_null(1));
            assert!(out.column(i).is_valid(2));
            assert_eq!(out.column(i).data_type(), before.column(i).data_type());
            let changed = first_i64(&out, out.schema().field(i).name())
                != first_i64(&before, before.schema().field(i).name());
            assert_eq!(!changed, Arc::ptr_eq(out.column(i), before.column(i)));
        }
    }
    // Modern values in a legacy file: nothing is copied.
    let info = SparkWriteInfo {
        legacy_datetime: true,
        legacy_int96: true,
        ..SparkWriteInfo::default()
    };
    let modern = sample_batch(false);
    let out = rebase_batch(modern.clone(), &info, &int96)?;
    for i in 0..out.num_columns() {
        assert!(Arc::ptr_eq(out.column(i), modern.column(i)));
    }
    Ok(())
}

/// INT96 value of `micros` since the epoch (Julian day number + nanoseconds of the day).
fn int96(micros: i64) -> parquet::data_type::Int96 {
    let nanos = micros.rem_euclid(MICROS_PER_DAY) * 1000;
    let jdn = micros.div_euclid(MICROS_PER_DAY) + 2_440_588;
    let mut v = parquet::data_type::Int96::new();
    v.set_data(nanos as u32, (nanos >> 32) as u32, jdn as u32);
    v
}

#[test]
fn end_to_end_legacy_file_with_int96() -> TestResult {
    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type, Int96Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;

    let message = "message spark_schema {
        optional int64 id;
        optional int32 d (DATE);
        optional int64 ts (TIMESTAMP(MICROS,true));
        optional int96 t96;
        optional group s { optional int96 inner; optional binary name (STRING); }
    }";
    let old = at(-354_280, 12, 0, 0, 0); // Julian 1000-01-01T12:00:00
    let modern = 1_700_000_000_123_456;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv(&[
            (SPARK_VERSION_KEY, "2.4.8"),
            (SPARK_TIME_ZONE_KEY, UTC),
        ])))
        .build();
    let mut writer = SerializedFileWriter::new(
        Vec::new(),
        Arc::new(parse_message_type(message)?),
        Arc::new(props),
    )?;
    let mut row_group = writer.next_row_group()?;
    let mut index = 0;
    while let Some(mut column) = row_group.next_column()? {
        let (top, nested) = ([1, 1], [2, 2]);
        match index {
            0 => column
                .typed::<Int64Type>()
                .write_batch(&[0, 1], Some(&top), None)?,
            1 => column
                .typed::<Int32Type>()
                .write_batch(&[-354_114, 19_000], Some(&top), None)?,
            2 => column
                .typed::<Int64Type>()
                .write_batch(&[old, modern], Some(&top), None)?,
            3 => column.typed::<Int96Type>().write_batch(
                &[int96(old), int96(modern)],
                Some(&top),
                None,
            )?,
            4 => column.typed::<Int96Type>().write_batch(
                &[int96(old), int96(modern)],
                Some(&nested),
                None,
            )?,
            _ => column.typed::<ByteArrayType>().write_batch(
                &[ByteArray::from("a"), ByteArray::from("b")],
                Some(&nested),
                None,
            )?,
        };
        column.close()?;
        index += 1;
    }
    row_group.close()?;
    let bytes = bytes::Bytes::from(writer.into_inner()?);

    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
    let info =
        SparkWriteInfo::from_key_value(builder.metadata().file_metadata().key_value_metadata());
    assert!(info.legacy_datetime && info.legacy_int96);
    let int96_names = int96_columns(builder.parquet_schema());
    assert_eq!(int96_names, vec!["t96".to_string()]);
    let hint = int96_schema_hint(builder.parquet_schema(), builder.schema()).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
        bytes,
        ArrowReaderOptions::new().with_schema(hint),
    )?
    .build()?;
    let batches = reader
        .map(|b| rebase_batch(b?, &info, &int96_names))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = &batches[0];
    let greg = at(-354_285, 12, 0, 0, 0);
    let d = batch
        .column_by_name("d")
        .unwrap()
        .as_primitive::<Date32Type>();
    assert_eq!((d.value(0), d.value(1)), (-354_120, 19_000));
    for name in ["ts", "t96"] {
        let ts = batch
            .column_by_name(name)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!((ts.value(0), ts.value(1)), (greg, modern), "{name}");
    }
    // Nested INT96 is read in microseconds without overflow, but not rebased.
    let s = batch.column_by_name("s").unwrap().as_struct();
    let inner = s.column(0).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(inner.data_type(), &spark_timestamp());
    assert_eq!((inner.value(0), inner.value(1)), (old, modern));
    Ok(())
}

/// Reads one Spark fixture file as a caller would: footer → hint → read → rebase.
fn read_spark_file(path: &std::path::Path) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?;
    let info =
        SparkWriteInfo::from_key_value(builder.metadata().file_metadata().key_value_metadata());
    let int96_names = int96_columns(builder.parquet_schema());
    let builder = match int96_schema_hint(builder.parquet_schema(), builder.schema()) {
        None => builder,
        Some(hint) => ParquetRecordBatchReaderBuilder::try_new_with_options(
            std::fs::File::open(path)?,
            ArrowReaderOptions::new().with_schema(hint),
        )?,
    };
    let mut batches = Vec::new();
    for batch in builder.build()? {
        batches.push(rebase_batch(batch?, &info, &int96_names)?);
    }
    Ok(batches)
}

fn parquet_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Files written by real Spark (`scripts/spark/make_fixtures.py`: CORRECTED, LEGACY and INT96
/// variants) read back to what Spark itself read (`expected/<variant>.json`): the sample rows'
/// dates and timestamps (0001-01-01, 1000-06-15, 1582-10-04, ...) and the columns' minimums.
#[test]
fn spark_fixtures_read_as_spark_reads_them() -> TestResult {
    use std::collections::HashMap;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/spark");
    let Ok(listing) = std::fs::read_dir(root.join("expected")) else {
        eprintln!("no Spark fixtures under {}: skipped", root.display());
        return Ok(());
    };
    let mut checked = 0;
    for entry in listing {
        let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        let variant = expected["variant"].as_str().unwrap();
        let mut files = Vec::new();
        parquet_files(&root.join(variant), &mut files)?;
        let mut rows: HashMap<i64, (Option<i64>, Option<i64>)> = HashMap::new();
        for file in &files {
            for batch in read_spark_file(file)? {
                let id = batch
                    .column_by_name("id")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int64Type>();
                let d = batch
                    .column_by_name("account_open_date")
                    .unwrap()
                    .as_primitive::<Date32Type>();
                let ts = batch.column_by_name("event_ts").unwrap();
                assert_eq!(ts.data_type(), &spark_timestamp(), "{}", file.display());
                let ts = ts.as_primitive::<TimestampMicrosecondType>();
                for i in 0..batch.num_rows() {
                    let date = d.is_valid(i).then(|| i64::from(d.value(i)));
                    let micros = ts.is_valid(i).then(|| ts.value(i));
                    rows.insert(id.value(i), (date, micros));
                }
            }
        }
        assert_eq!(
            rows.len() as u64,
            expected["rows"].as_u64().unwrap(),
            "{variant}"
        );
        let date_of = |v: &serde_json::Value| {
            v.as_str().map(|s| {
                let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
                gregorian_days(date.year(), date.month(), date.day())
            })
        };
        let micros_of = |v: &serde_json::Value| {
            v.as_str().map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap()
                    .timestamp_micros()
            })
        };
        for row in expected["sample"].as_array().unwrap() {
            let id = row["id"].as_i64().unwrap();
            let want = (
                date_of(&row["account_open_date"]),
                micros_of(&row["event_ts"]),
            );
            assert_eq!(rows[&id], want, "{variant} id {id}: {row}");
            checked += 1;
        }
        let columns = &expected["columns"];
        let min_date = rows.values().filter_map(|r| r.0).min();
        let min_ts = rows.values().filter_map(|r| r.1).min();
        assert_eq!(
            min_date,
            date_of(&columns["account_open_date"]["min"]),
            "{variant}"
        );
        assert_eq!(min_ts, micros_of(&columns["event_ts"]["min"]), "{variant}");
    }
    assert!(checked > 0);
    Ok(())
}
