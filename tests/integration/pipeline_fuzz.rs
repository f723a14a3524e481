//! Pipeline files and `--set` values, fuzzed (issue 14 §4): near-valid pipeline TOML (known
//! sections and keys with values of every type, hostile numbers and strings, unknown keys) and
//! byte-level mutations of it; `--set` lists of known and unknown keys with values of every
//! shape (TOML, bare words, newlines, brackets, `=`, unicode). Every input must give a spec
//! that passes its checks, or an error with a message (a parse error with its line and column
//! inside the text, a check that names its key); an applied `--set` must leave exactly its value
//! under its key.

use std::path::Path;

use millrace::pipeline_file::{PipelineFileError, apply_overrides, locate_error, parse};
use millrace_fuzz::json::regex;
use millrace_fuzz::proptest::collection::vec;
use millrace_fuzz::proptest::prelude::*;
use millrace_fuzz::{Fuzz, TestRunner, Verdict, drawn_and_mutated, pick};

const GOOD: &str = r#"name = "t"
[ingest]
path = "data/x"
[preprocess]
standardize = ["f0", "f1"]
one_hot = ["cat"]
label = "label"
[train]
model = { kind = "mlp", hidden = [8] }
lr = 0.01
epochs = 2
[evaluate]
split = 0.2
"#;

/// Known keys, by section ("" for the top level).
const KEYS: &[(&str, &[&str])] = &[
    ("", &["name"]),
    (
        "ingest",
        &[
            "path",
            "format",
            "batch_rows",
            "partition_filter",
            "wait_for_success",
            "success_timeout_s",
            "delta_version",
        ],
    ),
    (
        "ingest.generate",
        &["dataset", "rows", "files", "seed", "holdout"],
    ),
    (
        "preprocess",
        &[
            "sql",
            "standardize",
            "numeric",
            "one_hot",
            "index",
            "max_categories",
            "label",
            "nulls",
        ],
    ),
    (
        "train",
        &[
            "task",
            "model",
            "optimizer",
            "loss",
            "reduction",
            "lr",
            "batch_size",
            "epochs",
            "seed",
            "shuffle",
            "log_every",
            "device",
            "precision",
        ],
    ),
    ("train.model", &["kind", "hidden", "dropout"]),
    (
        "evaluate",
        &["path", "split", "split_seed", "split_key", "every_epoch"],
    ),
    (
        "output",
        &[
            "predictions",
            "columns",
            "partition_by",
            "evaluation",
            "mode",
            "compression",
        ],
    ),
    ("serve", &["addr", "max_rows", "device", "precision"]),
    ("storage", &["endpoint", "region", "allow_http"]),
    ("checkpoint", &["dir", "every_steps", "every_s", "keep"]),
    (
        "stream",
        &[
            "bootstrap_servers",
            "topic",
            "start",
            "format",
            "schema",
            "columns",
            "metadata_columns",
            "max_out_of_orderness",
            "late",
            "publish_every_s",
            "event_time",
            "poll_timeout_ms",
        ],
    ),
    ("stream.window", &["size"]),
];

/// A TOML value: of the type the key wants or not, ordinary or hostile.
fn value() -> BoxedStrategy<String> {
    let word = prop_oneof![
        4 => regex("[a-z0-9_]{0,8}"),
        1 => Just("mlp".to_owned()), 1 => Just("linear".to_owned()), 1 => Just("cuda".to_owned()),
        1 => Just("classification".to_owned()), 1 => Just("overwrite".to_owned()),
        1 => Just("earliest".to_owned()), 1 => Just("json".to_owned()), 1 => Just("tabular".to_owned()),
        1 => regex("[0-9]{1,4}(ms|s|m|h|d|us|ns|)"),
        1 => Just("1e999h".to_owned()), 1 => Just("-5s".to_owned()), 1 => Just("99999999999999999999s".to_owned()),
        1 => Just("127.0.0.1:8080".to_owned()), 1 => Just("[::1]:0".to_owned()),
        1 => any::<String>(),
    ];
    let scalar = prop_oneof![
        4 => word.prop_map(|w| format!("{w:?}")),
        2 => (-5i64..100).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => (-1.0f64..2.0).prop_map(|x| format!("{x:?}")),
        1 => prop::sample::select(vec![
            "nan", "inf", "-inf", "-0.0", "1e400", "0", "true", "false", "1979-05-27T07:32:00Z",
            "18446744073709551615", "0x7fffffff", "1_000", "'literal'", "'''multi\nline'''",
        ]).prop_map(str::to_owned),
    ];
    scalar
        .prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(", "))),
                vec((regex("[a-z_]{1,8}"), inner), 0..3).prop_map(|entries| {
                    let entries: Vec<String> = entries
                        .into_iter()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect();
                    format!("{{ {} }}", entries.join(", "))
                }),
            ]
        })
        .boxed()
}

/// A pipeline: the sections, each with some of its keys (sometimes an unknown one, sometimes
/// one twice), in the order drawn.
fn pipeline() -> BoxedStrategy<String> {
    let section = (0..KEYS.len(), vec((0..16usize, value()), 0..6));
    vec(section, 0..8)
        .prop_map(|sections| {
            let mut text = GOOD.to_owned();
            for (i, entries) in sections {
                let (name, keys) = KEYS[i];
                if !name.is_empty() {
                    text.push_str(&format!("[{name}]\n"));
                }
                for (k, value) in entries {
                    let key = keys.get(k).copied().unwrap_or("unknown_key");
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            text
        })
        .boxed()
}

/// A `--set` list: known dotted keys or odd ones, values TOML or not.
fn overrides() -> BoxedStrategy<Vec<String>> {
    let known: Vec<String> = KEYS
        .iter()
        .flat_map(|(section, keys)| {
            keys.iter().map(move |k| {
                if section.is_empty() {
                    (*k).to_owned()
                } else {
                    format!("{section}.{k}")
                }
            })
        })
        .collect();
    let key = prop_oneof![
        8 => prop::sample::select(known),
        1 => regex("[a-z.]{0,12}"),
        1 => prop::sample::select(vec!["", ".", "train..lr", "name.x", "train", " train.lr ", "ingest.path.x"]).prop_map(str::to_owned),
    ];
    let raw = prop_oneof![
        6 => value(),
        1 => regex("[a-z/._ -]{0,12}"),
        1 => prop::sample::select(vec![
            "", "=", "a=b", "1\nname = \"x\"", "0.5\n[ingest]\npath = \"evil\"", "[", "{", "\"unterminated",
            "# comment", "1 # comment", "[8] # hidden", "é💥", "\u{0}", "true false",
        ]).prop_map(str::to_owned),
    ];
    vec((key, raw, 0..8usize), 1..4)
        .prop_map(|sets| {
            sets.into_iter()
                .map(|(k, v, form)| match form {
                    0 => k,
                    _ => format!("{k}={v}"),
                })
                .collect()
        })
        .boxed()
}

/// What a parsed pipeline amounts to: a spec that passes its checks, or the error a user sees.
fn verdict(text: &str) -> Result<Verdict, String> {
    let lines = text.lines().count() + 1;
    match parse(text, Path::new("p.toml")) {
        Ok(spec) => match spec.validate() {
            Ok(()) => Ok(Verdict::Accepted),
            Err(e) => {
                let message = locate_error(Path::new("p.toml"), text, &e);
                if let millrace::operators::Error::Config { key, .. } = &e
                    && key.trim().is_empty()
                {
                    return Err(format!("a config error names no key: {message}"));
                }
                Ok(Verdict::Rejected(message))
            }
        },
        Err(PipelineFileError::Invalid {
            line,
            column,
            message,
            ..
        }) => {
            if line == 0 || line > lines || column == 0 || message.trim().is_empty() {
                return Err(format!(
                    "error at {line}:{column} of a {lines}-line text: {message:?}"
                ));
            }
            Ok(Verdict::Rejected(format!(
                "p.toml:{line}:{column}: {message}"
            )))
        }
        Err(other) => Err(format!("parse gave {other}")),
    }
}

#[test]
fn pipeline_files_fuzzed() {
    let counts = Fuzz::new("pipeline files").run(
        || drawn_and_mutated(pipeline(), 1, String::into_bytes),
        |bytes| verdict(&String::from_utf8_lossy(&bytes.0)),
    );
    let cases = counts.generated;
    assert!(
        counts.accepted > cases / 50 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}

/// The value an override `key=raw` must leave: `raw` read as one TOML value, or else as text.
fn expected_value(raw: &str) -> Result<toml::Value, String> {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut table) if table.len() == 1 => table.remove("v").ok_or_else(|| "no v".to_owned()),
        Ok(table) => Err(format!("applied a value of {} TOML keys", table.len())),
        Err(_) => Ok(toml::Value::String(raw.to_owned())),
    }
}

fn check_overrides(sets: &[String]) -> Result<Verdict, String> {
    let text = match apply_overrides(GOOD, sets) {
        Ok(text) => text,
        Err(PipelineFileError::Override(message)) if !message.trim().is_empty() => {
            return Ok(Verdict::Rejected(format!("--set {message}")));
        }
        Err(other) => return Err(format!("apply_overrides gave {other:?}")),
    };
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("the rewritten text does not parse: {e}"))?;
    // The last override of each key wins; a later one on a key's table or parent replaces it.
    for (i, set) in sets.iter().enumerate() {
        let Some((key, raw)) = set.split_once('=') else {
            return Err(format!("applied {set:?}, which has no '='"));
        };
        let parts: Vec<&str> = key.trim().split('.').collect();
        let overwritten = sets[i + 1..].iter().any(|later| {
            let later_key = later.split_once('=').map_or("", |(k, _)| k);
            let later_parts: Vec<&str> = later_key.trim().split('.').collect();
            let n = later_parts.len().min(parts.len());
            later_parts[..n] == parts[..n]
        });
        if overwritten {
            continue;
        }
        let mut at = Some(&doc);
        for part in &parts[..parts.len() - 1] {
            at = at
                .and_then(|t| t.get(*part))
                .and_then(toml::Value::as_table);
        }
        let got = at.and_then(|t| t.get(parts[parts.len() - 1]));
        let expected = expected_value(raw)?;
        // Compared as printed: NaN is not equal to itself.
        if format!("{got:?}") != format!("{:?}", Some(&expected)) {
            return Err(format!(
                "--set {set:?} left {got:?} under {key:?}, not {expected:?}"
            ));
        }
    }
    verdict(&text)
}

#[test]
fn set_values_fuzzed() {
    let counts = Fuzz::new("--set values").run(
        || {
            let strategy = overrides();
            move |runner: &mut TestRunner| pick(runner, &strategy)
        },
        |sets| check_overrides(sets),
    );
    let cases = counts.generated;
    // Most random overrides break the pipeline's checks; some must get through.
    assert!(
        counts.accepted > cases / 200 && counts.rejected > cases / 4,
        "{counts:?}"
    );
}
