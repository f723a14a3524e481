//! The job's Parquet outputs (`[output]`): predictions over the evaluation rows and the evaluation
//! metrics, written as datasets Spark can read: every worker writes its own part files, then
//! process 0 writes `_SUCCESS` once all of them have finished.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, StringArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use millrace_connectors::parquet::{
    DatasetWriter, DatasetWriterOptions, WriterOptions, delete_prefix, write_success,
};
use millrace_connectors::storage::{StorageLocation, StorageOptions};
use millrace_engine::{Batch, stable_hash};
use millrace_ml::Replica;
use millrace_ml::preprocess::FittedPreprocessor;

use crate::spec::{OutputSpec, PipelineSpec};
use crate::{Error, Result};

/// Checks the output locations before any work starts: with `mode = "error"` a location that
/// already holds objects is refused; with `overwrite` it is emptied (by process 0 only).
pub fn prepare_outputs(spec: &PipelineSpec, process_id: usize) -> Result<()> {
    let output = &spec.output;
    let sinks = spec.sink.iter().map(|s| ("sink.parquet", &s.parquet));
    for (key, url) in [
        ("output.predictions", &output.predictions),
        ("output.evaluation", &output.evaluation),
    ]
    .into_iter()
    .chain(sinks)
    {
        let Some(url) = url else { continue };
        let location = StorageLocation::parse(url, &spec.storage)
            .map_err(|e| Error::config(key, e.to_string()))?;
        prepare_location(
            &location,
            output.mode,
            process_id,
            &format!("({key})"),
            ("output.mode", "set output.mode = \"overwrite\""),
        )?;
    }
    Ok(())
}

/// Makes `location` ready to write under `mode`: with `error` a location that already holds
/// objects is refused (an error of setting `mode.0`, naming the location with `what` and saying
/// how to overwrite with `mode.1`); with `overwrite` it is emptied (by process 0 only).
pub(crate) fn prepare_location(
    location: &StorageLocation,
    output_mode: crate::spec::OutputMode,
    process_id: usize,
    what: &str,
    mode: (&str, &str),
) -> Result<()> {
    if output_mode == crate::spec::OutputMode::Overwrite {
        if process_id == 0 {
            let deleted = delete_prefix(location.store.as_ref(), &location.root, &location.url)?;
            if deleted > 0 {
                tracing::info!(url = %location.url, deleted, "overwrite: removed the previous output");
            }
        }
    } else if has_objects(location)? {
        return Err(Error::config(
            mode.0,
            format!(
                "`{}` {what} already holds data; remove it, choose another location, or {}",
                location.url, mode.1
            ),
        ));
    }
    Ok(())
}

fn has_objects(location: &StorageLocation) -> Result<bool> {
    use futures::StreamExt;
    if let Some(path) = &location.local_root {
        return Ok(std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()));
    }
    millrace_connectors::runtime::block_on(async {
        let mut listing = location.store.list(Some(&location.root));
        match listing.next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(millrace_connectors::Error::store(
                location.url.clone(),
                "list",
                e,
            )),
        }
    })
    .map_err(Error::from)
}

/// A job id shared by every worker of every process without talking: a hash of the pipeline.
pub(super) fn job_id(spec: &PipelineSpec) -> String {
    let text = serde_json::to_string(spec).unwrap_or_default();
    format!("{:016x}", stable_hash(text.as_bytes()))
}

fn open_writer(
    spec: &PipelineSpec,
    url: &str,
    schema: SchemaRef,
    partition_by: Vec<String>,
    task: usize,
) -> Result<DatasetWriter> {
    let location = StorageLocation::parse(url, &spec.storage)?;
    let options = DatasetWriterOptions {
        partition_by,
        file: WriterOptions {
            compression: spec.output.compression,
            ..WriterOptions::default()
        },
        max_rows_per_file: 0,
        task,
        job_id: job_id(spec),
        max_open_files: 64,
    };
    Ok(DatasetWriter::new(
        Arc::clone(&location.store),
        location.root.clone(),
        location.url.clone(),
        schema,
        options,
    )?)
}

/// Predicts this worker's evaluation rows and writes them, with the requested input columns and
/// the label, as part files of `output.predictions`. Returns the rows written.
pub fn write_predictions(
    spec: &PipelineSpec,
    task: usize,
    fitted: &FittedPreprocessor,
    trainer: &Replica,
    eval: &[Batch],
) -> Result<u64> {
    let Some(url) = &spec.output.predictions else {
        return Ok(0);
    };
    let output = &spec.output;
    let label = &spec.preprocess.label;
    let mut writer: Option<DatasetWriter> = None;
    let mut rows = 0u64;
    for batch in eval {
        let features = fitted.transform(&batch.data, true)?;
        if features.rows == 0 {
            continue;
        }
        let predictions = trainer.predict(&features.x, features.rows)?;
        let indices = UInt32Array::from(features.accepted.clone());
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for name in output.columns.iter().chain(std::iter::once(label)) {
            if fields.iter().any(|f: &Field| f.name() == name) {
                continue;
            }
            let index = batch.data.schema().index_of(name).map_err(|_| {
                Error::config(
                    "output.columns",
                    format!("column '{name}' is not produced by the preprocess SQL"),
                )
            })?;
            let field = batch.data.schema().field(index).clone();
            columns.push(take(batch.data.column(index), &indices, None)?);
            fields.push(field);
        }
        prediction_columns(
            fitted,
            &predictions,
            features.rows,
            &mut fields,
            &mut columns,
        )?;
        let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let writer = match &mut writer {
            Some(w) => w,
            None => writer.insert(open_writer(
                spec,
                url,
                out.schema(),
                output.partition_by.clone(),
                task,
            )?),
        };
        writer.write(&out)?;
        rows += out.num_rows() as u64;
    }
    if let Some(writer) = writer {
        writer.finish()?;
    }
    Ok(rows)
}

/// `prediction` (the class, or the value) and, for classification, `probability` of that class.
fn prediction_columns(
    fitted: &FittedPreprocessor,
    predictions: &[f32],
    rows: usize,
    fields: &mut Vec<Field>,
    columns: &mut Vec<ArrayRef>,
) -> Result<()> {
    match fitted.num_classes() {
        None => {
            fields.push(Field::new("prediction", DataType::Float32, false));
            columns.push(Arc::new(Float32Array::from(predictions.to_vec())));
        }
        Some(k) => {
            let mut best = Vec::with_capacity(rows);
            let mut probability = Vec::with_capacity(rows);
            for row in predictions.chunks(k.max(1)) {
                let (class, p) = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0usize, f32::MIN),
                        |acc, (i, &p)| if p > acc.1 { (i, p) } else { acc },
                    );
                best.push(class);
                probability.push(p);
            }
            match fitted.class_names() {
                Some(names) => {
                    fields.push(Field::new("prediction", DataType::Utf8, true));
                    columns.push(Arc::new(StringArray::from_iter(
                        best.iter().map(|&c| names.get(c).map(String::as_str)),
                    )));
                }
                None => {
                    fields.push(Field::new("prediction", DataType::Int64, false));
                    columns.push(Arc::new(Int64Array::from_iter_values(
                        best.iter().map(|&c| c as i64),
                    )));
                }
            }
            fields.push(Field::new("probability", DataType::Float32, false));
            columns.push(Arc::new(Float32Array::from(probability)));
        }
    }
    Ok(())
}

/// Writes the evaluation lines (one row each: epoch, step and every metric) as one part file of
/// `output.evaluation`.
pub fn write_evaluation(spec: &PipelineSpec, lines: &[serde_json::Value]) -> Result<()> {
    let Some(url) = &spec.output.evaluation else {
        return Ok(());
    };
    let Some(first) = lines.first().and_then(|l| l.as_object()) else {
        return Ok(());
    };
    let keys: Vec<&String> = first
        .iter()
        .filter(|(k, v)| v.is_number() && k.as_str() != "epoch" && k.as_str() != "step")
        .map(|(k, _)| k)
        .collect();
    let mut fields = vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("step", DataType::Int64, false),
    ];
    let int = |key: &str| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            lines.iter().map(|l| l[key].as_i64().unwrap_or(0)),
        ))
    };
    let mut columns = vec![int("epoch"), int("step")];
    for key in keys {
        fields.push(Field::new(key.as_str(), DataType::Float64, true));
        columns.push(Arc::new(arrow::array::Float64Array::from_iter(
            lines.iter().map(|l| l[key.as_str()].as_f64()),
        )));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    let mut writer = open_writer(spec, url, batch.schema(), Vec::new(), 0)?;
    writer.write(&batch)?;
    writer.finish()?;
    Ok(())
}

/// Publishes the outputs: `_SUCCESS` in each, once every task's part files are complete.
pub fn finish_outputs(output: &OutputSpec, storage: &StorageOptions) -> Result<()> {
    for url in [&output.predictions, &output.evaluation]
        .into_iter()
        .flatten()
    {
        let location = StorageLocation::parse(url, storage)?;
        write_success(location.store.as_ref(), &location.root, &location.url)?;
        tracing::info!(url = %location.url, "output published (_SUCCESS written)");
    }
    Ok(())
}
