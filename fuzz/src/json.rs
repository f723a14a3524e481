//! A grammar of near-valid JSON: documents built as a tree and rendered as text, so numbers keep
//! the exact spelling drawn (huge, tiny, `-0`, f32 rounding midpoints, `NaN`), strings may hold
//! any escape (lone surrogates included), and objects may repeat a key.

use proptest::collection::vec;
use proptest::prelude::*;

/// A JSON document to render with [`Json::text`].
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, spelled as given (which may not be valid JSON: `NaN`, `1.`).
    Num(String),
    /// A string: the text between the quotes, as given (escapes are not added).
    Str(String),
    /// A list.
    Arr(Vec<Json>),
    /// An object; keys are escaped, and may repeat.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// A string holding exactly `text` (escaped as JSON needs).
    pub fn string(text: &str) -> Json {
        Json::Str(escape(text))
    }

    /// The JSON text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Obj(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push('"');
                    out.push_str(&escape(key));
                    out.push_str("\": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `text` escaped for the inside of a JSON string.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A string strategy for the regex `pattern`, parsed once (a `&str` used as a strategy parses
/// its regex again for every value drawn).
pub fn regex(pattern: &str) -> BoxedStrategy<String> {
    match proptest::string::string_regex(pattern) {
        Ok(strategy) => strategy.boxed(),
        Err(e) => panic!("bad regex {pattern:?}: {e}"),
    }
}

/// A decimal just past the midpoint between two neighbouring f32 values: parsed straight to f32
/// it rounds one way, parsed to f64 and then narrowed it may round the other.
fn f32_midpoint() -> impl Strategy<Value = String> {
    (1u32..0x7f00_0000, any::<bool>()).prop_map(|(bits, negative)| {
        let low = f64::from(f32::from_bits(bits));
        let high = f64::from(f32::from_bits(bits + 1));
        let mid = format!("{:e}", (low + high) / 2.0);
        let (mantissa, exponent) = mid.split_once('e').unwrap_or((&mid, "0"));
        let dot = if mantissa.contains('.') { "" } else { "." };
        let sign = if negative { "-" } else { "" };
        format!("{sign}{mantissa}{dot}000000000001e{exponent}")
    })
}

/// Numbers: ordinary, extreme and broken spellings.
pub fn number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (-1_000i64..1_000).prop_map(|n| n.to_string()),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        3 => (-1e6f64..1e6).prop_map(|x| x.to_string()),
        2 => any::<f32>().prop_filter_map("finite", |x| x.is_finite().then(|| format!("{x:e}"))),
        1 => any::<f64>().prop_filter_map("finite", |x| x.is_finite().then(|| format!("{x:e}"))),
        2 => regex("-?[0-9]{1,25}(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?"),
        2 => f32_midpoint(),
        1 => prop::sample::select(vec![
            "NaN", "-Infinity", "1e999", "-1e400", "1e-400", "-0", "-0.0", "1.", ".5", "01",
            "+1", "0x10", "1e", "3.4028236e38", "18446744073709551616",
            "-9223372036854775809", "9007199254740993", "2.0", "1E2",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// String bodies (the text between the quotes): plain, unicode, escapes valid and not, long.
pub fn string() -> BoxedStrategy<String> {
    prop_oneof![
        6 => regex("[a-z0-9_ ]{0,12}"),
        2 => any::<String>().prop_map(|s| escape(&s)),
        2 => prop::sample::select(vec![
            "", "\\u0000", "\\ud800", "\\udc00x", "\\uD83D\\uDE00", "\\\"", "\\n\\t", "\\/",
            "\\x41", "\\u12", "é💥\u{202e}", "2024-05-01T12:00:00Z", "2024-05-01 12:00:00.5",
            "2024-02-30", "1970-01-01", "nan", "1.5", "true",
        ])
        .prop_map(str::to_owned),
        1 => (1usize..3_000).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}

/// Object keys: mostly short words.
pub fn key() -> BoxedStrategy<String> {
    prop_oneof![4 => regex("[a-z_]{0,6}"), 1 => any::<String>()].boxed()
}

/// A scalar value of any type.
pub fn scalar() -> BoxedStrategy<Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number().prop_map(Json::Num),
        string().prop_map(Json::Str),
    ]
    .boxed()
}

/// Any value: scalars, and lists and objects nested a few levels.
pub fn value() -> BoxedStrategy<Json> {
    scalar()
        .prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Json::Arr),
                vec((key(), inner), 0..5).prop_map(Json::Obj),
            ]
        })
        .boxed()
}

/// What a field should hold, for [`cell`] and [`record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// A string.
    Text,
    /// `true` / `false`.
    Bool,
    /// An integer or a date-time string.
    Timestamp,
    /// An integer or a `YYYY-MM-DD` string.
    Date,
}

/// A valid value of `kind`: what a well-behaved client sends.
fn valid(kind: Cell) -> BoxedStrategy<Json> {
    let num = |n: i64| Json::Num(n.to_string());
    match kind {
        Cell::Number => prop_oneof![
            2 => (-100i64..100).prop_map(num),
            2 => (-1e6f32..1e6).prop_map(|x| Json::Num(x.to_string())),
            1 => (-1e6f64..1e6).prop_map(|x| Json::Num(format!("{x:e}"))),
        ]
        .boxed(),
        Cell::Integer => (0i64..100).prop_map(num).boxed(),
        Cell::Text => prop_oneof![
            4 => regex("[a-z0-9_ ]{0,12}").prop_map(Json::Str),
            1 => regex("[ -~é✓💥]{0,6}").prop_map(|s| Json::string(&s)),
        ]
        .boxed(),
        Cell::Bool => any::<bool>().prop_map(Json::Bool).boxed(),
        Cell::Timestamp => prop_oneof![
            1 => (-1_000_000_000_000i64..1_000_000_000_000).prop_map(num),
            2 => (1970u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60, 0usize..4)
                .prop_map(|(y, mo, d, h, mi, s, form)| {
                    let zone = ["Z", "+02:00", "", ".5Z"][form];
                    let sep = if form == 2 { ' ' } else { 'T' };
                    Json::Str(format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{zone}"))
                }),
        ]
        .boxed(),
        Cell::Date => prop_oneof![
            1 => (-100_000i64..100_000).prop_map(num),
            2 => (1900u32..2100, 1u32..13, 1u32..29)
                .prop_map(|(y, m, d)| Json::Str(format!("{y:04}-{m:02}-{d:02}"))),
        ]
        .boxed(),
    }
}

/// A value of `kind` a decoder should think twice about: extreme, malformed or out of range.
fn hostile(kind: Cell) -> BoxedStrategy<Json> {
    match kind {
        Cell::Number | Cell::Integer => prop_oneof![
            1 => any::<i64>().prop_map(|n| Json::Num(n.to_string())),
            1 => (-300i64..300).prop_map(|n| Json::Num(format!("{n}.0"))),
            3 => number().prop_map(Json::Num),
        ]
        .boxed(),
        Cell::Text => string().prop_map(Json::Str).boxed(),
        Cell::Bool => prop::sample::select(vec!["0", "1", "\"true\"", "True"])
            .prop_map(|t| Json::Num(t.to_owned()))
            .boxed(),
        Cell::Timestamp => prop_oneof![
            1 => any::<i64>().prop_map(|n| Json::Num(n.to_string())),
            1 => regex("[0-9]{4}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,10})?(Z|[+-][01][0-9]:[0-5][0-9])?")
                .prop_map(Json::Str),
            1 => number().prop_map(Json::Num),
        ]
        .boxed(),
        Cell::Date => prop_oneof![
            1 => any::<i64>().prop_map(|n| Json::Num(n.to_string())),
            1 => regex("[0-9]{4}-[01][0-9]-[0-3][0-9]").prop_map(Json::Str),
            1 => regex("[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}").prop_map(Json::Str),
        ]
        .boxed(),
    }
}

/// Mostly a valid value of the kind, sometimes a hostile one, null, or anything.
pub fn cell(kind: Cell) -> BoxedStrategy<Json> {
    prop_oneof![
        60 => valid(kind),
        4 => hostile(kind),
        1 => Just(Json::Null),
        1 => value(),
    ]
    .boxed()
}

/// An object with the named fields, each mostly present once (sometimes missing, sometimes
/// twice), plus now and then an unknown key, in schema order or shuffled.
pub fn record(fields: &[(&str, Cell)]) -> BoxedStrategy<Json> {
    let per_field: Vec<BoxedStrategy<Vec<(String, Json)>>> = fields
        .iter()
        .map(|&(name, kind)| {
            let name = name.to_owned();
            (
                prop_oneof![1 => Just(0usize), 60 => Just(1), 1 => Just(2)],
                vec(cell(kind), 2),
            )
                .prop_map(move |(n, values)| {
                    values
                        .into_iter()
                        .take(n)
                        .map(|v| (name.clone(), v))
                        .collect()
                })
                .boxed()
        })
        .collect();
    (
        per_field,
        prop_oneof![6 => Just(vec![]), 1 => vec((key(), value()), 1..3)],
        any::<bool>(),
    )
        .prop_flat_map(|(fields, extra, shuffle)| {
            let entries: Vec<(String, Json)> = fields.into_iter().flatten().chain(extra).collect();
            if shuffle {
                Just(entries).prop_shuffle().boxed()
            } else {
                Just(entries).boxed()
            }
        })
        .prop_map(Json::Obj)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick;
    use proptest::test_runner::TestRunner;

    #[test]
    fn renders_json_text() {
        let doc = Json::Obj(vec![
            (
                "a\"b".into(),
                Json::Arr(vec![Json::Num("1".into()), Json::Null]),
            ),
            ("c".into(), Json::string("x\ny")),
        ]);
        assert_eq!(doc.text(), r#"{"a\"b": [1,null], "c": "x\u000ay"}"#);
    }

    #[test]
    fn records_are_mostly_valid_json_with_the_fields() {
        let mut runner = TestRunner::deterministic();
        let strategy = record(&[("x", Cell::Number), ("s", Cell::Text)]);
        let texts: Vec<String> = (0..500)
            .map(|_| pick(&mut runner, &strategy).text())
            .collect();
        let parsed = texts
            .iter()
            .filter(|t| t.starts_with('{') && t.contains("\"x\""))
            .count();
        assert!(parsed > 400, "{parsed} of 500 name x");
        let midpoint = pick(&mut runner, f32_midpoint());
        assert!(midpoint.contains("000000000001e"), "{midpoint}");
    }
}
