//! Pipeline files: TOML that maps one to one onto [`PipelineSpec`]. Every error names the key, the
//! line and the column, before any work starts.

use std::path::{Path, PathBuf};

use millrace_operators::spec::PipelineSpec;

/// A pipeline file that could not be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Bad TOML, an unknown key or a value of the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, from the TOML parser and serde (names the key).
        message: String,
    },
    /// A `--set key=value` override that does not apply.
    #[error("--set {0}")]
    Override(String),
}

/// 1-based (line, column) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

/// The (line, column) where dotted `key` (e.g. `train.lr`) is set in a TOML text, or where its
/// table starts; `None` if the key does not appear.
pub fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut table: Vec<String> = Vec::new();
    let mut table_line: Option<(usize, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let indent = raw.len() - line.len();
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            table = name.split('.').map(|s| s.trim().to_string()).collect();
            if parts.len() > table.len()
                && parts[..table.len()].iter().zip(&table).all(|(a, b)| a == b)
                || parts == table
            {
                table_line.get_or_insert((i + 1, indent + 1));
            }
            if parts == table {
                return Some((i + 1, indent + 1));
            }
            continue;
        }
        let Some((k, value)) = line.split_once('=') else {
            continue;
        };
        let mut full = table.clone();
        full.extend(
            k.trim()
                .split('.')
                .map(|s| s.trim().trim_matches('"').to_string()),
        );
        if full == parts {
            return Some((i + 1, indent + 1));
        }
        // A key inside an inline table on this line: `model = { kind = "x", hiden = [8] }`.
        if parts.len() == full.len() + 1
            && parts[..full.len()] == full[..]
            && let Some(at) = inline_key(value, parts[full.len()])
        {
            return Some((i + 1, raw.len() - value.len() + at + 1));
        }
    }
    table_line
}

/// The byte offset in `inline` (the text after `=`) of `key` as a key of an inline table.
fn inline_key(inline: &str, key: &str) -> Option<usize> {
    if !inline.trim_start().starts_with('{') {
        return None;
    }
    let mut from = 0;
    while let Some(found) = inline[from..].find(key) {
        let at = from + found;
        let before = inline[..at].trim_end();
        let after = inline[at + key.len()..].trim_start();
        if (before.ends_with('{') || before.ends_with(',')) && after.starts_with('=') {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

/// The message of a check that failed on a parsed pipeline ([`PipelineSpec::validate`]),
/// prefixed with `path:line:column` of the key it names when the text sets that key.
pub fn locate_error(path: &Path, text: &str, e: &millrace_operators::Error) -> String {
    if let millrace_operators::Error::Config { key, .. } = e
        && let Some((line, col)) = locate_key(text, key)
    {
        return format!("{}:{line}:{col}: {e}", path.display());
    }
    e.to_string()
}

/// Reads and checks a pipeline file, applying `--set section.key=value` overrides (values are TOML:
/// `train.lr=0.01`, `ingest.path="data/x"`; a bare word is taken as a string).
pub fn load(
    path: &Path,
    overrides: &[String],
) -> Result<(PipelineSpec, String), PipelineFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PipelineFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = apply_overrides(&text, overrides)?;
    let spec = parse(&text, path)?;
    Ok((spec, text))
}

/// Parses pipeline TOML (`path` is only used in messages).
pub fn parse(text: &str, path: &Path) -> Result<PipelineSpec, PipelineFileError> {
    toml::from_str::<PipelineSpec>(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        PipelineFileError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }
    })
}

/// Rewrites the TOML text with each `key=value` override applied (the result is what is run and
/// what the run directory keeps).
pub fn apply_overrides(text: &str, overrides: &[String]) -> Result<String, PipelineFileError> {
    if overrides.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| {
        PipelineFileError::Override(format!(
            "cannot apply: the file does not parse: {}",
            e.message()
        ))
    })?;
    for o in overrides {
        let (key, value) = o.split_once('=').ok_or_else(|| {
            PipelineFileError::Override(format!("'{o}': expected section.key=value"))
        })?;
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) if t.len() == 1 => t
                .remove("v")
                .unwrap_or(toml::Value::String(value.to_string())),
            // `1\nname = "x"`: more than the one value (the rest was dropped without a word).
            Ok(_) => {
                return Err(PipelineFileError::Override(format!(
                    "'{o}': the value holds more than one TOML value (a newline?); quote it to \
                     set a string"
                )));
            }
            Err(_) => toml::Value::String(value.to_string()),
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        let (last, tables) = parts
            .split_last()
            .ok_or_else(|| PipelineFileError::Override(format!("'{o}': empty key")))?;
        let mut table = &mut doc;
        for part in tables {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| {
                PipelineFileError::Override(format!("'{o}': '{part}' is not a table"))
            })?;
        }
        table.insert(last.to_string(), value);
    }
    toml::to_string(&doc).map_err(|e| PipelineFileError::Override(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[ingest]
path = "data/x"
[preprocess]
standardize = ["f0"]
label = "label"
[train]
model = { kind = "mlp", hidden = [8] }
lr = 0.01
"#;

    #[test]
    fn parses_and_overrides() {
        let spec = parse(GOOD, Path::new("p.toml")).unwrap();
        assert_eq!(spec.train.lr, 0.01);
        let text = apply_overrides(
            GOOD,
            &[
                "train.lr=0.5".into(),
                "ingest.path=other".into(),
                "train.epochs=3".into(),
            ],
        )
        .unwrap();
        let spec = parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(spec.train.lr, 0.5);
        assert_eq!(spec.train.epochs, 3);
        assert_eq!(spec.ingest.path, PathBuf::from("other"));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_line_and_column() {
        let bad = GOOD.replace("lr = 0.01", "lr = 0.01\nlearning_rate = 3");
        let err = parse(&bad, Path::new("p.toml")).unwrap_err().to_string();
        assert!(
            err.starts_with("p.toml:11:1: unknown field `learning_rate`"),
            "{err}"
        );
        let bad = GOOD.replace("lr = 0.01", "lr = \"fast\"");
        let err = parse(&bad, Path::new("p.toml")).unwrap_err().to_string();
        assert!(
            err.starts_with("p.toml:10:6: invalid type: string \"fast\", expected f64"),
            "{err}"
        );
    }

    #[test]
    fn an_override_sets_one_value() {
        // Found by the --set fuzz test: the value was read as a TOML document and only its
        // first key kept, so the rest of a value with a newline vanished without a word.
        let err = apply_overrides(GOOD, &["train.lr=0.5\n[ingest]\npath = \"evil\"".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--set 'train.lr=0.5\n[ingest]\npath = \"evil\"': the value holds more than one TOML value"),
            "{err}"
        );
        let text = apply_overrides(GOOD, &["train.lr=0.5 # a comment".into()]).unwrap();
        assert_eq!(parse(&text, Path::new("p.toml")).unwrap().train.lr, 0.5);
    }

    #[test]
    fn locates_keys() {
        assert_eq!(locate_key(GOOD, "train.lr"), Some((10, 1)));
        assert_eq!(locate_key(GOOD, "preprocess.standardize"), Some((6, 1)));
        assert_eq!(locate_key(GOOD, "train.batch_size"), Some((8, 1)));
        assert_eq!(locate_key(GOOD, "nope.x"), None);
    }
}
