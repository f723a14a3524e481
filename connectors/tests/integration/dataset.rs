//! Opening datasets: listing, footers, schemas, errors.

use std::fs;

use millrace_connectors::Error;
use millrace_connectors::parquet::ParquetDataset;

use crate::fixtures::{TempDir, TestResult, abc_schema, write_abc};

#[test]
fn single_file() -> TestResult {
    let dir = TempDir::new("single")?;
    let path = dir.join("one.parquet");
    let stats = write_abc(&path, 0, &[3, 5])?;
    assert_eq!((stats.rows, stats.row_groups), (8, 2));

    let ds = ParquetDataset::open(&path)?;
    assert_eq!(ds.num_rows(), 8);
    assert_eq!(ds.schema().fields(), abc_schema().fields());
    let files = ds.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, path);
    assert_eq!(files[0].size_bytes, fs::metadata(&path)?.len());
    assert_eq!(files[0].size_bytes, stats.bytes);
    let rows: Vec<u64> = files[0].row_groups.iter().map(|rg| rg.rows).collect();
    assert_eq!(rows, vec![3, 5]);
    assert!(files[0].row_groups.iter().all(|rg| rg.compressed_bytes > 0));
    Ok(())
}

#[test]
fn directory_is_recursive_sorted_and_skips_hidden_names() -> TestResult {
    let dir = TempDir::new("recursive")?;
    write_abc(&dir.join("b.parquet"), 10, &[2])?;
    write_abc(&dir.join("a/z.parquet"), 0, &[4])?;
    write_abc(&dir.join("a/deeper/x.parquet"), 100, &[1])?;
    // Ignored: hidden files, underscore files, and everything inside hidden/underscore dirs.
    fs::write(dir.join("_SUCCESS"), b"")?;
    fs::write(dir.join(".b.parquet.crc"), b"garbage")?;
    fs::write(dir.join("a/_metadata"), b"garbage")?;
    write_abc(&dir.join("_temporary/0/part.parquet"), 0, &[9])?;
    write_abc(&dir.join(".staging/part.parquet"), 0, &[9])?;

    let ds = ParquetDataset::open(dir.path())?;
    let names: Vec<_> = ds
        .files()
        .iter()
        .map(|f| f.path.strip_prefix(dir.path()).map(|p| p.to_path_buf()))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = names.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        vec!["a/deeper/x.parquet", "a/z.parquet", "b.parquet"]
    );
    assert_eq!(ds.num_rows(), 7);
    assert_eq!(ds.url(), dir.path().canonicalize()?.display().to_string());
    Ok(())
}

#[test]
fn truncated_file_fails_at_open_naming_its_path() -> TestResult {
    let dir = TempDir::new("truncated")?;
    write_abc(&dir.join("a.parquet"), 0, &[100])?;
    let bad = dir.join("b.parquet");
    write_abc(&bad, 0, &[100])?;
    let bytes = fs::read(&bad)?;
    fs::write(&bad, &bytes[..bytes.len() / 2])?;

    let err = ParquetDataset::open(dir.path())
        .err()
        .ok_or("truncated file accepted")?;
    assert!(
        matches!(err, Error::CorruptFile { ref path, .. } if path == &bad),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    // Not Parquet at all: same error, same path.
    fs::write(&bad, b"hello, world")?;
    let msg = ParquetDataset::open(dir.path())
        .err()
        .ok_or("text file accepted")?
        .to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    Ok(())
}

#[test]
fn schema_mismatch_names_the_file_and_field() -> TestResult {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use millrace_connectors::parquet::{ParquetFileWriter, WriterOptions};

    let dir = TempDir::new("mismatch")?;
    write_abc(&dir.join("a.parquet"), 0, &[3])?;
    let odd = dir.join("b.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int32Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(Float64Array::from(vec![1.0])),
        ],
    )?;
    let mut writer = ParquetFileWriter::new(&odd, schema, WriterOptions::default())?;
    writer.write(&batch)?;
    writer.finish()?;
    write_abc(&dir.join("c.parquet"), 0, &[3])?;

    let err = ParquetDataset::open(dir.path())
        .err()
        .ok_or("mismatch accepted")?;
    let msg = err.to_string();
    assert!(matches!(err, Error::SchemaMismatch { .. }), "{err:?}");
    assert!(msg.contains(&odd.display().to_string()), "{msg}");
    assert!(
        msg.contains(&dir.join("a.parquet").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("field `id` has type Int32, expected Int64"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn empty_directory_is_an_error_naming_it() -> TestResult {
    let dir = TempDir::new("empty")?;
    fs::write(dir.join("_SUCCESS"), b"")?;
    let err = ParquetDataset::open(dir.path())
        .err()
        .ok_or("empty dir accepted")?;
    assert!(matches!(err, Error::EmptyDataset { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    Ok(())
}

#[test]
fn check_columns_names_the_missing_one() -> TestResult {
    let dir = TempDir::new("columns")?;
    write_abc(&dir.join("a.parquet"), 0, &[3])?;
    let ds = ParquetDataset::open(dir.path())?;
    ds.check_columns(&["score".into(), "id".into()])?;
    let err = ds
        .check_columns(&["id".into(), "nmae".into()])
        .err()
        .ok_or("typo accepted")?;
    let msg = err.to_string();
    assert!(msg.contains("`nmae`"), "{msg}");
    assert!(msg.contains("id, name, score"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    Ok(())
}
