//! Records behind the watermark: the watermark trails the newest event time seen over all
//! workers by `max_out_of_orderness`; a record whose event time is below it arrives too late.

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, filter, filter_record_batch, not};
use arrow::datatypes::{DataType, TimeUnit};

use super::input::Prepared;
use crate::{Error, Result};

/// Event times of `column` in epoch milliseconds (a timestamp of any unit, or int64 ms).
pub(crate) fn event_times(batch: &RecordBatch, column: &str) -> Result<Int64Array> {
    let array = batch.column_by_name(column).ok_or_else(|| {
        Error::config(
            "stream.event_time",
            format!("column '{column}' is missing from the preprocessed records"),
        )
    })?;
    let ms = match array.data_type() {
        DataType::Int64 => cast(array, &DataType::Int64)?,
        DataType::Timestamp(_, tz) => cast(
            &cast(
                array,
                &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
            )?,
            &DataType::Int64,
        )?,
        other => {
            return Err(Error::config(
                "stream.event_time",
                format!("column '{column}' has type {other}; use a timestamp or int64 epoch ms"),
            ));
        }
    };
    ms.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| Error::Internal("event-time cast did not give int64".into()))
}

/// Splits `prepared` into the records at or after `watermark` (kept, with their produce times)
/// and the late ones; also returns the newest event time among them. Records without an event
/// time are kept.
pub(crate) fn split_late(
    prepared: &Prepared,
    column: &str,
    watermark: Option<i64>,
) -> Result<(Prepared, RecordBatch, Option<i64>)> {
    let times = event_times(&prepared.batch, column)?;
    let newest = times.iter().flatten().max();
    let Some(watermark) = watermark else {
        let empty = prepared.batch.slice(0, 0);
        return Ok((prepared.clone(), empty, newest));
    };
    let late: BooleanArray = times
        .iter()
        .map(|t| Some(t.is_some_and(|t| t < watermark)))
        .collect();
    if late.true_count() == 0 {
        let empty = prepared.batch.slice(0, 0);
        return Ok((prepared.clone(), empty, newest));
    }
    let keep = not(&late)?;
    let kept = filter_record_batch(&prepared.batch, &keep)?;
    let late_rows = filter_record_batch(&prepared.batch, &late)?;
    let produced = Int64Array::from(prepared.produced_ms.clone());
    let produced = filter(&produced, &keep)?;
    let produced_ms = produced
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.values().to_vec())
        .unwrap_or_default();
    Ok((
        Prepared {
            batch: kept,
            produced_ms,
        },
        late_rows,
        newest,
    ))
}
