//! A worker's raw training batches: in memory until they pass a limit, then in Arrow IPC files.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use millrace_engine::Batch;

use super::SpillDir;
use crate::{Error, Result};

/// Batches kept in the order they came, in memory or (past `limit` bytes) on disk.
pub(crate) struct Spool {
    memory: Vec<Batch>,
    bytes: usize,
    limit: usize,
    rows: usize,
    disk: Option<Disk>,
    label: String,
}

/// The spilled batches: one IPC stream per run of batches with the same schema.
struct Disk {
    dir: Arc<SpillDir>,
    runs: Vec<Run>,
    writer: Option<StreamWriter<BufWriter<File>>>,
}

struct Run {
    path: PathBuf,
    schema: SchemaRef,
    /// Each batch's origin, in order.
    origins: Vec<Option<Arc<str>>>,
}

impl Spool {
    /// An empty spool that keeps up to `limit` bytes of batches in memory; `label` names its
    /// spill directory.
    pub(crate) fn new(limit: u64, label: &str) -> Self {
        Spool {
            memory: Vec::new(),
            bytes: 0,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            rows: 0,
            disk: None,
            label: label.to_string(),
        }
    }

    /// Adds `batch`, spilling every batch so far when the spool passes its limit.
    pub(crate) fn push(&mut self, batch: Batch) -> Result<()> {
        self.rows += batch.num_rows();
        if let Some(disk) = &mut self.disk {
            return disk.write(&batch);
        }
        self.bytes += batch.data.get_array_memory_size();
        self.memory.push(batch);
        if self.bytes > self.limit {
            let mut disk = Disk {
                dir: Arc::new(SpillDir::create(&self.label)?),
                runs: Vec::new(),
                writer: None,
            };
            for batch in self.memory.drain(..) {
                disk.write(&batch)?;
            }
            self.bytes = 0;
            tracing::info!(
                dir = %disk.dir.path().display(),
                limit_bytes = self.limit,
                "the training batches passed this worker's share of train.memory_budget: spilling them to disk"
            );
            self.disk = Some(disk);
        }
        Ok(())
    }

    /// Rows pushed.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The spill directory, when the batches went to disk.
    pub(crate) fn dir(&self) -> Option<Arc<SpillDir>> {
        self.disk.as_ref().map(|d| Arc::clone(&d.dir))
    }

    /// The batches in memory, when none went to disk.
    pub(crate) fn into_memory(self) -> Option<Vec<Batch>> {
        self.disk.is_none().then_some(self.memory)
    }

    /// Every batch in the order pushed, read back from disk one at a time when spilled.
    pub(crate) fn drain(self) -> Result<Box<dyn Iterator<Item = Result<Batch>>>> {
        let Some(mut disk) = self.disk else {
            return Ok(Box::new(self.memory.into_iter().map(Ok)));
        };
        disk.close()?;
        let mut readers = Vec::with_capacity(disk.runs.len());
        for run in disk.runs {
            let file = File::open(&run.path).map_err(|e| Error::io(&run.path, e))?;
            // Read through the open file: its space goes back as soon as it is read.
            let _ = std::fs::remove_file(&run.path);
            let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
                .map_err(|e| spill_error(&run.path, e))?;
            let path = run.path.clone();
            readers.push(reader.zip(run.origins).map(move |(data, origin)| {
                Ok(Batch {
                    data: data.map_err(|e| spill_error(&path, e))?,
                    origin,
                })
            }));
        }
        // The directory lives as long as the batches are read.
        let dir = disk.dir;
        Ok(Box::new(readers.into_iter().flatten().inspect(move |_| {
            let _ = &dir;
        })))
    }
}

impl Disk {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        let same = self
            .runs
            .last()
            .is_some_and(|r| r.schema == batch.data.schema());
        if !same || self.writer.is_none() {
            self.close()?;
            let path = self
                .dir
                .path()
                .join(format!("batches-{}.arrow", self.runs.len()));
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            let schema = batch.data.schema();
            let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)
                .map_err(|e| spill_error(&path, e))?;
            self.writer = Some(writer);
            self.runs.push(Run {
                path,
                schema,
                origins: Vec::new(),
            });
        }
        let run = self.runs.last_mut().expect("a run was just opened");
        let writer = self.writer.as_mut().expect("a writer was just opened");
        writer
            .write(&batch.data)
            .map_err(|e| spill_error(&run.path, e))?;
        run.origins.push(batch.origin.clone());
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let (Some(mut writer), Some(run)) = (self.writer.take(), self.runs.last()) {
            writer.finish().map_err(|e| spill_error(&run.path, e))?;
        }
        Ok(())
    }
}

/// An error reading or writing spill file `path`.
pub(super) fn spill_error(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!(
        "spill file {}: {e} (is the disk under $TMPDIR full? set TMPDIR to a local disk with room, or raise train.memory_budget)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(start: i64, n: i64, nullable: bool) -> Batch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, nullable),
            Field::new("s", DataType::Utf8, true),
        ]));
        let xs: Vec<i64> = (start..start + n).collect();
        let ss: Vec<String> = xs.iter().map(|x| format!("row {x}")).collect();
        Batch {
            data: RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(xs)),
                    Arc::new(StringArray::from(ss)),
                ],
            )
            .unwrap(),
            origin: Some(format!("part-{start}").into()),
        }
    }

    #[test]
    fn batches_come_back_in_order_with_their_origins_from_memory_and_from_disk() {
        let pushed: Vec<Batch> = (0..6).map(|i| batch(i * 100, 100, i == 4)).collect();
        for limit in [u64::MAX, 1] {
            let mut spool = Spool::new(limit, "spool-test");
            for b in &pushed {
                spool.push(b.clone()).unwrap();
            }
            assert_eq!(spool.rows(), 600);
            assert_eq!(spool.dir().is_some(), limit == 1);
            let dir = spool.dir().map(|d| d.path().to_path_buf());
            let back: Vec<Batch> = spool.drain().unwrap().map(|b| b.unwrap()).collect();
            assert_eq!(back.len(), pushed.len());
            for (a, b) in back.iter().zip(&pushed) {
                assert_eq!(
                    a.data, b.data,
                    "the same rows and schema (a nullable run too)"
                );
                assert_eq!(a.origin, b.origin);
            }
            if let Some(dir) = dir {
                assert!(!dir.exists(), "the spill files go once read back");
            }
        }
    }
}
