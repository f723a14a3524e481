//! Where a streaming job's closed windows go: `windows.jsonl` in the run directory (one JSON
//! object per window and key) and optionally a topic. Worker 0 writes them, after merging the
//! workers' partial aggregates of each window.
//!
//! Windows are exactly once with respect to the input (their open state is in every checkpoint);
//! their output is at least once: a window closed after the last checkpoint and written before a
//! crash is written again after the restart.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use millrace_connectors::kafka::{KafkaOptions, KafkaProducer};
use millrace_engine::row_to_json;

use crate::streaming::window::{WindowResult, Windower, merge_all};
use crate::{Error, Result};

/// Worker 0's writer of window results.
pub(crate) struct WindowOutput {
    file: BufWriter<File>,
    path: PathBuf,
    topic: Option<(KafkaProducer, String)>,
    /// Windows written.
    pub(crate) written: u64,
}

impl WindowOutput {
    pub(crate) fn new(path: PathBuf, topic: Option<&str>, options: &KafkaOptions) -> Result<Self> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let topic = match topic {
            Some(t) => Some((KafkaProducer::new(options, true)?, t.to_string())),
            None => None,
        };
        Ok(WindowOutput {
            file: BufWriter::new(file),
            path,
            topic,
            written: 0,
        })
    }

    /// Merges the workers' partial results and writes each window once.
    pub(crate) fn write(
        &mut self,
        windower: &Windower,
        parts: Vec<Vec<WindowResult>>,
    ) -> Result<()> {
        if parts.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let merged = merge_all(parts);
        let batch = windower.to_batch(&merged)?;
        for row in 0..batch.num_rows() {
            let Some(line) = row_to_json(&batch, row) else {
                continue;
            };
            writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))?;
            if let Some((producer, topic)) = &self.topic {
                producer.send(topic, None, line.as_bytes(), &[])?;
            }
            self.written += 1;
        }
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    pub(crate) fn flush(&self) -> Result<()> {
        if let Some((producer, _)) = &self.topic {
            producer.flush(std::time::Duration::from_secs(60))?;
        }
        Ok(())
    }
}
