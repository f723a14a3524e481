//! Request bodies: real rows of the benchmark data, as v1 JSON instances, KServe v2 tensors, or
//! an Arrow IPC stream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::kernels::boolean::{and, is_not_null};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use millrace::connectors::parquet::{ParquetDataset, ScanOptions};
use serde_json::{Map, Value, json};

/// `rows` rows of the benchmark data without nulls (the model's SQL may filter nulls out), with
/// the model's input columns and types.
pub fn sample_rows(schema: &SchemaRef, rows: usize, scratch: &Path) -> anyhow::Result<RecordBatch> {
    let mut source = PathBuf::from("data/bench/holdout");
    if !source.exists() {
        source = scratch.join("sample");
        millrace::data::generate_tabular(&source, 2_000, 1, 1, true)?;
    }
    let dataset = ParquetDataset::open_path(&source)
        .with_context(|| format!("cannot open the sample rows at {}", source.display()))?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if let Some(missing) = names
        .iter()
        .find(|n| dataset.schema().field_with_name(n).is_err())
    {
        bail!(
            "the model wants column '{missing}', which the sample data at {} lacks: \
             the benchmark needs a model trained on the TABULAR dataset",
            source.display()
        );
    }
    let options = ScanOptions {
        projection: Some(names),
        batch_size: 4096,
    };
    let mut kept = Vec::new();
    let mut count = 0;
    'read: for unit in dataset.plan(1).into_iter().flatten() {
        for item in dataset.read_unit(&unit, &options)? {
            let batch = item?.1;
            let mut mask = BooleanArray::from(vec![true; batch.num_rows()]);
            for column in batch.columns() {
                mask = and(&mask, &is_not_null(column)?)?;
            }
            let batch = filter_record_batch(&batch, &mask)?;
            count += batch.num_rows();
            kept.push(batch);
            if count >= rows {
                break 'read;
            }
        }
    }
    if count < rows {
        bail!(
            "{} has only {count} rows without nulls; {rows} needed",
            source.display()
        );
    }
    let all = concat_batches(&kept[0].schema(), &kept)?.slice(0, rows);
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = all
                .column_by_name(f.name())
                .with_context(|| format!("sample rows lack column '{}'", f.name()))?;
            Ok(cast(column, f.data_type())?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// A column as JSON values: numbers, booleans, or strings (text, times and dates).
fn json_column(array: &ArrayRef) -> anyhow::Result<Vec<Value>> {
    let values: Vec<Option<Value>> = match array.data_type() {
        // The shortest decimal that reads back as the same f32, as a client would send it.
        DataType::Float32 => array
            .as_primitive::<Float32Type>()
            .iter()
            .map(|v| {
                v.and_then(|x| x.to_string().parse::<f64>().ok())
                    .map(Value::from)
            })
            .collect(),
        dt if dt.is_floating() => cast(array, &DataType::Float64)?
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map(Value::from))
            .collect(),
        dt if dt.is_integer() => cast(array, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(Value::from))
            .collect(),
        DataType::Dictionary(_, values) => return json_column(&cast(array, values)?),
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map(Value::from))
            .collect(),
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64 => cast(array, &DataType::Utf8)?
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(Value::from))
            .collect(),
        other => bail!("the benchmark cannot send a column of type {other}"),
    };
    Ok(values
        .into_iter()
        .map(|v| v.unwrap_or(Value::Null))
        .collect())
}

/// The KServe v2 datatype of an Arrow type, as the server itself maps it; text, times and dates
/// travel as BYTES (strings).
fn v2_datatype(dt: &DataType) -> &'static str {
    millrace::operators::serve::v2::datatype_of(dt).unwrap_or("BYTES")
}

/// `{"inputs": [{"name", "shape": [rows], "datatype", "data"}, …]}`: one tensor per raw column.
pub fn v2_body(rows: &RecordBatch) -> anyhow::Result<Value> {
    let mut inputs = Vec::with_capacity(rows.num_columns());
    for (field, column) in rows.schema().fields().iter().zip(rows.columns()) {
        inputs.push(json!({
            "name": field.name(),
            "shape": [rows.num_rows()],
            "datatype": v2_datatype(field.data_type()),
            "data": json_column(column)?,
        }));
    }
    Ok(json!({ "inputs": inputs }))
}

/// `{"instances": [{field: value, …}, …]}`.
pub fn v1_body(rows: &RecordBatch) -> anyhow::Result<Value> {
    let columns = rows
        .columns()
        .iter()
        .map(json_column)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let schema = rows.schema();
    let instances: Vec<Value> = (0..rows.num_rows())
        .map(|r| {
            let row: Map<String, Value> = schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| (f.name().clone(), c[r].clone()))
                .collect();
            Value::Object(row)
        })
        .collect();
    Ok(json!({ "instances": instances }))
}

/// `rows` as an Arrow IPC stream (schema message, one record batch, end marker).
pub fn arrow_stream(rows: &RecordBatch) -> anyhow::Result<Vec<u8>> {
    let mut writer = StreamWriter::try_new(Vec::new(), &rows.schema())?;
    writer.write(rows)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    fn two_rows() -> RecordBatch {
        use arrow::array::{Float32Array, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::TimeUnit;
        let schema = Schema::new(vec![
            Field::new("f0", DataType::Float32, false),
            Field::new("cat", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Float32Array::from(vec![0.1, -2.5])),
                Arc::new(StringArray::from(vec!["c3", "c0"])),
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1_500_000])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn builds_request_bodies() {
        let rows = two_rows();
        let v2 = v2_body(&rows).unwrap();
        assert_eq!(
            v2["inputs"][0],
            json!({"name": "f0", "shape": [2], "datatype": "FP32", "data": [0.1, -2.5]})
        );
        assert_eq!(v2["inputs"][1]["datatype"], "BYTES");
        assert_eq!(v2["inputs"][1]["data"], json!(["c3", "c0"]));
        assert_eq!(
            v2["inputs"][2]["data"],
            json!(["1970-01-01T00:00:00", "1970-01-01T00:00:01.500"])
        );
        let v1 = v1_body(&rows.slice(0, 1)).unwrap();
        assert_eq!(
            v1,
            json!({"instances": [{"f0": 0.1, "cat": "c3", "ts": "1970-01-01T00:00:00"}]})
        );
        let cats: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
            vec!["c3", "c0", "c3"].into_iter().collect();
        let cats: ArrayRef = Arc::new(cats);
        assert_eq!(v2_datatype(cats.data_type()), "BYTES");
        assert_eq!(
            json_column(&cats).unwrap(),
            vec![json!("c3"), json!("c0"), json!("c3")]
        );
        let ipc = arrow_stream(&rows).unwrap();
        let mut reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
        assert_eq!(reader.next().unwrap().unwrap(), rows);
        assert!(reader.next().is_none());
    }
}
