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
    generate_tabular_with_entities(out, rows, files, seed, holdout, 0)
}

/// [`generate_tabular`], with an `entity` column of `entities` entities whose own effects enter
/// the label (0: none; see `TabularSpec::entities`).
pub fn generate_tabular_with_entities(
    out: &Path,
    rows: u64,
    files: usize,
    seed: u64,
    holdout: bool,
    entities: u64,
) -> Result<TabularReport> {
    let spec = TabularSpec {
        rows,
        files,
        seed,
        holdout,
        row_group_rows: 65_536,
        entities,
    };
    Ok(generate(&spec, out)?)
}

fn ensure(path: &Path, generate: &Option<GenerateSpec>, key: &str) -> Result<()> {
    let Some(g) = generate else { return Ok(()) };
    let text = path.to_string_lossy();
    if text.contains("://") && !text.starts_with("file://") {
        return Err(crate::Error::Pipeline(millrace_operators::Error::config(
            key,
            format!(
                "can only generate data at a local path, not at `{text}`; generate locally and upload"
            ),
        )));
    }
    let path = Path::new(text.strip_prefix("file://").unwrap_or(&text));
    if path.exists() {
        return Ok(());
    }
    tracing::info!(path = %path.display(), rows = g.rows, "generating the synthetic {} dataset", g.dataset);
    generate_tabular_with_entities(path, g.rows, g.files, g.seed, g.holdout, g.entities)?;
    Ok(())
}

/// Generates any dataset the pipeline asks for that does not exist yet.
pub fn prepare(spec: &PipelineSpec) -> Result<()> {
    ensure(&spec.ingest.path, &spec.ingest.generate, "ingest.generate")?;
    if let Some(path) = &spec.evaluate.path {
        ensure(path, &spec.evaluate.generate, "evaluate.generate")?;
    }
    Ok(())
}
