//! Data file paths as the log records them: percent-decoded relative paths and absolute URIs under the table root.

use super::*;

pub(super) enum PathProblem {
    /// An absolute URI outside the table root.
    Foreign,
    /// Not a usable path, and why.
    Invalid(String),
}

/// The object path of a logged data file path: relative paths are percent-decoded once and joined
/// to `root`; absolute URIs must lie under the table `url`.
pub(super) fn resolve_path(root: &Path, url: &str, logged: &str) -> Result<Path, PathProblem> {
    let decoded = percent_decode_str(logged)
        .decode_utf8()
        .map_err(|_| PathProblem::Invalid("is not UTF-8 once percent-decoded".into()))?;
    let relative = if uri_location(logged).is_some() {
        let (scheme, location) = uri_location(&decoded).ok_or(PathProblem::Foreign)?;
        let table_url = percent_decode_str(url).decode_utf8_lossy();
        let (table_scheme, table_location) = uri_location(&table_url)
            .or_else(|| {
                table_url
                    .starts_with('/')
                    .then(|| ("file".into(), table_url.to_string()))
            })
            .ok_or(PathProblem::Foreign)?;
        let relative = location
            .strip_prefix(table_location.trim_end_matches('/'))
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|_| scheme == table_scheme)
            .ok_or(PathProblem::Foreign)?;
        relative.to_string()
    } else {
        decoded.into_owned()
    };
    if relative
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(PathProblem::Invalid(
            "has an empty, `.` or `..` segment".into(),
        ));
    }
    let full = if root.as_ref().is_empty() {
        relative
    } else {
        format!("{root}/{relative}")
    };
    Path::parse(full).map_err(|e| PathProblem::Invalid(format!("is not a valid object path ({e})")))
}

/// `(scheme, location)` of an absolute URI: `s3://b/k` → ("s3", "b/k"), `file:///p` and `file:/p`
/// → ("file", "/p"); `s3a`/`s3n` count as `s3`. `None` when `uri` has no scheme.
pub(super) fn uri_location(uri: &str) -> Option<(String, String)> {
    let (scheme, rest) = uri.split_once(':')?;
    let valid = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "file" {
        let path = rest
            .strip_prefix("//localhost")
            .or_else(|| rest.strip_prefix("//"))
            .unwrap_or(rest);
        return path.starts_with('/').then(|| (scheme, path.to_string()));
    }
    let rest = rest.strip_prefix("//")?;
    let scheme = if matches!(scheme.as_str(), "s3a" | "s3n") {
        "s3".to_string()
    } else {
        scheme
    };
    Some((scheme, rest.to_string()))
}
