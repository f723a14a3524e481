//! Byte-level mutations of valid inputs.

use proptest::test_runner::TestRunner;

use crate::below;

/// Tokens that break decoders: hostile numbers, NaN and infinities, structure characters, escapes
/// and unicode (valid and not), empty and huge strings.
pub const INTERESTING: &[&[u8]] = &[
    b"NaN",
    b"-Infinity",
    b"Infinity",
    b"nan",
    b"inf",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"-0",
    b"-0.0",
    b"0.1e",
    b"1.",
    b"01",
    b"+1",
    b"9007199254740993",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"9223372036854775807",
    b"340282366920938463463374607431768211456",
    b"3.4028236e38",
    b"1.401298464324817e-45",
    b"2147483648",
    b"99999999999999999999999999999999999999999999999999999999999999999999999999",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\n",
    b"'",
    b"#",
    b"null",
    b"true",
    b"false",
    b"\"\"",
    b"{}",
    b"[]",
    b"[[]]",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\\udc00\\ud800\"",
    b"\"\\uD83D\\uDE00\"",
    b"\\u",
    "é".as_bytes(),
    "💥".as_bytes(),
    "\u{202e}".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"\t",
    b"\r\n",
    b"1970-01-01",
    b"2024-02-30",
    b"\"2024-05-01T12:00:00Z\"",
    b"\"9999-12-31T23:59:59.999999999+14:00\"",
    b"\"-262143-01-01\"",
];

/// `valid` with one to four random mutations: truncation, a flipped bit, a random byte, an
/// [`INTERESTING`] token inserted, a span deleted, duplicated (a key given twice) or repeated,
/// deep nesting inserted, or everything dropped.
pub fn mutate(runner: &mut TestRunner, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for _ in 0..=below(runner, 4) {
        mutate_once(runner, &mut bytes);
    }
    bytes
}

fn mutate_once(runner: &mut TestRunner, bytes: &mut Vec<u8>) {
    let len = bytes.len();
    let at = below(runner, len + 1);
    match below(runner, 12) {
        0 => bytes.truncate(at),
        1 if len > 0 => {
            let i = below(runner, len);
            bytes[i] ^= 1 << below(runner, 8);
        }
        2 if len > 0 => {
            let i = below(runner, len);
            bytes[i] = below(runner, 256) as u8;
        }
        3..=5 => {
            let token = INTERESTING[below(runner, INTERESTING.len())];
            insert(bytes, at, token);
        }
        6 if len > 0 => {
            let end = (at + 1 + below(runner, 16)).min(len);
            bytes.drain(at.min(end)..end).for_each(drop);
        }
        7 | 8 if len > 0 => {
            // A span copied next to itself: `"a": 1, "a": 1` (duplicate keys), repeated tensors.
            let start = below(runner, len);
            let end = (start + 1 + below(runner, 64)).min(len);
            let span = bytes[start..end].to_vec();
            insert(bytes, end, &span);
        }
        9 if len > 0 => {
            // A span repeated many times: long strings, big arrays.
            let start = below(runner, len);
            let end = (start + 1 + below(runner, 8)).min(len);
            let span = bytes[start..end].repeat(16 + below(runner, 256));
            insert(bytes, end, &span);
        }
        10 => {
            let depth = 1 + below(runner, 400);
            let open: &[u8] = match below(runner, 3) {
                0 => b"[",
                1 => b"{\"a\":",
                _ => b"[{\"x\":",
            };
            insert(bytes, at, &open.repeat(depth));
        }
        11 if below(runner, 8) == 0 => bytes.clear(),
        _ => bytes.insert(at, below(runner, 256) as u8),
    }
}

fn insert(bytes: &mut Vec<u8>, at: usize, what: &[u8]) {
    let tail = bytes.split_off(at);
    bytes.extend_from_slice(what);
    bytes.extend_from_slice(&tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng};

    #[test]
    fn mutations_change_the_input_in_every_way() {
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[1; 32]),
        );
        let valid = br#"{"instances": [{"x": 1.5, "c": "a"}]}"#;
        let outs: Vec<Vec<u8>> = (0..2_000).map(|_| mutate(&mut runner, valid)).collect();
        let changed = outs.iter().filter(|o| o.as_slice() != valid).count();
        assert!(changed > 1_800, "{changed} of 2000 changed");
        assert!(outs.iter().any(|o| o.len() < valid.len()), "truncated");
        assert!(outs.iter().any(|o| o.len() > valid.len() + 1_000), "grown");
        assert!(
            outs.iter().any(|o| std::str::from_utf8(o).is_err()),
            "not UTF-8"
        );
        assert!(outs.iter().any(|o| o.is_empty()), "empty");
    }
}
