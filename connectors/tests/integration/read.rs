//! Reading scan units: projection, batch size, origins, errors.

use arrow::array::{Array, Float64Array, StringArray};
use millrace_connectors::Error;
use millrace_connectors::parquet::{ParquetDataset, ScanOptions, ScanUnit};

use crate::fixtures::{TempDir, TestResult, ids, write_abc};

#[test]
fn projection_decodes_only_requested_columns_in_dataset_order() -> TestResult {
    let dir = TempDir::new("projection")?;
    let path = dir.join("a.parquet");
    write_abc(&path, 0, &[10])?;
    let ds = ParquetDataset::open(&path)?;
    let unit = &ds.plan(1)[0][0];
    let options = ScanOptions {
        projection: Some(vec!["score".into(), "id".into()]),
        batch_size: 0,
    };
    let batches: Vec<_> = ds.read_unit(unit, &options)?.collect::<Result<_, _>>()?;
    assert_eq!(batches.len(), 1);
    let batch = &batches[0].1;
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, vec!["id", "score"]);
    assert_eq!(ids(batch)?, (0..10).collect::<Vec<i64>>());
    let scores = batch
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or("score not f64")?;
    assert_eq!(scores.value(9), 4.5);

    let only_name = ScanOptions {
        projection: Some(vec!["name".into()]),
        batch_size: 0,
    };
    let (_, batch) = ds.read_unit(unit, &only_name)?.next().ok_or("no batch")??;
    assert_eq!(batch.num_columns(), 1);
    let names = batch
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or("name not utf8")?;
    assert!(names.is_null(0) && names.is_null(7));
    assert_eq!(names.value(3), "n3");
    Ok(())
}

#[test]
fn batches_carry_their_origin() -> TestResult {
    let dir = TempDir::new("origin")?;
    let path = dir.join("a.parquet");
    write_abc(&path, 0, &[5, 7, 3])?;
    let ds = ParquetDataset::open(&path)?;
    let unit = ScanUnit {
        file: path.clone(),
        file_index: 0,
        row_groups: vec![1, 2],
        rows: 10,
    };
    let options = ScanOptions {
        projection: Some(vec!["id".into()]),
        batch_size: 4,
    };
    let mut seen = Vec::new();
    for item in ds.read_unit(&unit, &options)? {
        let (origin, batch) = item?;
        assert_eq!(origin.file, path);
        let ids = ids(&batch)?;
        // ids equal the row offset within the file, so the origin can be checked against the data.
        assert_eq!(ids[0], origin.first_row as i64);
        seen.push((origin.row_group, origin.first_row, batch.num_rows()));
    }
    // Batches never straddle row groups: 7 rows = 4 + 3, then 3 rows.
    assert_eq!(seen, vec![(1, 5, 4), (1, 9, 3), (2, 12, 3)]);
    Ok(())
}

#[test]
fn bad_units_and_projections_are_named() -> TestResult {
    let dir = TempDir::new("bad-unit")?;
    let path = dir.join("a.parquet");
    write_abc(&path, 0, &[5])?;
    let ds = ParquetDataset::open(&path)?;
    let unit = ScanUnit {
        file: path.clone(),
        file_index: 0,
        row_groups: vec![0, 3],
        rows: 5,
    };
    let err = ds
        .read_unit(&unit, &ScanOptions::default())
        .err()
        .ok_or("row group 3 accepted")?;
    assert!(
        matches!(
            err,
            Error::RowGroupOutOfRange {
                row_group: 3,
                num_row_groups: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&path.display().to_string()));

    let unit = ScanUnit {
        file: path.clone(),
        file_index: 0,
        row_groups: vec![0],
        rows: 5,
    };
    let options = ScanOptions {
        projection: Some(vec!["nope".into()]),
        batch_size: 0,
    };
    let msg = ds
        .read_unit(&unit, &options)
        .err()
        .ok_or("bad column accepted")?
        .to_string();
    assert!(
        msg.contains("`nope`") && msg.contains(&path.display().to_string()),
        "{msg}"
    );

    // The file disappears after the dataset was opened: reading names it.
    std::fs::remove_file(&path)?;
    let err = ds
        .read_unit(&unit, &ScanOptions::default())?
        .find_map(|item| item.err())
        .ok_or("missing file accepted")?;
    assert!(err.to_string().contains("a.parquet"), "{err}");
    Ok(())
}

#[test]
fn damaged_row_group_is_reported_with_file_and_row_group_and_reading_goes_on() -> TestResult {
    let dir = TempDir::new("damaged")?;
    let path = dir.join("a.parquet");
    write_abc(&path, 0, &[1000, 1000])?;
    let ds = ParquetDataset::open(&path)?;
    // Overwrite the middle of row group 0's data with garbage; the footer stays intact.
    let mut bytes = std::fs::read(&path)?;
    let rg0 = ds.files()[0].row_groups[0].compressed_bytes as usize;
    for b in &mut bytes[4..4 + rg0 / 2] {
        *b = 0xAB;
    }
    std::fs::write(&path, &bytes)?;
    let unit = &ds.plan(1)[0][0];
    let results: Vec<_> = ds.read_unit(unit, &ScanOptions::default())?.collect();
    let first = results.first().ok_or("nothing read")?;
    let err = first.as_ref().err().ok_or("garbage decoded")?;
    assert!(matches!(err, Error::Decode { row_group: 0, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("row group 0") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    // Row group 1 is intact and still read.
    let (origin, batch) = results
        .last()
        .ok_or("nothing read")?
        .as_ref()
        .map_err(|e| e.to_string())?;
    assert_eq!((origin.row_group, origin.first_row), (1, 1000));
    assert_eq!(ids(batch)?[0], 1000);
    Ok(())
}
