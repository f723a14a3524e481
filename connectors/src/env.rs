//! Reading switches from the environment the way people and CI services write them.

/// Whether an environment value turns a switch on: anything but unset, empty, `0` or `false`
/// (in any case, surrounding spaces ignored). `CI=true`, `CI=1` and `CI=yes` all mean CI.
pub fn flag_value(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// Whether the environment variable `name` turns a switch on (see [`flag_value`]).
pub fn flag(name: &str) -> bool {
    flag_value(std::env::var(name).ok().as_deref())
}

/// Whether this runs under CI (`CI` turned on): the tests then fail, rather than skip, when a
/// service they need (Kafka, S3) is missing.
pub fn in_ci() -> bool {
    flag("CI")
}

#[cfg(test)]
mod tests {
    use super::flag_value;

    #[test]
    fn only_unset_empty_zero_and_false_are_off() {
        for off in [
            None,
            Some(""),
            Some("  "),
            Some("0"),
            Some("false"),
            Some("FALSE"),
            Some(" False "),
        ] {
            assert!(!flag_value(off), "{off:?} should be off");
        }
        for on in ["true", "TRUE", "1", "yes", "on", "woodpecker", "00"] {
            assert!(flag_value(Some(on)), "{on:?} should be on");
        }
    }
}
