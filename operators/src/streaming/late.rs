//! Records behind the watermark (see [`super::watermark`]: per partition, the minimum over
//! partitions and workers): a record whose event time is below the job's watermark arrives too
//! late.

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, not};
use arrow::datatypes::{DataType, TimeUnit};

use millrace_engine::{DeadLetter, row_to_json};

use super::input::Prepared;
use super::watermark::PartitionWatermarks;
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

/// Splits `prepared` into the records at or after `watermark` (kept) and the late ones, given
/// their event `times` (row by row). Records without an event time are kept; without a
/// watermark yet, every record is.
pub(crate) fn split_late(
    prepared: &Prepared,
    times: &Int64Array,
    watermark: Option<i64>,
) -> Result<(Prepared, Option<Prepared>)> {
    let Some(watermark) = watermark else {
        return Ok((prepared.clone(), None));
    };
    let late: BooleanArray = times
        .iter()
        .map(|t| Some(t.is_some_and(|t| t < watermark)))
        .collect();
    if late.true_count() == 0 {
        return Ok((prepared.clone(), None));
    }
    let keep = not(&late)?;
    Ok((prepared.filter(&keep)?, Some(prepared.filter(&late)?)))
}

/// A worker's event-time bookkeeping: its partitions' watermarks and what to do with records
/// behind the job's watermark.
pub(crate) struct EventTime {
    /// The event-time column of the preprocessed records.
    pub(crate) column: String,
    pub(crate) watermarks: PartitionWatermarks,
    /// Late records go to the dead letters (else they are only counted).
    pub(crate) dead_letter: bool,
    /// `max_out_of_orderness` as written, for the dead letters' reason.
    pub(crate) bound: String,
    pub(crate) topic: String,
}

impl EventTime {
    /// Keeps each partition of `source` with records the broker holds but the source has not
    /// delivered (its lag) from going idle.
    pub(crate) fn keep_unread(
        &mut self,
        source: &millrace_connectors::kafka::KafkaSource,
        now_ms: i64,
    ) {
        for p in source.assignment() {
            if source.has_unread(p) {
                self.watermarks.unread(p, now_ms);
            }
        }
    }

    /// Advances each row's partition clock (late rows included: they are its records too), and
    /// splits off the rows behind `watermark` (the job's, as of the previous step), adding them
    /// to `dead` as the policy says. Returns the kept rows and how many were late.
    pub(crate) fn split(
        &mut self,
        prepared: Prepared,
        watermark: Option<i64>,
        now_ms: i64,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<(Prepared, u64)> {
        let times = event_times(&prepared.batch, &self.column)?;
        for (i, &p) in prepared.origins.partition.iter().enumerate() {
            let t = times.is_valid(i).then(|| times.value(i));
            self.watermarks.observe(p, t, now_ms);
        }
        let (kept, late) = split_late(&prepared, &times, watermark)?;
        let Some(late) = late else {
            return Ok((kept, 0));
        };
        let n = late.batch.num_rows();
        if self.dead_letter {
            let late_times = event_times(&late.batch, &self.column)?;
            for row in 0..n {
                dead.push(DeadLetter {
                    operator: "stream/late".into(),
                    reason: format!(
                        "event time {} ms is behind the watermark {} ms (max_out_of_orderness = {})",
                        late_times.value(row),
                        watermark.unwrap_or_default(),
                        self.bound
                    ),
                    origin: Some(late.origins.describe(&self.topic, row)),
                    record: row_to_json(&late.batch, row),
                    rows: 1,
                });
            }
        }
        Ok((kept, n as u64))
    }
}
