//! Arrow IPC stream bodies: a request batch in, predictions out, for clients that already hold
//! Arrow data (`Content-Type: application/vnd.apache.arrow.stream`).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, RecordBatchOptions,
    StringArray,
};
use arrow::buffer::Buffer;
use arrow::compute::{CastOptions, can_cast_types, cast_with_options, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;

use super::RequestError;
use super::argmax;
use super::v2::{class_name, prediction_width};

/// Media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Decodes an Arrow IPC stream body (one or more batches, concatenated) of at most `max_rows`
/// rows and conforms it to `schema`: columns are matched by name, other types are cast where
/// Arrow can (`arrow::compute::cast`, failing on values that do not fit), a missing column or
/// nulls in a required one are errors naming it; extra columns are ignored. A bad body is a 400,
/// too many rows a 413 (checked before any column is cast: a few bytes of a Null-typed column
/// can claim billions of rows, which a cast would allocate).
pub fn decode_stream(
    body: &[u8],
    schema: &SchemaRef,
    max_rows: usize,
) -> Result<RecordBatch, RequestError> {
    if body.is_empty() {
        return Err(RequestError::bad(
            "empty body: expected an Arrow IPC stream",
        ));
    }
    // arrow's IPC reader panics on some malformed metadata (a bad bit width, a list without its
    // child: `arrow_ipc::convert` asserts rather than fails), so the reading is fenced: a panic
    // there is a bad body (400), not a dropped connection.
    let (given, batch) = std::panic::catch_unwind(|| read_stream(body))
        .unwrap_or_else(|panic| {
            Err(format!(
                "bad Arrow IPC stream: {}",
                panic_text(panic.as_ref())
            ))
        })
        .map_err(RequestError::bad)?;
    let rows = batch.num_rows();
    if rows > max_rows {
        return Err(RequestError::with_status(
            413,
            format!("{rows} rows in one request; the limit is {max_rows} (split the request)"),
        ));
    }
    conform(&given, &batch, schema).map_err(RequestError::bad)
}

/// The stream's rows as a batch of `schema`.
fn conform(
    given: &SchemaRef,
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, String> {
    let rows = batch.num_rows();
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name();
        let dt = field.data_type();
        let column = batch.column_by_name(name).ok_or_else(|| {
            let names: Vec<String> = given
                .fields()
                .iter()
                .map(|f| format!("'{}'", f.name()))
                .collect();
            format!(
                "missing column '{name}' ({dt}); the stream has: {}",
                if names.is_empty() {
                    "no columns".to_owned()
                } else {
                    names.join(", ")
                }
            )
        })?;
        let column = if column.data_type() == dt {
            Arc::clone(column)
        } else if can_cast_types(column.data_type(), dt) {
            cast_with_options(column, dt, &strict).map_err(|e| {
                format!(
                    "column '{name}': cannot cast {} to {dt}: {e}",
                    column.data_type()
                )
            })?
        } else {
            return Err(format!(
                "column '{name}' is {}, which cannot be cast to the model's {dt}",
                column.data_type()
            ));
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(format!(
                "column '{name}' has {} nulls, but the model requires it ({dt})",
                column.null_count()
            ));
        }
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| e.to_string())
}

/// The schema and the rows (concatenated) of an Arrow IPC stream. Messages are read out of the
/// body itself with the push decoder: a length that claims more bytes than the body holds is an
/// error, where `StreamReader` would first allocate (and zero) a buffer of the claimed length,
/// up to 2 GiB of metadata or any size of body for a request of a few bytes.
fn read_stream(body: &[u8]) -> Result<(SchemaRef, RecordBatch), String> {
    check_buffers(body).map_err(|e| format!("bad Arrow IPC stream: {e}"))?;
    let mut decoder = StreamDecoder::new();
    let mut buffer = Buffer::from(body);
    let mut batches = Vec::new();
    let fail = |decoder: &StreamDecoder, e: arrow::error::ArrowError| match decoder.schema() {
        None => format!("body is not an Arrow IPC stream: {e}"),
        Some(_) => format!("bad Arrow IPC stream: {e}"),
    };
    loop {
        match decoder.decode(&mut buffer) {
            Ok(Some(batch)) => batches.push(batch),
            // The whole body was read.
            Ok(None) => break,
            Err(e) => return Err(fail(&decoder, e)),
        }
    }
    if let Err(e) = decoder.finish() {
        return Err(fail(&decoder, e));
    }
    let given = decoder
        .schema()
        .ok_or("body is not an Arrow IPC stream: it holds no schema message")?;
    let batch =
        concat_batches(&given, &batches).map_err(|e| format!("bad Arrow IPC stream: {e}"))?;
    Ok((given, batch))
}

/// Checks that every buffer a (dictionary) batch message names lies inside that message's body:
/// arrow slices them unchecked and panics otherwise, the most common panic on a mutated body.
/// Framing problems are left to the decoder, which names them.
fn check_buffers(body: &[u8]) -> Result<(), String> {
    let word = |at: usize| {
        body.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut at = 0;
    while let Some(mut len) = word(at) {
        at += 4;
        if len == 0xffff_ffff {
            let Some(next) = word(at) else { break };
            (len, at) = (next, at + 4);
        }
        let Some(meta) = body.get(at..at.saturating_add(len)).filter(|_| len > 0) else {
            break;
        };
        let Ok(message) = arrow::ipc::root_as_message(meta) else {
            break;
        };
        at += len;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| format!("a message claims a body of {} bytes", message.bodyLength()))?;
        let buffers = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()))
            .and_then(|batch| batch.buffers());
        for buffer in buffers.iter().flat_map(|b| b.iter()) {
            let inside = usize::try_from(buffer.offset())
                .ok()
                .zip(usize::try_from(buffer.length()).ok())
                .and_then(|(offset, length)| offset.checked_add(length))
                .is_some_and(|end| end <= body_len);
            if !inside {
                return Err(format!(
                    "a buffer at offset {} of {} bytes lies outside its message body of {body_len} bytes",
                    buffer.offset(),
                    buffer.length()
                ));
            }
        }
        at = at.saturating_add(body_len);
    }
    Ok(())
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    format!(
        "malformed metadata ({})",
        millrace_engine::panic_message(panic)
    )
}

/// Encodes predictions as one Arrow IPC stream batch: classification gives columns `class`
/// (Int64, or Utf8 with class names) and `probabilities` (FixedSizeList<Float32>(num_classes));
/// regression gives `value` (Float32).
pub fn encode_predictions(
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
    class_names: Option<&[String]>,
) -> Result<Vec<u8>, String> {
    let width = prediction_width(predictions, rows, num_classes)?;
    let values = Float32Array::from(predictions.to_vec());
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = match num_classes {
        Some(_) => {
            let classes = predictions.chunks(width).map(argmax);
            let class: ArrayRef = match class_names {
                Some(names) => Arc::new(
                    classes
                        .map(|c| class_name(names, c).map(Some))
                        .collect::<Result<StringArray, _>>()?,
                ),
                None => Arc::new(
                    classes
                        .map(|c| i64::try_from(c).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()
                        .map(Int64Array::from)?,
                ),
            };
            let item = Arc::new(Field::new_list_field(DataType::Float32, false));
            let size = i32::try_from(width).map_err(|_| format!("{width} classes is too many"))?;
            let probabilities =
                FixedSizeListArray::try_new(Arc::clone(&item), size, Arc::new(values), None)
                    .map_err(|e| e.to_string())?;
            (
                vec![
                    Field::new("class", class.data_type().clone(), false),
                    Field::new("probabilities", DataType::FixedSizeList(item, size), false),
                ],
                vec![class, Arc::new(probabilities)],
            )
        }
        None => (
            vec![Field::new("value", DataType::Float32, false)],
            vec![Arc::new(values)],
        ),
    };
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        Arc::clone(&schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| e.to_string())?;
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array};
    use arrow::datatypes::{Float32Type, Int64Type};
    use arrow::ipc::reader::StreamReader;
    use std::io::Cursor;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("f0", DataType::Float32, false),
            Field::new("cat", DataType::Utf8, true),
        ]))
    }

    fn stream(batches: &[RecordBatch]) -> Vec<u8> {
        let mut w = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.into_inner().unwrap()
    }

    fn read(body: &[u8]) -> RecordBatch {
        let reader = StreamReader::try_new(Cursor::new(body), None).unwrap();
        let schema = reader.schema();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].schema(), schema);
        batches.into_iter().next().unwrap()
    }

    #[test]
    fn decodes_casts_and_concatenates() {
        let given = Arc::new(Schema::new(vec![
            Field::new("extra", DataType::Int32, true),
            Field::new("cat", DataType::Utf8, true),
            Field::new("f0", DataType::Int32, true),
        ]));
        let batch = |f0: Vec<i32>, cat: Vec<Option<&str>>| {
            RecordBatch::try_new(
                Arc::clone(&given),
                vec![
                    Arc::new(Int32Array::from(vec![0; f0.len()])),
                    Arc::new(StringArray::from(cat)),
                    Arc::new(Int32Array::from(f0)),
                ],
            )
            .unwrap()
        };
        let body = stream(&[
            batch(vec![1, -2], vec![Some("a"), None]),
            batch(vec![7], vec![Some("c")]),
        ]);
        let out = decode_stream(&body, &schema(), 10).unwrap();
        assert_eq!(out.schema(), schema());
        assert_eq!(out.num_rows(), 3);
        assert_eq!(
            out.column(0)
                .as_primitive::<Float32Type>()
                .values()
                .as_ref(),
            &[1.0, -2.0, 7.0]
        );
        assert_eq!(
            out.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("a"), None, Some("c")]
        );
    }

    #[test]
    fn names_bad_columns() {
        let only_cat = Arc::new(Schema::new(vec![Field::new("cat", DataType::Utf8, true)]));
        let b =
            RecordBatch::try_new(only_cat, vec![Arc::new(StringArray::from(vec!["a"]))]).unwrap();
        assert_eq!(
            decode_stream(&stream(&[b]), &schema(), 10)
                .unwrap_err()
                .message,
            "missing column 'f0' (Float32); the stream has: 'cat'"
        );
        let nulls = Arc::new(Schema::new(vec![
            Field::new("f0", DataType::Float32, true),
            Field::new("cat", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            nulls,
            vec![
                Arc::new(Float32Array::from(vec![Some(1.0), None])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        assert_eq!(
            decode_stream(&stream(&[b]), &schema(), 10)
                .unwrap_err()
                .message,
            "column 'f0' has 1 nulls, but the model requires it (Float32)"
        );
        let text = Arc::new(Schema::new(vec![Field::new("f0", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(text, vec![Arc::new(StringArray::from(vec!["1.5", "x"]))])
            .unwrap();
        let err = decode_stream(
            &stream(&[b]),
            &Arc::new(Schema::new(vec![Field::new(
                "f0",
                DataType::Float32,
                false,
            )])),
            10,
        )
        .unwrap_err()
        .message;
        assert!(
            err.starts_with("column 'f0': cannot cast Utf8 to Float32: "),
            "{err}"
        );
        assert_eq!(
            decode_stream(b"", &schema(), 10).unwrap_err().message,
            "empty body: expected an Arrow IPC stream"
        );
        assert!(
            decode_stream(b"{\"instances\": []}", &schema(), 10)
                .unwrap_err()
                .message
                .starts_with("body is not an Arrow IPC stream: ")
        );
    }

    #[test]
    fn refuses_too_many_rows_before_casting_them() {
        // A Null-typed column has no buffers: a stream of a few hundred bytes claims 2^40 rows,
        // which a cast to the model's Float32 would allocate (4 TiB) before the row limit.
        let huge = 1usize << 40;
        let nulls = Arc::new(Schema::new(vec![Field::new("f0", DataType::Null, true)]));
        let b = RecordBatch::try_new(nulls, vec![Arc::new(arrow::array::NullArray::new(huge))])
            .unwrap();
        let body = stream(&[b]);
        assert!(body.len() < 1_000, "{} bytes", body.len());
        let err = decode_stream(&body, &schema(), 10).unwrap_err();
        assert_eq!(
            (err.status, err.message),
            (
                413,
                format!("{huge} rows in one request; the limit is 10 (split the request)")
            )
        );
    }

    #[test]
    fn lengths_past_the_body_are_errors_not_allocations() {
        // A continuation marker, then a metadata length of 2 GiB - 16 in an 8-byte body:
        // StreamReader zero-filled a 2 GiB buffer before finding the body too short.
        let body = [0xff, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0x7f];
        let err = decode_stream(&body, &schema(), 10).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(
            err.message.starts_with("body is not an Arrow IPC stream: "),
            "{}",
            err.message
        );
        // Data after the end-of-stream marker is refused too.
        let b = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Float32Array::from(vec![1.0])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        let mut w = StreamWriter::try_new(Vec::new(), &schema()).unwrap();
        w.write(&b).unwrap();
        w.finish().unwrap();
        let mut body = w.into_inner().unwrap();
        assert_eq!(decode_stream(&body, &schema(), 10).unwrap().num_rows(), 1);
        body.extend_from_slice(b"junk");
        let err = decode_stream(&body, &schema(), 10).unwrap_err();
        assert!(
            err.message.starts_with("bad Arrow IPC stream: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn buffers_outside_the_body_are_errors_not_panics() {
        // Found by the Arrow IPC fuzz test: a buffer offset past the body made arrow's reader
        // panic (slicing unchecked); the fence turned it into a 400, the check names it.
        let b = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Float32Array::from(vec![1.0, 2.0])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let body = stream(&[b]);
        // The first buffer of the batch message whose offset is 0 and length 8 (the f0 values):
        // move it far past the body.
        let values: Vec<u8> = [0i64.to_le_bytes(), 8i64.to_le_bytes()].concat();
        let at = body
            .windows(16)
            .position(|w| w == values.as_slice())
            .expect("the f0 buffer entry");
        let mut bad = body.clone();
        bad[at..at + 8].copy_from_slice(&1_000_000i64.to_le_bytes());
        let err = decode_stream(&bad, &schema(), 10).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(
            err.message.starts_with("bad Arrow IPC stream: a buffer at offset 1000000 of 8 bytes lies outside its message body"),
            "{}",
            err.message
        );
    }

    #[test]
    fn encodes_predictions() {
        let probs = [0.2, 0.8, 0.6, 0.4];
        let out = read(&encode_predictions(&probs, 2, Some(2), None).unwrap());
        assert_eq!(
            out.schema().field(0),
            &Field::new("class", DataType::Int64, false)
        );
        assert_eq!(
            out.column(0).as_primitive::<Int64Type>().values().as_ref(),
            &[1, 0]
        );
        let p = out.column(1).as_fixed_size_list();
        assert_eq!(p.value_length(), 2);
        assert_eq!(
            p.value(0).as_primitive::<Float32Type>().values().as_ref(),
            &[0.2, 0.8]
        );
        assert_eq!(
            p.value(1).as_primitive::<Float32Type>().values().as_ref(),
            &[0.6, 0.4]
        );
        let names = ["no".to_owned(), "yes".to_owned()];
        let out = read(&encode_predictions(&probs, 2, Some(2), Some(&names)).unwrap());
        assert_eq!(
            out.column(0).as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("yes"), Some("no")]
        );
        let out = read(&encode_predictions(&[1.5, -3.0, 0.0], 3, None, None).unwrap());
        assert_eq!(out.schema().field(0).name(), "value");
        assert_eq!(
            out.column(0)
                .as_primitive::<Float32Type>()
                .values()
                .as_ref(),
            &[1.5, -3.0, 0.0]
        );
        // Our own output decodes against its own schema.
        let body = encode_predictions(&[1.5], 1, None, None).unwrap();
        let value = Arc::new(Schema::new(vec![Field::new(
            "value",
            DataType::Float64,
            false,
        )]));
        let back = decode_stream(&body, &value, 10).unwrap();
        assert_eq!(
            back.column(0)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            1.5
        );
        assert_eq!(
            encode_predictions(&probs, 3, Some(2), None).unwrap_err(),
            "the model returned 4 values for 3 rows of 2"
        );
    }
}
