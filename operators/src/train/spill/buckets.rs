//! Encoded training rows on disk, bucketed by the top bits of their key in an epoch's order.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema, SchemaRef, UInt64Type};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use millrace_ml::preprocess::Targets;

use super::SpillDir;
use super::spool::spill_error;
use crate::train::order::{mix, row_hashes};
use crate::{Error, Result};

/// Rows gathered per bucket before they are written as one IPC batch.
const MAX_PENDING_ROWS: usize = 4096;

/// One bucket's rows read back and put in key order: `order` is (key, row), by key.
pub(crate) struct Loaded {
    /// The end (exclusive) of the bucket's key range.
    pub(crate) range_end: u128,
    pub(crate) order: Vec<(u64, u32)>,
    pub(crate) x: Vec<f32>,
    pub(crate) targets: Targets,
}

/// What every bucket file of a set shares.
#[derive(Clone)]
struct Layout {
    dir: Arc<SpillDir>,
    /// Files of this set are `rows-<generation>-<bucket>.arrow`.
    generation: usize,
    /// `2^bits` buckets; a key's bucket is its top `bits` bits.
    bits: u32,
    /// The order's seed (keys are `mix(hash ^ mix(seed))`).
    seed: u64,
    dim: usize,
    classes: bool,
}

impl Layout {
    fn salt(&self) -> u64 {
        mix(self.seed)
    }

    fn bucket_of(&self, key: u64) -> usize {
        if self.bits == 0 {
            0
        } else {
            (key >> (64 - self.bits)) as usize
        }
    }

    fn path(&self, bucket: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("rows-{}-{bucket}.arrow", self.generation))
    }

    fn schema(&self) -> SchemaRef {
        let y = if self.classes {
            DataType::Int64
        } else {
            DataType::Float32
        };
        Arc::new(Schema::new(vec![
            Field::new("hash", DataType::UInt64, false),
            Field::new("y", y, false),
            Field::new(
                "x",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, false)),
                    self.dim as i32,
                ),
                false,
            ),
        ]))
    }
}

/// Rows of one bucket not written yet.
#[derive(Default)]
struct Pending {
    hashes: Vec<u64>,
    classes: Vec<i64>,
    values: Vec<f32>,
    x: Vec<f32>,
}

/// Writes encoded rows into `2^bits` bucket files by their key in the order seeded `seed`.
pub(crate) struct BucketWriter {
    layout: Layout,
    pending: Vec<Pending>,
    flush_rows: usize,
    writers: Vec<Option<StreamWriter<BufWriter<File>>>>,
    rows: Vec<u64>,
    hash_sum: u64,
}

impl BucketWriter {
    /// A writer of rows of `dim` features (class or value targets) into enough buckets for
    /// `expected_rows` that a bucket takes about `bucket_bytes` in memory when read back.
    pub(crate) fn new(
        dir: Arc<SpillDir>,
        seed: u64,
        dim: usize,
        classes: bool,
        expected_rows: u64,
        bucket_bytes: u64,
    ) -> Self {
        let row_bytes = loaded_row_bytes(dim);
        let buckets = (expected_rows.saturating_mul(row_bytes) / bucket_bytes.max(1)).max(1);
        let bits = buckets.next_power_of_two().trailing_zeros().min(16);
        let layout = Layout {
            dir,
            generation: 0,
            bits,
            seed,
            dim,
            classes,
        };
        Self::with_layout(layout, bucket_bytes)
    }

    fn with_layout(layout: Layout, bucket_bytes: u64) -> Self {
        let n = 1usize << layout.bits;
        // What waits to be written stays within about a quarter of a bucket.
        let flush_rows = (bucket_bytes / 4 / (n as u64 * loaded_row_bytes(layout.dim)).max(1))
            .clamp(64, MAX_PENDING_ROWS as u64) as usize;
        BucketWriter {
            pending: (0..n).map(|_| Pending::default()).collect(),
            flush_rows,
            writers: (0..n).map(|_| None).collect(),
            rows: vec![0; n],
            hash_sum: 0,
            layout,
        }
    }

    /// Adds rows: `x` row-major, `dim` features a row, with their targets; `hashes` are the rows'
    /// content hashes when known (else computed).
    pub(crate) fn add(
        &mut self,
        x: &[f32],
        targets: &Targets,
        hashes: Option<&[u64]>,
    ) -> Result<()> {
        let dim = self.layout.dim;
        let computed;
        let hashes = match hashes {
            Some(h) => h,
            None => {
                computed = row_hashes(x, dim, targets);
                &computed
            }
        };
        let salt = self.layout.salt();
        for (r, &h) in hashes.iter().enumerate() {
            self.hash_sum = self.hash_sum.wrapping_add(mix(h));
            let b = self.layout.bucket_of(mix(h ^ salt));
            let p = &mut self.pending[b];
            p.hashes.push(h);
            p.x.extend_from_slice(&x[r * dim..(r + 1) * dim]);
            match targets {
                Targets::Classes(c) => p.classes.push(c[r]),
                Targets::Values(v) => p.values.push(v[r]),
            }
            if p.hashes.len() >= self.flush_rows {
                self.flush(b)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, b: usize) -> Result<()> {
        let p = std::mem::take(&mut self.pending[b]);
        let n = p.hashes.len();
        if n == 0 {
            return Ok(());
        }
        let path = self.layout.path(b);
        let schema = self.layout.schema();
        if self.writers[b].is_none() {
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 16, file), &schema)
                .map_err(|e| spill_error(&path, e))?;
            self.writers[b] = Some(writer);
        }
        let y: ArrayRef = if self.layout.classes {
            Arc::new(Int64Array::from(p.classes))
        } else {
            Arc::new(Float32Array::from(p.values))
        };
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let x = FixedSizeListArray::try_new(
            item,
            self.layout.dim as i32,
            Arc::new(Float32Array::from(p.x)),
            None,
        )
        .map_err(|e| spill_error(&path, e))?;
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(UInt64Array::from(p.hashes)), y, Arc::new(x)],
        )
        .map_err(|e| spill_error(&path, e))?;
        let writer = self.writers[b].as_mut().expect("opened above");
        writer.write(&batch).map_err(|e| spill_error(&path, e))?;
        self.rows[b] += n as u64;
        Ok(())
    }

    /// Writes what is pending and closes the files.
    pub(crate) fn finish(mut self) -> Result<Buckets> {
        for b in 0..self.pending.len() {
            self.flush(b)?;
            if let Some(mut writer) = self.writers[b].take() {
                writer
                    .finish()
                    .map_err(|e| spill_error(&self.layout.path(b), e))?;
            }
        }
        Ok(Buckets {
            layout: self.layout,
            rows: self.rows,
            hash_sum: self.hash_sum,
        })
    }
}

/// Bytes a row takes when its bucket is read back: features, target, its content hash while
/// keyed, and its (key, index) in the order.
fn loaded_row_bytes(dim: usize) -> u64 {
    (dim as u64) * 4 + 8 + 8 + 16
}

/// A worker's encoded training rows on disk, bucketed for the order of one seed.
pub(crate) struct Buckets {
    layout: Layout,
    rows: Vec<u64>,
    hash_sum: u64,
}

impl Buckets {
    /// Rows in all buckets.
    pub(crate) fn rows(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// Features per row.
    pub(crate) fn dim(&self) -> usize {
        self.layout.dim
    }

    /// The sum of every row's mixed content hash (this worker's share of the data fingerprint).
    pub(crate) fn hash_sum(&self) -> u64 {
        self.hash_sum
    }

    /// The seed of the order the rows are bucketed for.
    pub(crate) fn seed(&self) -> u64 {
        self.layout.seed
    }

    /// The same rows bucketed for the order seeded `seed`: a pass over every bucket, writing a
    /// new set and removing this one.
    pub(crate) fn rebucket(self, seed: u64) -> Result<Buckets> {
        let mut layout = self.layout.clone();
        layout.generation += 1;
        layout.seed = seed;
        let bucket_bytes =
            self.rows().max(1) * loaded_row_bytes(layout.dim) / (1u64 << layout.bits);
        let mut writer = BucketWriter::with_layout(layout, bucket_bytes.max(1 << 20));
        for b in 0..self.rows.len() {
            for batch in self.read(b)? {
                let (hashes, targets, x) = columns(&batch?, self.layout.classes)?;
                writer.add(&x, &targets, Some(&hashes))?;
            }
            let path = self.layout.path(b);
            if self.rows[b] > 0 {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        let out = writer.finish()?;
        debug_assert_eq!(out.hash_sum, self.hash_sum);
        Ok(out)
    }

    /// The batches of bucket `b`.
    fn read(&self, b: usize) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>>>> {
        read_bucket(&self.layout, b, self.rows[b])
    }

    /// The buckets from the one holding key `from` on, each read and sorted on another thread
    /// while the one before is used (at most two ahead).
    pub(crate) fn stream(&self, from: u128) -> Receiver<Result<Loaded>> {
        let first = if from >= 1u128 << 64 {
            self.rows.len()
        } else {
            self.layout.bucket_of(from as u64)
        };
        let (tx, rx) = sync_channel(1);
        let layout = self.layout.clone();
        let rows = self.rows.clone();
        std::thread::Builder::new()
            .name("millrace-spill-read".into())
            .spawn(move || {
                for (b, &n) in rows.iter().enumerate().skip(first) {
                    let loaded = load(&layout, b, n);
                    let failed = loaded.is_err();
                    if tx.send(loaded).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("a thread to read spilled rows");
        rx
    }
}

fn read_bucket(
    layout: &Layout,
    b: usize,
    rows: u64,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>>>> {
    if rows == 0 {
        return Ok(Box::new(std::iter::empty()));
    }
    let path = layout.path(b);
    let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
        .map_err(|e| spill_error(&path, e))?;
    Ok(Box::new(
        reader.map(move |r| r.map_err(|e| spill_error(&path, e))),
    ))
}

/// A bucket's columns: content hashes, targets and row-major features.
fn columns(batch: &RecordBatch, classes: bool) -> Result<(Vec<u64>, Targets, Vec<f32>)> {
    let bad =
        || Error::Internal("a spill file does not hold the columns it was written with".into());
    let hashes = batch
        .column(0)
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(bad)?
        .values()
        .to_vec();
    let targets = if classes {
        let y = batch
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(bad)?;
        Targets::Classes(y.values().to_vec())
    } else {
        let y = batch
            .column(1)
            .as_primitive_opt::<Float32Type>()
            .ok_or_else(bad)?;
        Targets::Values(y.values().to_vec())
    };
    let x = batch.column(2).as_fixed_size_list_opt().ok_or_else(bad)?;
    let values = x
        .values()
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(bad)?;
    let x = values.values()[x.offset() * x.value_length() as usize..]
        [..x.len() * x.value_length() as usize]
        .to_vec();
    Ok((hashes, targets, x))
}

/// Reads bucket `b` and puts its rows in key order.
fn load(layout: &Layout, b: usize, rows: u64) -> Result<Loaded> {
    let n = rows as usize;
    let mut x = Vec::with_capacity(n * layout.dim);
    let mut targets = if layout.classes {
        Targets::Classes(Vec::with_capacity(n))
    } else {
        Targets::Values(Vec::with_capacity(n))
    };
    let mut order = Vec::with_capacity(n);
    let salt = layout.salt();
    for batch in read_bucket(layout, b, rows)? {
        let batch = batch?;
        let (hashes, t, xs) = columns(&batch, layout.classes)?;
        for h in hashes {
            order.push((mix(h ^ salt), order.len() as u32));
        }
        x.extend_from_slice(&xs);
        match (&mut targets, t) {
            (Targets::Classes(all), Targets::Classes(c)) => all.extend(c),
            (Targets::Values(all), Targets::Values(v)) => all.extend(v),
            _ => return Err(Error::Internal("spilled targets changed kind".into())),
        }
    }
    if order.len() != n {
        return Err(Error::Internal(format!(
            "spill bucket {b} holds {} rows, {n} were written",
            order.len()
        )));
    }
    order.sort_unstable();
    let range_end = (b as u128 + 1) << (64 - layout.bits);
    Ok(Loaded {
        range_end,
        order,
        x,
        targets,
    })
}
