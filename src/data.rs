//! Generating the datasets a pipeline asks for (`[ingest.generate]`, `[evaluate.generate]`) and the
//! `millrace gen` command.

use std::path::Path;

use millrace_connectors::synthetic::tabular::{TabularReport, TabularSpec, generate};
use millrace_operators::spec::{GenerateSpec, PipelineSpec};

use crate::Result;

/// Generates the benchmark dataset of `shared/bench/TABULAR.md` into `out`.
pub fn generate_tabular(
    out: &Path,
    rows: u64,
    files: usize,
    seed: u64,
    holdout: bool,
) -> Result<TabularReport> {
    let spec = TabularSpec {
        rows,
        files,
        seed,
        holdout,
        row_group_rows: 65_536,
    };
    Ok(generate(&spec, out)?)
}

fn ensure(path: &Path, generate: &Option<GenerateSpec>) -> Result<()> {
    let Some(g) = generate else { return Ok(()) };
    if path.exists() {
        return Ok(());
    }
    tracing::info!(path = %path.display(), rows = g.rows, "generating the synthetic {} dataset", g.dataset);
    generate_tabular(path, g.rows, g.files, g.seed, g.holdout)?;
    Ok(())
}

/// Generates any dataset the pipeline asks for that does not exist yet.
pub fn prepare(spec: &PipelineSpec) -> Result<()> {
    ensure(&spec.ingest.path, &spec.ingest.generate)?;
    if let Some(path) = &spec.evaluate.path {
        ensure(path, &spec.evaluate.generate)?;
    }
    Ok(())
}
