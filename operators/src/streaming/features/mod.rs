//! `[features]` in a streaming job: the records, after the preprocess SQL and the late-record
//! check, go into a differential feature view ([`millrace_engine::features`]); they come out, on
//! the worker that owns their key, once the job's watermark has passed their event time, with the
//! table's columns and the aggregates as of that time, and are then encoded and trained on.
//!
//! ```text
//! poll ─▶ SQL ─▶ late? ─▶ view.push ┄┄ (watermark passes) ┄┄▶ released ─▶ encode ─▶ train
//!                           ▲
//!        [features.table] ──┘ (read once; a new Delta version as a difference, chosen by worker 0)
//! ```

mod kafka_table;
mod rows;
pub mod sql;
mod table;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, SchemaRef};
use arrow::row::{RowConverter, SortField};
use millrace_engine::features::{
    FeatureSpec, FeatureState, FeatureStore, FeatureView, Released, Row, Value,
};
use millrace_engine::timely::worker::Worker;
use millrace_engine::{DeadLetter, WorkerContext, row_to_json};

use super::input::{Origins, Prepared};
use super::late::event_times;
use super::run::Shared;
use crate::spec::{FeaturesSpec, PipelineSpec};
use crate::{Error, Result};
use kafka_table::KafkaTable;
pub use kafka_table::KafkaTableState;
pub(crate) use rows::{column, key_family, supported};
use table::FeatureTable;

/// `[features]`, checked against the preprocess SQL's output and the table.
#[derive(Clone, Debug)]
pub struct FeaturePlan {
    /// As written, with what its `sql` says filled in.
    pub spec: FeaturesSpec,
    /// The view's definition.
    pub view: FeatureSpec,
    /// The records' event-time column.
    pub time_column: String,
    /// The input column of each aggregate (`None` for counts).
    pub inputs: Vec<Option<String>>,
    /// The feature columns added to each record, in order.
    pub fields: Vec<Field>,
    /// The key column holds integers (else strings).
    pub integer_keys: bool,
}

impl FeaturePlan {
    /// Checks `[features]` against `records` (the preprocess SQL's output) and reads the table's
    /// schema; a missing column, a key of another type than the table's, or a type a feature
    /// cannot hold is an error naming it.
    pub fn new(spec: &PipelineSpec, records: &arrow::datatypes::Schema) -> Result<Option<Self>> {
        let Some(written) = &spec.features else {
            return Ok(None);
        };
        let time_column = spec
            .stream
            .as_ref()
            .and_then(|s| s.event_time.clone())
            .ok_or_else(|| {
                Error::config(
                    "features",
                    "features are joined as of each record's event time: set [stream] event_time",
                )
            })?;
        // A Kafka table's key has the type of the records' key (with `sql`, the records' key is
        // known only after planning: a Kafka table is then planned with the type of the column
        // its key is named after, or a string).
        let written_key = written.table_key().unwrap_or("key").to_string();
        let integer_written = (records.field_with_name(&written_key).ok())
            .is_some_and(|f| key_family(f.data_type()) == "integer");
        let table_schema = |features: &FeaturesSpec, integer: bool| match &features.table {
            None => Ok(None),
            Some(t) if t.kafka.is_some() => {
                let key = features.table_key().unwrap_or_default();
                KafkaTable::schema(features, key, integer).map(Some)
            }
            Some(t) => FeatureTable::schema_at(&t.path, &spec.storage).map(Some),
        };
        let features = &match &written.sql {
            None => written.clone(),
            Some(_) => {
                let table = table_schema(written, integer_written)?;
                sql::resolve(written, records, &time_column, table.as_deref())?
            }
        };
        let view = features.view()?;
        let key = records.field_with_name(&features.key).map_err(|_| {
            Error::config(
                "features.key",
                format!(
                    "column `{}` is not produced by the preprocess SQL",
                    features.key
                ),
            )
        })?;
        let integer_keys = key_family(key.data_type()) == "integer";
        let table = match &features.table {
            Some(t) if t.kafka.is_some() => table_schema(features, integer_keys)?,
            Some(_) => Some(FeatureTable::open(features, &spec.storage, None)?.schema()),
            None => None,
        };
        if let (Some(schema), Some(table_key)) = (&table, features.table_key()) {
            let tk = schema.field_with_name(table_key).map_err(|_| {
                Error::config(
                    "features.table.key",
                    format!("the table has no column `{table_key}`"),
                )
            })?;
            if key_family(tk.data_type()) != key_family(key.data_type()) {
                return Err(Error::config(
                    "features.key",
                    format!(
                        "the records' key `{}` is {} but the table's key `{table_key}` is {}: cast one of them in SQL so both are integers or both strings",
                        features.key,
                        key.data_type(),
                        tk.data_type()
                    ),
                ));
            }
        }
        let inputs: Vec<Option<String>> = features
            .aggregates
            .iter()
            .map(|a| a.column.clone())
            .collect();
        let fields = rows::feature_fields(&view, table.as_deref(), records, &inputs)?;
        if let Some(clash) = fields
            .iter()
            .find(|f| records.field_with_name(f.name()).is_ok())
        {
            return Err(Error::config(
                "features",
                format!(
                    "feature `{}` has the name of a preprocessed column: rename one of them",
                    clash.name()
                ),
            ));
        }
        Ok(Some(FeaturePlan {
            spec: features.clone(),
            view,
            time_column,
            inputs,
            fields,
            integer_keys,
        }))
    }

    /// An empty store for the view's current features.
    pub fn store(&self) -> FeatureStore {
        FeatureStore::new(&self.view, self.integer_keys)
    }

    /// Names of the feature columns.
    pub fn names(&self) -> Vec<String> {
        self.view.feature_names()
    }

    /// The record columns the view reads: the key, the event time and the aggregates' inputs.
    pub fn columns(&self) -> Vec<String> {
        let mut columns = vec![self.spec.key.clone(), self.time_column.clone()];
        for c in self.inputs.iter().flatten() {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
        columns
    }

    /// Checks that every column of the records the view holds has a type it can hold.
    pub fn check_records(&self, records: &arrow::datatypes::Schema) -> Result<()> {
        match records.fields().iter().find(|f| !supported(f.data_type())) {
            None => Ok(()),
            Some(field) => Err(Error::config(
                "features",
                format!(
                    "the preprocessed records' column `{}` is {}, which a record waiting for its features cannot hold: leave it out of the preprocess SQL",
                    field.name(),
                    field.data_type()
                ),
            )),
        }
    }
}

/// `schema` with the view's feature columns after its own.
pub(crate) fn with_view(schema: &arrow::datatypes::Schema, plan: &FeaturePlan) -> SchemaRef {
    rows::with_features(schema, &plan.fields)
}

/// One worker's feature stage.
pub(crate) struct FeatureStage {
    view: FeatureView,
    plan: FeaturePlan,
    table: Option<FeatureTable>,
    /// Worker 0, with a Kafka table: its reader.
    kafka: Option<KafkaTable>,
    /// The table messages the start could not read, for the dead letters.
    rejected: Vec<DeadLetter>,
    /// The preprocessed records' schema with the features after it.
    out: SchemaRef,
    key_index: usize,
    input_indices: Vec<Option<usize>>,
    /// The records' columns to and from Arrow's row format.
    converter: RowConverter,
    keep_keys: bool,
    topic: String,
}

/// What a checkpoint keeps of the features: every worker's view state and the table's version.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FeaturesCheckpoint {
    /// Every worker's view state, in worker order.
    pub views: Vec<FeatureState>,
    /// The Delta version the table state is of.
    pub table_version: Option<i64>,
    /// A Kafka table's reading and rows.
    pub kafka_table: Option<KafkaTableState>,
}

impl FeatureStage {
    /// Builds the job's view (`plan`) on `worker` and fills it: from the checkpoint on a resume,
    /// else with this worker's share of the table (valid from the start of time).
    pub(crate) fn open(
        worker: &mut Worker,
        ctx: &WorkerContext,
        shared: &Shared,
        plan: &FeaturePlan,
        keep_keys: bool,
    ) -> Result<Self> {
        let spec = &shared.plan.spec;
        let records = shared.plan.sql.output_schema.clone();
        let resume = shared.resume.as_ref().and_then(|c| c.features.as_ref());
        let store = shared.feature_store.clone();
        let mut view = FeatureView::with_store(
            worker,
            "features",
            plan.view.clone(),
            store,
            shared.workers_per_process,
        )?;
        let version = resume.and_then(|c| c.table_version);
        let kafka_spec = plan.spec.table.as_ref().and_then(|t| t.kafka.as_ref());
        let table = match &plan.spec.table {
            Some(_) if kafka_spec.is_some() => None,
            Some(_) => Some(FeatureTable::open(&plan.spec, &spec.storage, version)?),
            None => None,
        };
        let mut kafka = match kafka_spec {
            Some(k) if ctx.index == 0 => {
                let state = resume.and_then(|c| c.kafka_table.as_ref());
                Some(KafkaTable::open(&plan.spec, k, plan.integer_keys, state)?)
            }
            _ => None,
        };
        match (resume, &table) {
            (Some(c), _) => view.restore(&c.views, ctx)?,
            (None, Some(t)) => {
                for ((key, row), diff) in t.rows(ctx.index, ctx.peers)? {
                    view.update_table(key, row, 0, diff)?;
                }
            }
            (None, None) => {}
        }
        // A Kafka table is read to the end it has now, from its start or from the checkpoint,
        // before any record: what was written before the job started counts at its own times.
        let mut rejected = Vec::new();
        if let Some(k) = kafka.as_mut() {
            k.load(&mut view, &mut rejected)?;
        }
        let index = |name: &str| {
            records
                .index_of(name)
                .map_err(|_| Error::Internal(format!("no column `{name}`")))
        };
        let key_index = index(&plan.spec.key)?;
        let input_indices = (plan.inputs.iter())
            .map(|c| c.as_deref().map(index).transpose())
            .collect::<Result<_>>()?;
        let fields = records.fields().iter();
        let converter = RowConverter::new(
            fields
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(FeatureStage {
            rejected,
            converter,
            out: rows::with_features(&records, &plan.fields),
            view,
            plan: plan.clone(),
            table,
            kafka,
            key_index,
            input_indices,
            keep_keys,
            topic: spec
                .stream
                .as_ref()
                .map(|s| s.topic.clone())
                .unwrap_or_default(),
        })
    }

    /// Puts `prepared`'s records into the view; a record without a key or event time, or with an
    /// aggregate input of the wrong kind, goes to `dead`. Returns how many did.
    pub(crate) fn push(&mut self, prepared: &Prepared, dead: &mut Vec<DeadLetter>) -> Result<u64> {
        let batch = &prepared.batch;
        let times = event_times(batch, &self.plan.time_column)?;
        // The record travels as one comparable byte string (Arrow's row format): one allocation,
        // compared and hashed as bytes, rather than a value per column.
        let encoded = self.converter.convert_columns(batch.columns())?;
        let keys = batch.column(self.key_index);
        let inputs: Vec<Option<&ArrayRef>> = (self.input_indices.iter())
            .map(|j| j.map(|j| batch.column(j)))
            .collect();
        let mut rejected = 0;
        for i in 0..batch.num_rows() {
            let key = Value::from_array(keys.as_ref(), i)?;
            let inputs: Row = (inputs.iter())
                .map(|c| c.map_or(Ok(Value::Null), |c| Value::from_array(c.as_ref(), i)))
                .collect::<millrace_engine::Result<_>>()?;
            let mut row = vec![Value::Bytes(encoded.row(i).as_ref().to_vec())];
            row.extend(origin_values(prepared, i, self.keep_keys));
            let result = match (key.is_null(), times.is_valid(i)) {
                (true, _) => Err(format!(
                    "no value in the features key column `{}`",
                    self.plan.spec.key
                )),
                (_, false) => Err(format!("no event time in `{}`", self.plan.time_column)),
                _ => {
                    let time = u64::try_from(times.value(i)).unwrap_or(0);
                    self.view
                        .push_event(key, time, row, inputs)
                        .map_err(|e| e.to_string())
                }
            };
            if let Err(reason) = result {
                rejected += 1;
                dead.push(DeadLetter {
                    operator: "stream/features".into(),
                    reason,
                    origin: Some(prepared.origins.describe(&self.topic, i)),
                    record: row_to_json(batch, i),
                    rows: 1,
                });
            }
        }
        Ok(rejected)
    }

    /// Worker 0, with a Kafka table: the table's messages that arrived since the last call, into
    /// the view; one that cannot be read goes to `dead`.
    pub(crate) fn poll_table(&mut self, dead: &mut Vec<DeadLetter>) -> Result<()> {
        dead.append(&mut self.rejected);
        match self.kafka.as_mut() {
            Some(k) => k.poll(&mut self.view, dead),
            None => Ok(()),
        }
    }

    /// With a Kafka table that has messages not read yet: the time the job's watermark must not
    /// pass.
    pub(crate) fn table_hold(&self) -> Option<i64> {
        self.kafka.as_ref().and_then(KafkaTable::hold)
    }

    /// Worker 0, with a Kafka table: its state for a checkpoint.
    pub(crate) fn kafka_table_state(&self) -> Option<KafkaTableState> {
        self.kafka.as_ref().map(KafkaTable::state)
    }

    /// Worker 0: a newer table version to move to, when one is out and a refresh is due.
    pub(crate) fn newer_table(&mut self) -> Result<Option<i64>> {
        match self.table.as_mut() {
            Some(t) => t.newer(),
            None => Ok(None),
        }
    }

    /// Moves the table to `version` (every worker, at the same step): its difference takes
    /// effect at its commit time, or at the view's frontier when that is later.
    pub(crate) fn move_table(&mut self, version: i64, ctx: &WorkerContext) -> Result<()> {
        let Some(table) = self.table.as_mut() else {
            return Ok(());
        };
        let (updates, at) = table.move_to(version, ctx.index, ctx.peers)?;
        let at = at.and_then(|t| u64::try_from(t).ok()).unwrap_or(0);
        for ((key, row), diff) in updates {
            self.view.update_table(key, row, at, diff)?;
        }
        Ok(())
    }

    /// Advances the view to the job's `watermark` (to the end of time when `end`) and waits until
    /// every record before it has its features.
    pub(crate) fn advance(
        &mut self,
        worker: &mut Worker,
        ctx: &WorkerContext,
        watermark: Option<i64>,
        end: bool,
    ) -> Result<()> {
        self.advance_to(watermark, end);
        Ok(self.view.complete(worker, ctx)?)
    }

    /// Advances the view to the job's `watermark` (to the end of time when `end`); the records
    /// before it have their features once [`FeatureStage::is_complete`].
    pub(crate) fn advance_to(&mut self, watermark: Option<i64>, end: bool) {
        let to = if end {
            u64::MAX - 1
        } else {
            watermark.map_or(0, |w| u64::try_from(w).unwrap_or(0))
        };
        self.view.advance_to(to);
    }

    /// Whether every record before the view's frontier has its features.
    pub(crate) fn is_complete(&self) -> bool {
        self.view.is_complete()
    }

    /// The records whose features are complete, as one batch with the feature columns after the
    /// record's own (by event time), with their produce times and origins.
    pub(crate) fn released(&mut self) -> Result<Option<Prepared>> {
        let released = self.view.released();
        if released.is_empty() {
            return Ok(None);
        }
        let parser = self.converter.parser();
        let encoded = (released.iter())
            .map(|r| match r.row.first() {
                Some(Value::Bytes(b)) => Ok(parser.parse(b)),
                other => Err(Error::Internal(format!("a released record is {other:?}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut columns = self.converter.convert_rows(encoded)?;
        for (j, field) in self.plan.fields.iter().enumerate() {
            columns.push(rows::column(
                released.iter().map(|r| &r.features[j]),
                field.data_type(),
            )?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.out), columns)?;
        let int = |r: &Released, k: usize| match r.row.get(ORIGIN + k) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        };
        Ok(Some(Prepared {
            batch,
            produced_ms: released.iter().map(|r| int(r, 0)).collect(),
            origins: Origins {
                partition: released.iter().map(|r| int(r, 1) as i32).collect(),
                offset: released.iter().map(|r| int(r, 2)).collect(),
                key: self.keep_keys.then(|| {
                    released
                        .iter()
                        .map(|r| match r.row.get(ORIGIN + 3) {
                            Some(Value::Bytes(b)) => Some(b.clone()),
                            _ => None,
                        })
                        .collect()
                }),
            },
        }))
    }

    /// This worker's view state, compacted to the watermark.
    pub(crate) fn state(&mut self) -> FeatureState {
        self.view.state()
    }

    /// The Delta version of the table the view holds.
    pub(crate) fn table_version(&self) -> Option<i64> {
        self.table.as_ref().and_then(FeatureTable::version)
    }
}

/// Where a view row's origin values start: after the record, one row-format byte string.
const ORIGIN: usize = 1;

/// The record's produce time, partition and offset (and its key, when kept), carried with it
/// through the view.
fn origin_values(prepared: &Prepared, i: usize, keep_keys: bool) -> Row {
    let origins = &prepared.origins;
    let mut values = vec![
        Value::Int(prepared.produced_ms.get(i).copied().unwrap_or(0)),
        Value::Int(origins.partition.get(i).copied().unwrap_or(0).into()),
        Value::Int(origins.offset.get(i).copied().unwrap_or(0)),
    ];
    if keep_keys {
        let key = origins
            .key
            .as_ref()
            .and_then(|k| k.get(i).cloned().flatten());
        values.push(key.map_or(Value::Null, Value::Bytes));
    }
    values
}
