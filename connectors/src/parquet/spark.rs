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
mod tests {
    use super::*;
    use arrow::array::{Date32Array, TimestampMicrosecondArray, TimestampMillisecondArray};
    use chrono::{Datelike, NaiveDate};
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::schema::parser::parse_message_type;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const UTC: &str = "UTC";

    /// Julian-calendar date → days since 1970-01-01, by the Fliegel–Van Flandern Julian day
    /// number formula (an independent check of `julian_civil_from_days`; valid for year ≥ -4712).
    fn julian_days(year: i64, month: i64, day: i64) -> i64 {
        let a = (14 - month) / 12;
        let y = year + 4800 - a;
        let m = month + 12 * a - 3;
        let jdn = day + (153 * m + 2) / 5 + 365 * y + y / 4 - 32083;
        jdn - 2_440_588
    }

    /// Proleptic Gregorian date → days since 1970-01-01, by chrono.
    fn gregorian_days(year: i32, month: u32, day: u32) -> i64 {
        let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
        i64::from(date.num_days_from_ce()) - 719_163
    }

    fn at(days: i64, h: i64, m: i64, s: i64, micros: i64) -> i64 {
        days * MICROS_PER_DAY + ((h * 60 + m) * 60 + s) * 1_000_000 + micros
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn day_rebase_known_values() {
        // Hand-computed: 0001-01-01 is -719164 (Julian) and -719162 (Gregorian).
        assert_eq!(rebase_julian_to_gregorian_days(-719_164), -719_162);
        // 1000-06-15: Julian JDN 2086474 (-354114), Gregorian JDN 2086468 (-354120).
        assert_eq!(julian_days(1000, 6, 15), -354_114);
        assert_eq!(gregorian_days(1000, 6, 15), -354_120);
        assert_eq!(rebase_julian_to_gregorian_days(-354_114), -354_120);
        // 1582-10-04, the last Julian day, is day -141438 in the proleptic Gregorian calendar.
        assert_eq!(julian_days(1582, 10, 4), -141_428);
        assert_eq!(rebase_julian_to_gregorian_days(-141_428), -141_438);
        // Spark's doc example: 1582-01-01 is -141704 (Julian) and -141714 (Gregorian).
        assert_eq!(rebase_julian_to_gregorian_days(-141_704), -141_714);
        // Julian-only leap day 1000-02-29 and the day after both become Gregorian 1000-03-01.
        assert_eq!(julian_days(1000, 2, 29), -354_221);
        assert_eq!(rebase_julian_to_gregorian_days(-354_221), -354_226);
        assert_eq!(rebase_julian_to_gregorian_days(-354_220), -354_226);
        assert_eq!(gregorian_days(1000, 3, 1), -354_226);
        // Before the common era the difference keeps growing: 201 BC (-200) differs by 4 days.
        assert_eq!(julian_days(-200, 1, 1), -792_580);
        assert_eq!(rebase_julian_to_gregorian_days(-792_580), -792_576);
        assert_eq!(gregorian_days(-200, 1, 1), -792_576);
        // 1582-10-15 and later are the same in both calendars.
        for days in [-141_427, -141_000, -1, 0, 19_000, i32::MAX] {
            assert_eq!(rebase_julian_to_gregorian_days(days), days);
        }
        // The extremes neither panic nor clamp.
        let min = rebase_julian_to_gregorian_days(i32::MIN);
        assert!(min > i32::MIN && min < i32::MIN + 50_000, "{min}");
    }

    #[test]
    fn day_rebase_keeps_the_date_fields_everywhere() {
        // Every day from 4713 BC to the switch: same (y, m, d), Gregorian via chrono.
        let start = julian_days(-4712, 1, 1);
        for days in start..i64::from(LAST_SWITCH_JULIAN_DAY) {
            let (y, m, d) = julian_civil_from_days(days);
            assert_eq!(julian_days(y, m, d), days, "{y}-{m}-{d}");
            let rebased = i64::from(rebase_julian_to_gregorian_days(days as i32));
            let first = gregorian_days(y as i32, m as u32, 1);
            assert_eq!(rebased, first + d - 1, "{y}-{m}-{d}");
            if (y, m, d) >= (1, 1, 1) {
                // Spark's precomputed table for the common era (RebaseDateTime.scala).
                const SWITCHES: [i64; 14] = [
                    -719_164, -682_945, -646_420, -609_895, -536_845, -500_320, -463_795, -390_745,
                    -354_220, -317_695, -244_645, -208_120, -171_595, -141_427,
                ];
                const DIFFS: [i64; 14] = [2, 1, 0, -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, 0];
                let i = SWITCHES.iter().rposition(|s| days >= *s).unwrap();
                assert_eq!(rebased, days + DIFFS[i], "{y}-{m}-{d}");
            }
        }
        assert_eq!(julian_civil_from_days(-141_428), (1582, 10, 4));
        assert_eq!(julian_civil_from_days(-719_165), (0, 12, 31));
    }

    #[test]
    fn gregorian_day_numbers_match_chrono() {
        for year in (-3000..3000).step_by(7) {
            for (month, day) in [(1, 1), (2, 28), (3, 1), (12, 31)] {
                assert_eq!(
                    gregorian_days_from_civil(i64::from(year), month, day),
                    gregorian_days(year, month as u32, day as u32)
                );
            }
        }
    }

    #[test]
    fn micros_rebase() {
        // 1000-01-01T12:00:00: Julian day -354280, Gregorian day -354285.
        let julian = at(julian_days(1000, 1, 1), 12, 0, 0, 0);
        assert_eq!(julian_days(1000, 1, 1), -354_280);
        assert_eq!(
            rebase_julian_to_gregorian_micros(julian),
            at(gregorian_days(1000, 1, 1), 12, 0, 0, 0)
        );
        // One microsecond before the switch is 1582-10-04T23:59:59.999999 (floor division: a
        // truncating one would see day -141427 and leave it alone).
        let switch = i64::from(LAST_SWITCH_JULIAN_DAY) * MICROS_PER_DAY;
        assert_eq!(
            rebase_julian_to_gregorian_micros(switch - 1),
            at(-141_438, 23, 59, 59, 999_999)
        );
        assert_eq!(rebase_julian_to_gregorian_micros(switch), switch);
        // Sub-second parts of negative values survive: 0001-01-01T00:00:00.000001.
        assert_eq!(
            rebase_julian_to_gregorian_micros(at(-719_164, 0, 0, 0, 1)),
            at(-719_162, 0, 0, 0, 1)
        );
        // Julian-only leap day: 1000-02-29T01:02:03.123456 → 1000-03-01T01:02:03.123456.
        assert_eq!(
            rebase_julian_to_gregorian_micros(at(-354_221, 1, 2, 3, 123_456)),
            at(-354_226, 1, 2, 3, 123_456)
        );
        // Modern values, including just before the epoch, are untouched.
        for micros in [-1, 0, 1_700_000_000_000_000, i64::MAX] {
            assert_eq!(rebase_julian_to_gregorian_micros(micros), micros);
        }
        // The extremes do not panic and move forward (the difference is positive that far back).
        assert!(rebase_julian_to_gregorian_micros(i64::MIN) > i64::MIN);
    }

    #[test]
    fn key_value_parsing() {
        let none = SparkWriteInfo::from_key_value(None);
        assert_eq!(none, SparkWriteInfo::default());
        assert!(!none.needs_rebase());

        let spark24 = kv(&[
            (SPARK_VERSION_KEY, "2.4.8"),
            (SPARK_ROW_METADATA_KEY, r#"{"type":"struct","fields":[]}"#),
        ]);
        let info = SparkWriteInfo::from_key_value(Some(&spark24));
        assert_eq!(info.spark_version.as_deref(), Some("2.4.8"));
        assert!(info.legacy_datetime && info.legacy_int96 && info.needs_rebase());
        assert_eq!(info.time_zone, None);
        assert_eq!(
            info.row_metadata.as_deref(),
            Some(r#"{"type":"struct","fields":[]}"#)
        );
        assert_eq!(info.non_utc_time_zone(), None);

        // Spark 3.0 wrote dates proleptic but INT96 still in the hybrid calendar.
        let spark30 = kv(&[(SPARK_VERSION_KEY, "3.0.3")]);
        let info = SparkWriteInfo::from_key_value(Some(&spark30));
        assert!(!info.legacy_datetime && info.legacy_int96);

        let modern = kv(&[
            (SPARK_VERSION_KEY, "3.5.1"),
            (SPARK_TIME_ZONE_KEY, "Etc/UTC"),
        ]);
        let info = SparkWriteInfo::from_key_value(Some(&modern));
        assert!(!info.needs_rebase());
        assert_eq!(info.time_zone.as_deref(), Some("Etc/UTC"));

        let legacy = kv(&[
            (SPARK_VERSION_KEY, "4.0.0"),
            (SPARK_LEGACY_DATETIME_KEY, ""),
            (SPARK_TIME_ZONE_KEY, "America/Los_Angeles"),
        ]);
        let info = SparkWriteInfo::from_key_value(Some(&legacy));
        assert!(info.legacy_datetime && !info.legacy_int96);
        assert_eq!(info.non_utc_time_zone(), Some("America/Los_Angeles"));
        let legacy96 = kv(&[
            (SPARK_VERSION_KEY, "3.3.2"),
            (SPARK_LEGACY_INT96_KEY, ""),
            (SPARK_TIME_ZONE_KEY, "UTC"),
        ]);
        let info = SparkWriteInfo::from_key_value(Some(&legacy96));
        assert!(!info.legacy_datetime && info.legacy_int96);
        assert_eq!(info.non_utc_time_zone(), None);

        // Version strings: pre-releases, two components, numeric (not string) comparison.
        assert!(version_before("2.4", (3, 0, 0), "3.0.0"));
        assert!(!version_before("3.0.0-preview2", (3, 0, 0), "3.0.0"));
        assert!(version_before("3.0.0-preview2", (3, 1, 0), "3.1.0"));
        assert!(!version_before("10.0.0", (3, 0, 0), "3.0.0"));
        assert!(version_before("", (3, 0, 0), "3.0.0"));
        assert!(is_utc_zone("utc") && is_utc_zone("GMT") && is_utc_zone("Z"));
        assert!(!is_utc_zone("Europe/Paris") && !is_utc_zone("+01:00"));
    }

    const MESSAGE: &str = "message spark_schema {
        optional int64 id;
        optional int32 d (DATE);
        optional int64 ts (TIMESTAMP(MICROS,true));
        optional int96 t96;
        optional group s {
            optional int96 inner;
            optional binary name (STRING);
        }
        optional group l (LIST) {
            repeated group list {
                optional int96 element;
            }
        }
    }";

    #[test]
    fn int96_hint_from_message_type() -> TestResult {
        let descriptor = SchemaDescriptor::new(Arc::new(parse_message_type(MESSAGE)?));
        assert_eq!(int96_columns(&descriptor), vec!["t96".to_string()]);
        let file_schema = parquet::arrow::parquet_to_arrow_schema(&descriptor, None)?;
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
        assert_eq!(file_schema.field_with_name("t96")?.data_type(), &ns);

        let hint = int96_schema_hint(&descriptor, &file_schema).unwrap();
        assert_eq!(hint.fields().len(), file_schema.fields().len());
        assert_eq!(hint.field_with_name("t96")?.data_type(), &spark_timestamp());
        assert_eq!(
            hint.field_with_name("ts")?.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        );
        assert_eq!(hint.field_with_name("d")?.data_type(), &DataType::Date32);
        let DataType::Struct(s) = hint.field_with_name("s")?.data_type() else {
            panic!("s is not a struct");
        };
        assert_eq!(s[0].data_type(), &spark_timestamp());
        assert_eq!(s[1].data_type(), &DataType::Utf8);
        let DataType::List(element) = hint.field_with_name("l")?.data_type() else {
            panic!("l is not a list");
        };
        assert_eq!(element.data_type(), &spark_timestamp());

        // No INT96 column: no hint.
        let plain = SchemaDescriptor::new(Arc::new(parse_message_type(
            "message m { optional int32 d (DATE); optional int64 x; }",
        )?));
        let plain_schema = parquet::arrow::parquet_to_arrow_schema(&plain, None)?;
        assert!(int96_schema_hint(&plain, &plain_schema).is_none());
        assert!(int96_columns(&plain).is_empty());
        // A schema already asking for microseconds needs no hint either.
        assert!(int96_schema_hint(&descriptor, &hint).is_none());
        Ok(())
    }

    /// A batch like Spark's: a date, an INT64 timestamp, an INT96 one, an NTZ one, milliseconds.
    fn sample_batch(old: bool) -> RecordBatch {
        let day = if old { -354_114 } else { 19_000 };
        let micros = if old {
            at(-354_280, 12, 0, 0, 0)
        } else {
            1_700_000_000_000_000
        };
        let utc = |a: TimestampMicrosecondArray| a.with_timezone(UTC);
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
                true,
            ),
            Field::new("t96", spark_timestamp(), true),
            Field::new(
                "ntz",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new(
                "ms",
                DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(vec![Some(day), None, Some(0)])),
                Arc::new(utc(vec![Some(micros), None, Some(0)].into())),
                Arc::new(utc(vec![Some(micros), None, Some(0)].into())),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(micros),
                    None,
                    Some(0),
                ])),
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(micros / 1000), None, Some(0)])
                        .with_timezone(UTC),
                ),
            ],
        )
        .unwrap()
    }

    fn first_i64(batch: &RecordBatch, name: &str) -> i64 {
        let column = batch.column_by_name(name).unwrap();
        match column.data_type() {
            DataType::Date32 => i64::from(column.as_primitive::<Date32Type>().value(0)),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                column.as_primitive::<TimestampMillisecondType>().value(0)
            }
            _ => column.as_primitive::<TimestampMicrosecondType>().value(0),
        }
    }

    #[test]
    fn rebase_batch_under_each_flag_combination() -> TestResult {
        let int96 = vec!["t96".to_string()];
        let (day, micros) = (-354_114_i64, at(-354_280, 12, 0, 0, 0));
        let (new_day, new_micros) = (-354_120_i64, at(-354_285, 12, 0, 0, 0));
        for (legacy_datetime, legacy_int96) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let info = SparkWriteInfo {
                legacy_datetime,
                legacy_int96,
                ..SparkWriteInfo::default()
            };
            let before = sample_batch(true);
            let out = rebase_batch(before.clone(), &info, &int96)?;
            assert_eq!(out.schema(), before.schema());
            assert_eq!(out.num_rows(), 3);
            let expect = |rebased: bool, old: i64, new: i64| if rebased { new } else { old };
            assert_eq!(first_i64(&out, "d"), expect(legacy_datetime, day, new_day));
            assert_eq!(
                first_i64(&out, "ts"),
                expect(legacy_datetime, micros, new_micros)
            );
            assert_eq!(
                first_i64(&out, "ms"),
                expect(legacy_datetime, micros / 1000, new_micros / 1000)
            );
            assert_eq!(
                first_i64(&out, "t96"),
                expect(legacy_int96, micros, new_micros)
            );
            // TIMESTAMP_NTZ is never rebased by Spark.
            assert_eq!(first_i64(&out, "ntz"), micros);
            for i in 0..out.num_columns() {
                // Nulls and modern values are kept; untouched columns are the same buffers.
                assert!(out.column(i).is_null(1));
                assert!(out.column(i).is_valid(2));
                assert_eq!(out.column(i).data_type(), before.column(i).data_type());
                let changed = first_i64(&out, out.schema().field(i).name())
                    != first_i64(&before, before.schema().field(i).name());
                assert_eq!(!changed, Arc::ptr_eq(out.column(i), before.column(i)));
            }
        }
        // Modern values in a legacy file: nothing is copied.
        let info = SparkWriteInfo {
            legacy_datetime: true,
            legacy_int96: true,
            ..SparkWriteInfo::default()
        };
        let modern = sample_batch(false);
        let out = rebase_batch(modern.clone(), &info, &int96)?;
        for i in 0..out.num_columns() {
            assert!(Arc::ptr_eq(out.column(i), modern.column(i)));
        }
        Ok(())
    }

    /// INT96 value of `micros` since the epoch (Julian day number + nanoseconds of the day).
    fn int96(micros: i64) -> parquet::data_type::Int96 {
        let nanos = micros.rem_euclid(MICROS_PER_DAY) * 1000;
        let jdn = micros.div_euclid(MICROS_PER_DAY) + 2_440_588;
        let mut v = parquet::data_type::Int96::new();
        v.set_data(nanos as u32, (nanos >> 32) as u32, jdn as u32);
        v
    }

    #[test]
    fn end_to_end_legacy_file_with_int96() -> TestResult {
        use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type, Int96Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;

        let message = "message spark_schema {
            optional int64 id;
            optional int32 d (DATE);
            optional int64 ts (TIMESTAMP(MICROS,true));
            optional int96 t96;
            optional group s { optional int96 inner; optional binary name (STRING); }
        }";
        let old = at(-354_280, 12, 0, 0, 0); // Julian 1000-01-01T12:00:00
        let modern = 1_700_000_000_123_456;
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(kv(&[
                (SPARK_VERSION_KEY, "2.4.8"),
                (SPARK_TIME_ZONE_KEY, UTC),
            ])))
            .build();
        let mut writer = SerializedFileWriter::new(
            Vec::new(),
            Arc::new(parse_message_type(message)?),
            Arc::new(props),
        )?;
        let mut row_group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = row_group.next_column()? {
            let (top, nested) = ([1, 1], [2, 2]);
            match index {
                0 => column
                    .typed::<Int64Type>()
                    .write_batch(&[0, 1], Some(&top), None)?,
                1 => column.typed::<Int32Type>().write_batch(
                    &[-354_114, 19_000],
                    Some(&top),
                    None,
                )?,
                2 => column
                    .typed::<Int64Type>()
                    .write_batch(&[old, modern], Some(&top), None)?,
                3 => column.typed::<Int96Type>().write_batch(
                    &[int96(old), int96(modern)],
                    Some(&top),
                    None,
                )?,
                4 => column.typed::<Int96Type>().write_batch(
                    &[int96(old), int96(modern)],
                    Some(&nested),
                    None,
                )?,
                _ => column.typed::<ByteArrayType>().write_batch(
                    &[ByteArray::from("a"), ByteArray::from("b")],
                    Some(&nested),
                    None,
                )?,
            };
            column.close()?;
            index += 1;
        }
        row_group.close()?;
        let bytes = bytes::Bytes::from(writer.into_inner()?);

        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?;
        let info =
            SparkWriteInfo::from_key_value(builder.metadata().file_metadata().key_value_metadata());
        assert!(info.legacy_datetime && info.legacy_int96);
        let int96_names = int96_columns(builder.parquet_schema());
        assert_eq!(int96_names, vec!["t96".to_string()]);
        let hint = int96_schema_hint(builder.parquet_schema(), builder.schema()).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
            bytes,
            ArrowReaderOptions::new().with_schema(hint),
        )?
        .build()?;
        let batches = reader
            .map(|b| rebase_batch(b?, &info, &int96_names))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = &batches[0];
        let greg = at(-354_285, 12, 0, 0, 0);
        let d = batch
            .column_by_name("d")
            .unwrap()
            .as_primitive::<Date32Type>();
        assert_eq!((d.value(0), d.value(1)), (-354_120, 19_000));
        for name in ["ts", "t96"] {
            let ts = batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            assert_eq!((ts.value(0), ts.value(1)), (greg, modern), "{name}");
        }
        // Nested INT96 is read in microseconds without overflow, but not rebased.
        let s = batch.column_by_name("s").unwrap().as_struct();
        let inner = s.column(0).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(inner.data_type(), &spark_timestamp());
        assert_eq!((inner.value(0), inner.value(1)), (old, modern));
        Ok(())
    }

    /// Reads one Spark fixture file as a caller would: footer → hint → read → rebase.
    fn read_spark_file(
        path: &std::path::Path,
    ) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?;
        let info =
            SparkWriteInfo::from_key_value(builder.metadata().file_metadata().key_value_metadata());
        let int96_names = int96_columns(builder.parquet_schema());
        let builder = match int96_schema_hint(builder.parquet_schema(), builder.schema()) {
            None => builder,
            Some(hint) => ParquetRecordBatchReaderBuilder::try_new_with_options(
                std::fs::File::open(path)?,
                ArrowReaderOptions::new().with_schema(hint),
            )?,
        };
        let mut batches = Vec::new();
        for batch in builder.build()? {
            batches.push(rebase_batch(batch?, &info, &int96_names)?);
        }
        Ok(batches)
    }

    fn parquet_files(
        dir: &std::path::Path,
        out: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                parquet_files(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
        Ok(())
    }

    /// Files written by real Spark (`scripts/spark/make_fixtures.py`: CORRECTED, LEGACY and INT96
    /// variants) read back to what Spark itself read (`expected/<variant>.json`): the sample rows'
    /// dates and timestamps (0001-01-01, 1000-06-15, 1582-10-04, ...) and the columns' minimums.
    #[test]
    fn spark_fixtures_read_as_spark_reads_them() -> TestResult {
        use std::collections::HashMap;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/spark");
        let Ok(listing) = std::fs::read_dir(root.join("expected")) else {
            eprintln!("no Spark fixtures under {}: skipped", root.display());
            return Ok(());
        };
        let mut checked = 0;
        for entry in listing {
            let expected: serde_json::Value =
                serde_json::from_slice(&std::fs::read(entry?.path())?)?;
            let variant = expected["variant"].as_str().unwrap();
            let mut files = Vec::new();
            parquet_files(&root.join(variant), &mut files)?;
            let mut rows: HashMap<i64, (Option<i64>, Option<i64>)> = HashMap::new();
            for file in &files {
                for batch in read_spark_file(file)? {
                    let id = batch
                        .column_by_name("id")
                        .unwrap()
                        .as_primitive::<arrow::datatypes::Int64Type>();
                    let d = batch
                        .column_by_name("account_open_date")
                        .unwrap()
                        .as_primitive::<Date32Type>();
                    let ts = batch.column_by_name("event_ts").unwrap();
                    assert_eq!(ts.data_type(), &spark_timestamp(), "{}", file.display());
                    let ts = ts.as_primitive::<TimestampMicrosecondType>();
                    for i in 0..batch.num_rows() {
                        let date = d.is_valid(i).then(|| i64::from(d.value(i)));
                        let micros = ts.is_valid(i).then(|| ts.value(i));
                        rows.insert(id.value(i), (date, micros));
                    }
                }
            }
            assert_eq!(
                rows.len() as u64,
                expected["rows"].as_u64().unwrap(),
                "{variant}"
            );
            let date_of = |v: &serde_json::Value| {
                v.as_str().map(|s| {
                    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
                    gregorian_days(date.year(), date.month(), date.day())
                })
            };
            let micros_of = |v: &serde_json::Value| {
                v.as_str().map(|s| {
                    chrono::DateTime::parse_from_rfc3339(s)
                        .unwrap()
                        .timestamp_micros()
                })
            };
            for row in expected["sample"].as_array().unwrap() {
                let id = row["id"].as_i64().unwrap();
                let want = (
                    date_of(&row["account_open_date"]),
                    micros_of(&row["event_ts"]),
                );
                assert_eq!(rows[&id], want, "{variant} id {id}: {row}");
                checked += 1;
            }
            let columns = &expected["columns"];
            let min_date = rows.values().filter_map(|r| r.0).min();
            let min_ts = rows.values().filter_map(|r| r.1).min();
            assert_eq!(
                min_date,
                date_of(&columns["account_open_date"]["min"]),
                "{variant}"
            );
            assert_eq!(min_ts, micros_of(&columns["event_ts"]["min"]), "{variant}");
        }
        assert!(checked > 0);
        Ok(())
    }
}
