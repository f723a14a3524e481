//! Writing files: atomic rename, row groups, compression, schema checks.

use std::fs::{self, File};

use ::parquet::basic::Compression as Codec;
use ::parquet::file::reader::{FileReader, SerializedFileReader};
use millrace_connectors::Error;
use millrace_connectors::parquet::{
    Compression, ParquetDataset, ParquetFileWriter, ScanOptions, WriterOptions,
};

use crate::fixtures::{TempDir, TestResult, abc_batch, abc_schema, ids};

#[test]
fn writes_atomically_with_row_groups_of_the_requested_size() -> TestResult {
    let dir = TempDir::new("atomic")?;
    let path = dir.join("out.parquet");
    let tmp = dir.join(".out.parquet.tmp");
    let options = WriterOptions {
        row_group_rows: 4,
        compression: Compression::Snappy,
    };
    let mut writer = ParquetFileWriter::new(&path, abc_schema(), options)?;
    writer.write(&abc_batch(0, 6)?)?;
    writer.write(&abc_batch(6, 4)?)?;
    assert!(
        tmp.exists() && !path.exists(),
        "data goes to the temporary file first"
    );
    assert_eq!(writer.rows(), 10);
    let stats = writer.finish()?;
    assert!(path.exists() && !tmp.exists());
    assert_eq!(
        (stats.path.as_path(), stats.rows, stats.row_groups),
        (path.as_path(), 10, 3)
    );
    assert_eq!(stats.bytes, fs::metadata(&path)?.len());

    let ds = ParquetDataset::open(&path)?;
    let rows: Vec<u64> = ds.files()[0].row_groups.iter().map(|rg| rg.rows).collect();
    assert_eq!(rows, vec![4, 4, 2]);
    let mut read = Vec::new();
    for unit in ds.plan(1).iter().flatten() {
        for item in ds.read_unit(unit, &ScanOptions::default())? {
            read.extend(ids(&item?.1)?);
        }
    }
    assert_eq!(read, (0..10).collect::<Vec<i64>>());
    let reader = SerializedFileReader::new(File::open(&path)?)?;
    assert_eq!(
        reader.metadata().row_group(0).column(0).compression(),
        Codec::SNAPPY
    );
    Ok(())
}

#[test]
fn dropped_writer_leaves_the_old_file_and_no_temporary() -> TestResult {
    let dir = TempDir::new("dropped")?;
    let path = dir.join("out.parquet");
    fs::write(&path, b"previous contents")?;
    {
        let mut writer = ParquetFileWriter::new(&path, abc_schema(), WriterOptions::default())?;
        writer.write(&abc_batch(0, 3)?)?;
    }
    assert_eq!(fs::read(&path)?, b"previous contents");
    assert!(!dir.join(".out.parquet.tmp").exists());
    Ok(())
}

#[test]
fn other_codecs_round_trip() -> TestResult {
    let dir = TempDir::new("codecs")?;
    for (compression, codec) in [
        (Compression::None, Codec::UNCOMPRESSED),
        (Compression::Zstd, Codec::ZSTD(Default::default())),
        (Compression::Lz4, Codec::LZ4_RAW),
    ] {
        let path = dir.join(&format!("{compression:?}.parquet"));
        let mut writer = ParquetFileWriter::new(
            &path,
            abc_schema(),
            WriterOptions {
                row_group_rows: 0,
                compression,
            },
        )?;
        writer.write(&abc_batch(0, 100)?)?;
        assert_eq!(writer.finish()?.row_groups, 1);
        let reader = SerializedFileReader::new(File::open(&path)?)?;
        let got = reader.metadata().row_group(0).column(0).compression();
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&codec),
            "{compression:?}"
        );
        let ds = ParquetDataset::open(&path)?;
        let unit = &ds.plan(1)[0][0];
        let (_, batch) = ds
            .read_unit(unit, &ScanOptions::default())?
            .next()
            .ok_or("empty")??;
        assert_eq!(ids(&batch)?, (0..100).collect::<Vec<i64>>());
    }
    Ok(())
}

#[test]
fn batch_with_another_schema_is_rejected_naming_file_and_field() -> TestResult {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    let dir = TempDir::new("batch-schema")?;
    let path = dir.join("out.parquet");
    let mut writer = ParquetFileWriter::new(&path, abc_schema(), WriterOptions::default())?;
    let other = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(other, vec![Arc::new(Int64Array::from(vec![1]))])?;
    let err = writer.write(&batch).err().ok_or("wrong batch accepted")?;
    assert!(matches!(err, Error::BatchSchema { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("field `name`"),
        "{msg}"
    );
    // The writer is still usable.
    writer.write(&abc_batch(0, 2)?)?;
    assert_eq!(writer.finish()?.rows, 2);
    Ok(())
}
