//! Writing the tabular dataset: one thread per core, one random stream and one file per file index.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::basic::Encoding;
use ::parquet::file::properties::WriterProperties;
use ::parquet::schema::types::ColumnPath;
use arrow::array::{ArrayRef, Float32Array, Int8Array, StringArray, TimestampMicrosecondArray};
use arrow::buffer::NullBuffer;
use arrow::record_batch::RecordBatch;

use super::rule::{CATEGORY_NAMES, FEATURES, Row, schema};

/// The schema of `spec`'s files: [`schema`], with `entity` (Utf8) after `cat` in the
/// `entities` variant.
pub fn schema_of(spec: &TabularSpec) -> arrow::datatypes::SchemaRef {
    let base = schema();
    if spec.entities == 0 {
        return base;
    }
    let mut fields: Vec<arrow::datatypes::FieldRef> = base.fields().iter().cloned().collect();
    let at = fields
        .iter()
        .position(|f| f.name() == "cat")
        .map_or(fields.len(), |i| i + 1);
    fields.insert(
        at,
        Arc::new(arrow::datatypes::Field::new(
            "entity",
            arrow::datatypes::DataType::Utf8,
            false,
        )),
    );
    Arc::new(arrow::datatypes::Schema::new(fields))
}
use super::spec::{TS_STEP_MICROS, TabularReport, TabularSpec};
use crate::parquet::{Compression, ParquetFileWriter, WriterOptions};
use crate::synthetic::Rng;
use crate::{Error, Result};

/// Mixed into the seed of holdout sets so they never share a random stream with a training set.
const HOLDOUT_SALT: u64 = 0x486F_6C64_6F75_7421; // "Holdout!"

/// Writes `part-00000.parquet`.. into `out` (created if missing), deterministically: the same spec
/// gives the same bytes, however many threads run.
///
/// Files are generated in parallel (`std::thread::scope`, one worker per core up to `files`); file
/// `i` draws from random stream `(seed, i)`, and its `ts` continue from the rows of files `0..i`.
/// Fails if `out` already holds `part-NNNNN.parquet` files beyond the ones this spec writes, so a
/// smaller dataset never silently mixes with a larger old one.
pub fn generate(spec: &TabularSpec, out: &Path) -> Result<TabularReport> {
    validate(spec)?;
    fs::create_dir_all(out).map_err(|e| Error::io(out, "create directory", e))?;
    check_no_stale_parts(spec, out)?;

    let rows_per_file = spec.rows_per_file();
    let first_rows: Vec<u64> = rows_per_file
        .iter()
        .scan(0u64, |acc, &n| {
            let first = *acc;
            *acc += n;
            Some(first)
        })
        .collect();
    let jobs: Vec<FileJob> = (0..spec.files)
        .map(|i| FileJob {
            path: out.join(TabularSpec::file_name(i)),
            stream: i as u64,
            first_row: first_rows[i],
            rows: rows_per_file[i],
        })
        .collect();

    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(spec.files)
        .max(1);
    let mut results: Vec<Option<Result<FileCounts>>> = (0..spec.files).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let jobs = &jobs;
                scope.spawn(move || {
                    jobs.iter()
                        .enumerate()
                        .skip(w)
                        .step_by(workers)
                        .map(|(i, job)| (i, write_file(spec, job)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(done) => done.into_iter().for_each(|(i, r)| results[i] = Some(r)),
                Err(_) => tracing::error!("a tabular generator thread panicked"),
            }
        }
    });

    let mut report = TabularReport {
        files: Vec::with_capacity(spec.files),
        rows: 0,
        positives: 0,
        nulls_f3: 0,
    };
    for (job, result) in jobs.iter().zip(results) {
        let counts = result.ok_or_else(|| {
            Error::Internal(format!(
                "the generator thread writing `{}` panicked",
                job.path.display()
            ))
        })??;
        report.files.push(job.path.clone());
        report.rows += job.rows;
        report.positives += counts.positives;
        report.nulls_f3 += counts.nulls_f3;
    }
    tracing::info!(rows = report.rows, files = report.files.len(), out = %out.display(), "generated tabular dataset");
    Ok(report)
}

fn validate(spec: &TabularSpec) -> Result<()> {
    if spec.files == 0 {
        return Err(Error::InvalidOption {
            option: "TabularSpec.files",
            reason: "must be at least 1".into(),
        });
    }
    if spec.row_group_rows == 0 {
        return Err(Error::InvalidOption {
            option: "TabularSpec.row_group_rows",
            reason: "must be at least 1 (65536 is a good default)".into(),
        });
    }
    let span = i64::try_from(spec.rows)
        .ok()
        .and_then(|r| r.checked_mul(TS_STEP_MICROS));
    if span.and_then(|s| s.checked_add(spec.t0_micros())).is_none() {
        return Err(Error::InvalidOption {
            option: "TabularSpec.rows",
            reason: format!(
                "{} rows at 100 ms apart overflow the timestamp range",
                spec.rows
            ),
        });
    }
    Ok(())
}

/// Errors if `out` holds `part-NNNNN.parquet` files with an index this spec does not write.
fn check_no_stale_parts(spec: &TabularSpec, out: &Path) -> Result<()> {
    let entries = fs::read_dir(out).map_err(|e| Error::io(out, "list directory", e))?;
    for entry in entries {
        let name = entry
            .map_err(|e| Error::io(out, "list directory", e))?
            .file_name();
        let name = name.to_string_lossy();
        let index = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".parquet"))
            .and_then(|n| n.parse::<usize>().ok());
        if index.is_some_and(|i| i >= spec.files) {
            return Err(Error::InvalidOption {
                option: "output directory",
                reason: format!(
                    "`{}` already holds `{name}`, which this spec ({} files) would not overwrite; \
                     remove the old files or choose an empty directory",
                    out.display(),
                    spec.files
                ),
            });
        }
    }
    Ok(())
}

struct FileJob {
    path: PathBuf,
    stream: u64,
    first_row: u64,
    rows: u64,
}

struct FileCounts {
    positives: u64,
    nulls_f3: u64,
}

fn writer_properties(spec: &TabularSpec) -> WriterProperties {
    let options = WriterOptions {
        row_group_rows: spec.row_group_rows,
        compression: Compression::Snappy,
    };
    // Random floats never repeat: dictionaries would only cost time and space. `cat` has 8 values,
    // `label` 2; `ts` is an arithmetic sequence, which delta encoding shrinks to almost nothing.
    options
        .to_properties()
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("cat"), true)
        .set_column_dictionary_enabled(ColumnPath::from("label"), true)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
        .build()
}

fn write_file(spec: &TabularSpec, job: &FileJob) -> Result<FileCounts> {
    let seed = if spec.holdout {
        spec.seed ^ HOLDOUT_SALT
    } else {
        spec.seed
    };
    let mut rng = Rng::for_stream(seed, job.stream);
    let mut writer =
        ParquetFileWriter::with_properties(&job.path, schema_of(spec), writer_properties(spec))?;
    let mut counts = FileCounts {
        positives: 0,
        nulls_f3: 0,
    };
    let mut done = 0u64;
    while done < job.rows {
        let n = (job.rows - done).min(spec.row_group_rows as u64);
        let first_ts = spec.t0_micros() + (job.first_row + done) as i64 * TS_STEP_MICROS;
        let batch = make_batch(&mut rng, spec, n as usize, first_ts, &mut counts).map_err(|e| {
            Error::Internal(format!(
                "building a batch for `{}`: {e}",
                job.path.display()
            ))
        })?;
        writer.write(&batch)?;
        done += n;
    }
    writer.finish()?;
    Ok(counts)
}

/// Draws `n` rows into one batch whose first `ts` is `first_ts`.
fn make_batch(
    rng: &mut Rng,
    spec: &TabularSpec,
    n: usize,
    first_ts: i64,
    counts: &mut FileCounts,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut features: Vec<Vec<f32>> = (0..FEATURES).map(|_| Vec::with_capacity(n)).collect();
    let mut f3_valid = Vec::with_capacity(n);
    let mut cats = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut entities = Vec::with_capacity(if spec.entities > 0 { n } else { 0 });
    for _ in 0..n {
        let row = Row::draw_with_entities(rng, spec.entities);
        if let Some(id) = row.entity {
            entities.push(format!("e{id}"));
        }
        for (j, column) in features.iter_mut().enumerate() {
            // A null slot's value is never read; 0 keeps the file deterministic and compressible.
            column.push(if j == 3 && row.f3_null {
                0.0
            } else {
                row.feature(j)
            });
        }
        counts.nulls_f3 += u64::from(row.f3_null);
        f3_valid.push(!row.f3_null);
        cats.push(CATEGORY_NAMES[row.k]);
        labels.push(i8::from(row.label));
        counts.positives += u64::from(row.label);
    }
    let ts: Vec<i64> = (0..n as i64)
        .map(|i| first_ts + i * TS_STEP_MICROS)
        .collect();

    let mut columns: Vec<ArrayRef> = Vec::with_capacity(FEATURES + 3);
    for (j, values) in features.into_iter().enumerate() {
        let nulls = (j == 3).then(|| NullBuffer::from(std::mem::take(&mut f3_valid)));
        columns.push(Arc::new(Float32Array::try_new(values.into(), nulls)?));
    }
    columns.push(Arc::new(StringArray::from_iter_values(cats)));
    if spec.entities > 0 {
        columns.push(Arc::new(StringArray::from_iter_values(entities)));
    }
    columns.push(Arc::new(TimestampMicrosecondArray::from(ts)));
    columns.push(Arc::new(Int8Array::from(labels)));
    RecordBatch::try_new(schema_of(spec), columns)
}
