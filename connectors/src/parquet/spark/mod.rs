//! Reading Parquet files written by Apache Spark the way Spark 3+/4 reads them.
//!
//! Two things differ from a plain Parquet read:
//!
//! - **Calendar rebase.** Spark ≥ 3 uses the proleptic Gregorian calendar, Spark ≤ 2.4 the hybrid
//!   Julian + Gregorian one (Julian before 1582-10-15). A file written by Spark < 3.0, or with
//!   `datetimeRebaseModeInWrite=LEGACY` (key `org.apache.spark.legacyDateTime`), holds dates and
//!   INT64 timestamps in the hybrid calendar; INT96 timestamps likewise when written by
//!   Spark < 3.1 or with `int96RebaseModeInWrite=LEGACY` (key `org.apache.spark.legacyINT96`).
//!   Spark reads such values "Julian → Gregorian": it takes the (year, month, day, time) fields of
//!   the value in the hybrid calendar and builds the same fields in the proleptic Gregorian one
//!   (a Julian-only leap day such as 1000-02-29 becomes 1000-03-01). Values on or after
//!   1582-10-15 are the same in both calendars. See Spark's `DataSourceUtils.getRebaseSpec` and
//!   `RebaseDateTime.localRebaseJulianToGregorianDays`; here the conversion is exact integer
//!   arithmetic on day numbers, valid for every `i32` day and `i64` timestamp.
//! - **INT96.** Spark reads INT96 as a microsecond, UTC-adjusted timestamp. The Arrow reader's
//!   default, `Timestamp(Nanosecond, None)`, overflows outside 1677..2262, so
//!   [`int96_schema_hint`] gives the schema to request instead.
//!
//! ```text
//! footer ──▶ SparkWriteInfo::from_key_value ─┐
//!        ──▶ int96_columns, int96_schema_hint ┴─▶ reader(with_schema) ──▶ rebase_batch ──▶ batch
//! ```
//!
//! Timestamps are rebased in UTC. Spark rebases them in the zone recorded in
//! `org.apache.spark.timeZone` (or its session zone when none is recorded); for any other zone
//! results can differ from Spark's for values within that zone's UTC offset of a day on which the
//! Julian–Gregorian difference changes (1582-10-15, and March 1 of the Julian-only leap years
//! 1500, 1400, 1300, ...). [`SparkWriteInfo::non_utc_time_zone`] says when to warn.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray};
use arrow::datatypes::{
    DataType, Date32Type, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use parquet::basic::Type as PhysicalType;
use parquet::file::metadata::KeyValue;
use parquet::schema::types::SchemaDescriptor;

/// Footer key: the Spark version that wrote the file, e.g. `3.5.1`.
pub const SPARK_VERSION_KEY: &str = "org.apache.spark.version";
/// Footer key: dates and INT64 timestamps were written in the hybrid Julian calendar.
pub const SPARK_LEGACY_DATETIME_KEY: &str = "org.apache.spark.legacyDateTime";
/// Footer key: INT96 timestamps were written in the hybrid Julian calendar.
pub const SPARK_LEGACY_INT96_KEY: &str = "org.apache.spark.legacyINT96";
/// Footer key: the session time zone of the writer.
pub const SPARK_TIME_ZONE_KEY: &str = "org.apache.spark.timeZone";
/// Footer key: the Spark schema as JSON.
pub const SPARK_ROW_METADATA_KEY: &str = "org.apache.spark.sql.parquet.row.metadata";

/// 1582-10-15, the first Gregorian day of the hybrid calendar, as days since 1970-01-01. Its
/// number is the same in both calendars; every earlier day number needs rebasing.
const LAST_SWITCH_JULIAN_DAY: i32 = -141_427;
const MICROS_PER_DAY: i64 = 86_400_000_000;
const MILLIS_PER_DAY: i64 = 86_400_000;
const SECONDS_PER_DAY: i64 = 86_400;
const NANOS_PER_DAY: i64 = 86_400_000_000_000;

/// What a file's footer says about how Spark wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparkWriteInfo {
    /// `org.apache.spark.version`, when recorded (files not written by Spark have none).
    pub spark_version: Option<String>,
    /// Dates and INT64 timestamps are in the hybrid Julian calendar and need rebasing.
    pub legacy_datetime: bool,
    /// INT96 timestamps need rebasing.
    pub legacy_int96: bool,
    /// `org.apache.spark.timeZone`, when recorded.
    pub time_zone: Option<String>,
    /// The Spark schema JSON (`org.apache.spark.sql.parquet.row.metadata`), when recorded.
    pub row_metadata: Option<String>,
}

impl SparkWriteInfo {
    /// Reads the Spark keys of a footer's key-value metadata.
    ///
    /// As in Spark's `DataSourceUtils`: dates and INT64 timestamps need rebasing when the file
    /// was written by Spark < 3.0.0 or carries `org.apache.spark.legacyDateTime`; INT96 when
    /// written by Spark < 3.1.0 or carrying `org.apache.spark.legacyINT96`. (Spark only looks at
    /// the legacy keys when a version is recorded, and Spark always records one; a legacy key
    /// without a version is taken at its word here.)
    pub fn from_key_value(kv: Option<&Vec<KeyValue>>) -> Self {
        let lookup = |key: &str| kv.and_then(|kv| kv.iter().find(|e| e.key == key));
        let value = |key: &str| lookup(key).map(|e| e.value.clone().unwrap_or_default());
        let spark_version = value(SPARK_VERSION_KEY);
        let before = |min: (u64, u64, u64), min_text: &str| {
            spark_version
                .as_deref()
                .is_some_and(|v| version_before(v, min, min_text))
        };
        Self {
            legacy_datetime: lookup(SPARK_LEGACY_DATETIME_KEY).is_some()
                || before((3, 0, 0), "3.0.0"),
            legacy_int96: lookup(SPARK_LEGACY_INT96_KEY).is_some() || before((3, 1, 0), "3.1.0"),
            time_zone: value(SPARK_TIME_ZONE_KEY),
            row_metadata: value(SPARK_ROW_METADATA_KEY),
            spark_version,
        }
    }

    /// `true` when values before 1582-10-15 in the file need rebasing; when `false`,
    /// [`rebase_batch`] returns every batch as it is.
    pub fn needs_rebase(&self) -> bool {
        self.legacy_datetime || self.legacy_int96
    }

    /// The recorded time zone, when the file needs rebasing and the zone is not UTC: timestamps
    /// are rebased in UTC here while Spark rebases them in this zone (see the module docs), so
    /// the caller should warn, naming the zone.
    pub fn non_utc_time_zone(&self) -> Option<&str> {
        let zone = self.time_zone.as_deref()?;
        (self.needs_rebase() && !is_utc_zone(zone)).then_some(zone)
    }
}

/// Spark's `version < min` (a string comparison in Spark), numerically for `major.minor.patch`
/// versions so that a hypothetical "10.0.0" is not taken for a legacy writer.
fn version_before(version: &str, min: (u64, u64, u64), min_text: &str) -> bool {
    let core = version
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or_default();
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    match parts.next().flatten() {
        Some(major) => {
            let minor = parts.next().flatten().unwrap_or(0);
            let patch = parts.next().flatten().unwrap_or(0);
            (major, minor, patch) < min
        }
        None => version < min_text,
    }
}

fn is_utc_zone(zone: &str) -> bool {
    const UTC_NAMES: [&str; 16] = [
        "UTC",
        "Etc/UTC",
        "GMT",
        "Etc/GMT",
        "Z",
        "UCT",
        "Etc/UCT",
        "Universal",
        "Etc/Universal",
        "Zulu",
        "Etc/Zulu",
        "GMT0",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "Greenwich",
    ];
    let zone = zone.trim();
    UTC_NAMES.iter().any(|n| n.eq_ignore_ascii_case(zone))
        || [
            "+00:00",
            "-00:00",
            "UTC+00:00",
            "GMT+00:00",
            "UTC-00:00",
            "GMT-00:00",
        ]
        .contains(&zone)
}

/// Names of the top-level columns stored as INT96.
pub fn int96_columns(parquet_schema: &SchemaDescriptor) -> Vec<String> {
    parquet_schema
        .root_schema()
        .get_fields()
        .iter()
        .filter(|t| t.is_primitive() && t.get_physical_type() == PhysicalType::INT96)
        .map(|t| t.name().to_string())
        .collect()
}

/// The Arrow schema to ask the Parquet reader for (`ArrowReaderOptions::with_schema`):
/// `file_schema` (the schema the reader infers for the file) with every INT96 column, nested ones
/// in structs, lists and maps included, re-typed as `Timestamp(Microsecond, Some("UTC"))`, as
/// Spark reads them. `None` when the file has no INT96 column (or nothing would change).
pub fn int96_schema_hint(
    parquet_schema: &SchemaDescriptor,
    file_schema: &Schema,
) -> Option<SchemaRef> {
    let is_int96: Vec<bool> = parquet_schema
        .columns()
        .iter()
        .map(|c| c.physical_type() == PhysicalType::INT96)
        .collect();
    if !is_int96.contains(&true) {
        return None;
    }
    let arrow_leaves: usize = file_schema
        .fields()
        .iter()
        .map(|f| leaf_count(f.data_type()))
        .sum();
    let fields: Vec<FieldRef> = if arrow_leaves == is_int96.len() {
        // The reader maps every Parquet leaf to one Arrow leaf, in order.
        let mut leaves = is_int96.into_iter();
        file_schema
            .fields()
            .iter()
            .map(|f| hint_field(f, &mut leaves))
            .collect()
    } else {
        // Unexpected shape: fall back to matching top-level columns by name.
        let names = int96_columns(parquet_schema);
        file_schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(..) if names.iter().any(|n| n == f.name()) => {
                    Arc::new(f.as_ref().clone().with_data_type(spark_timestamp()))
                }
                _ => Arc::clone(f),
            })
            .collect()
    };
    let changed = fields
        .iter()
        .zip(file_schema.fields().iter())
        .any(|(a, b)| a.data_type() != b.data_type());
    changed.then(|| {
        Arc::new(Schema::new_with_metadata(
            fields,
            file_schema.metadata().clone(),
        ))
    })
}

/// Spark's `TimestampType` as Arrow: microseconds since the epoch, UTC-adjusted.
fn spark_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// How many Parquet leaf columns an Arrow type read from Parquet stands for.
fn leaf_count(data_type: &DataType) -> usize {
    match data_type {
        DataType::Struct(fields) => fields.iter().map(|f| leaf_count(f.data_type())).sum(),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => leaf_count(f.data_type()),
        _ => 1,
    }
}

/// `field` with its INT96 leaves re-typed; `leaves` yields "is INT96" per Parquet leaf, in order.
fn hint_field(field: &FieldRef, leaves: &mut impl Iterator<Item = bool>) -> FieldRef {
    let hinted = hint_type(field.data_type(), leaves);
    if &hinted == field.data_type() {
        Arc::clone(field)
    } else {
        Arc::new(Field::clone(field).with_data_type(hinted))
    }
}

fn hint_type(data_type: &DataType, leaves: &mut impl Iterator<Item = bool>) -> DataType {
    match data_type {
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| hint_field(f, leaves))
                .collect::<Fields>(),
        ),
        DataType::List(f) => DataType::List(hint_field(f, leaves)),
        DataType::LargeList(f) => DataType::LargeList(hint_field(f, leaves)),
        DataType::ListView(f) => DataType::ListView(hint_field(f, leaves)),
        DataType::LargeListView(f) => DataType::LargeListView(hint_field(f, leaves)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(hint_field(f, leaves), *n),
        DataType::Map(f, sorted) => DataType::Map(hint_field(f, leaves), *sorted),
        leaf => {
            let int96 = leaves.next().unwrap_or(false);
            if int96 && matches!(leaf, DataType::Timestamp(..)) {
                spark_timestamp()
            } else {
                leaf.clone()
            }
        }
    }
}

/// Rebases a decoded batch as Spark's reader would. When `info.legacy_datetime`: every `Date32`
/// column, and every `Timestamp(Microsecond | Millisecond, Some(_))` column not named in
/// `int96_columns`. When `info.legacy_int96`: the `Timestamp` columns named in `int96_columns`.
///
/// Columns without a time zone (`isAdjustedToUTC = false`, Spark's `TIMESTAMP_NTZ`) are never
/// rebased: Spark writes and reads them as they are. Columns are matched by name; nested values
/// are left as they are. A column whose values all lie on or after 1582-10-15 costs one pass
/// (its minimum) and no allocation; a batch with nothing to rebase is returned as it is.
pub fn rebase_batch(
    batch: RecordBatch,
    info: &SparkWriteInfo,
    int96_columns: &[String],
) -> arrow::error::Result<RecordBatch> {
    if !info.needs_rebase() {
        return Ok(batch);
    }
    let schema = batch.schema();
    let mut columns: Option<Vec<ArrayRef>> = None;
    for (i, field) in schema.fields().iter().enumerate() {
        let column = batch.column(i);
        let int96 = int96_columns.iter().any(|c| c == field.name());
        let rebased = match field.data_type() {
            DataType::Date32 if info.legacy_datetime && !int96 => rebase_date32_array(column),
            DataType::Timestamp(unit, _) if int96 && info.legacy_int96 => {
                rebase_timestamp_array(column, *unit)
            }
            DataType::Timestamp(
                unit @ (TimeUnit::Microsecond | TimeUnit::Millisecond),
                Some(_),
            ) if !int96 && info.legacy_datetime => rebase_timestamp_array(column, *unit),
            _ => None,
        };
        if let Some(rebased) = rebased {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = rebased;
        }
    }
    match columns {
        None => Ok(batch),
        Some(columns) => RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        ),
    }
}

fn rebase_date32_array(column: &ArrayRef) -> Option<ArrayRef> {
    let array = column.as_primitive_opt::<Date32Type>()?;
    if arrow::compute::min(array)? >= LAST_SWITCH_JULIAN_DAY {
        return None;
    }
    let rebased: PrimitiveArray<Date32Type> = array.unary(rebase_julian_to_gregorian_days);
    Some(Arc::new(rebased))
}

fn rebase_timestamp_array(column: &ArrayRef, unit: TimeUnit) -> Option<ArrayRef> {
    match unit {
        TimeUnit::Second => rebase_i64_array::<TimestampSecondType>(column, SECONDS_PER_DAY),
        TimeUnit::Millisecond => {
            rebase_i64_array::<TimestampMillisecondType>(column, MILLIS_PER_DAY)
        }
        TimeUnit::Microsecond => {
            rebase_i64_array::<TimestampMicrosecondType>(column, MICROS_PER_DAY)
        }
        TimeUnit::Nanosecond => rebase_i64_array::<TimestampNanosecondType>(column, NANOS_PER_DAY),
    }
}

/// Rebases an `i64` timestamp array whose unit has `ticks_per_day` ticks a day; `None` when no
/// value lies before the switch.
fn rebase_i64_array<T: ArrowPrimitiveType<Native = i64>>(
    column: &ArrayRef,
    ticks_per_day: i64,
) -> Option<ArrayRef> {
    // Nanoseconds cannot reach back to 1582: nothing to do.
    let switch = i64::from(LAST_SWITCH_JULIAN_DAY).checked_mul(ticks_per_day)?;
    let array = column.as_primitive_opt::<T>()?;
    if arrow::compute::min(array)? >= switch {
        return None;
    }
    let rebased: PrimitiveArray<T> = array
        .unary(|v| {
            if v < switch {
                rebase_ticks(v, ticks_per_day)
            } else {
                v
            }
        })
        .with_data_type(column.data_type().clone());
    Some(Arc::new(rebased))
}

/// Rebases days since 1970-01-01 from the hybrid Julian + Gregorian calendar to the proleptic
/// Gregorian one, as Spark does for dates in legacy files: the day's (year, month, day) in the
/// hybrid calendar, read as a proleptic Gregorian date (a Julian-only Feb 29 becomes Mar 1).
/// Days on or after 1582-10-15 (-141427) are returned unchanged.
pub fn rebase_julian_to_gregorian_days(days: i32) -> i32 {
    if days >= LAST_SWITCH_JULIAN_DAY {
        return days;
    }
    // The result stays within ~45 000 days of the input for every i32: no clamping happens.
    let rebased = rebase_days(i64::from(days));
    i32::try_from(rebased).unwrap_or(if rebased < 0 { i32::MIN } else { i32::MAX })
}

/// Rebases microseconds since 1970-01-01T00:00:00Z from the hybrid Julian + Gregorian calendar to
/// the proleptic Gregorian one, as Spark does for timestamps in legacy files, with the local
/// date-time taken in UTC. Values on or after 1582-10-15T00:00:00Z are returned unchanged.
pub fn rebase_julian_to_gregorian_micros(micros: i64) -> i64 {
    rebase_ticks(micros, MICROS_PER_DAY)
}

/// Rebases a timestamp of `ticks_per_day` ticks a day: the day (floor division, so times before
/// the epoch keep a non-negative time of day) is rebased, the time of day is kept.
fn rebase_ticks(value: i64, ticks_per_day: i64) -> i64 {
    let day = value.div_euclid(ticks_per_day);
    if day >= i64::from(LAST_SWITCH_JULIAN_DAY) {
        return value;
    }
    let time_of_day = value.rem_euclid(ticks_per_day);
    rebase_days(day)
        .saturating_mul(ticks_per_day)
        .saturating_add(time_of_day)
}

/// Julian-calendar day number → same (year, month, day) in the proleptic Gregorian calendar.
fn rebase_days(days: i64) -> i64 {
    let (year, month, day) = julian_civil_from_days(days);
    // Via the 1st of the month, so that a day missing from the Gregorian month (1000-02-29)
    // rolls over into the next one, as Spark's `LocalDate.of(y, m, 1).plusDays(d - 1)`.
    gregorian_days_from_civil(year, month, 1) + day - 1
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical years: 0 is 1 BC).
fn gregorian_days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Years start on March 1 so the leap day is the last day of a year; 400-year eras.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days from 0000-03-01 to 1970-01-01 (Gregorian).
    era * 146_097 + day_of_era - 719_468
}

/// The Julian-calendar (year, month, day) of days since 1970-01-01 (astronomical years).
fn julian_civil_from_days(days: i64) -> (i64, i64, i64) {
    // Julian 0000-03-01 is two days before Gregorian 0000-03-01; 4-year eras of 1461 days.
    let z = days + 719_470;
    let era = z.div_euclid(1461);
    let day_of_era = z - era * 1461; // 0..=1460
    let year_of_era = (day_of_era - day_of_era / 1460) / 365; // 0..=3
    let day_of_year = day_of_era - 365 * year_of_era; // 0..=365, from March 1
    let mp = (5 * day_of_year + 2) / 153; // 0 = March .. 11 = February
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 4 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
