//! The v2 JSON response of the fast path, written directly.

/// The JSON of an inference response with every output (what `response_outputs` and
/// `InferenceResponse` give for a request without `outputs`), written directly; `None` when the
/// predictions do not fit the model's shape (the general path reports that).
pub(crate) fn response(
    model_name: &str,
    version: u64,
    id: Option<&str>,
    predictions: &[f32],
    rows: usize,
    num_classes: Option<usize>,
    class_names: Option<&[String]>,
) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let width = num_classes.unwrap_or(1);
    if width == 0 || rows.checked_mul(width) != Some(predictions.len()) {
        return None;
    }
    let mut out = Vec::with_capacity(128 + predictions.len() * 12);
    let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).ok();
    out.extend_from_slice(b"{\"model_name\":");
    string(&mut out, model_name)?;
    write!(out, ",\"model_version\":\"{version}\"").ok()?;
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        string(&mut out, id)?;
    }
    out.extend_from_slice(b",\"outputs\":[");
    let number = |out: &mut Vec<u8>, v: f32| {
        if v.is_finite() {
            write!(out, "{v}").ok()
        } else {
            out.extend_from_slice(b"null");
            Some(())
        }
    };
    if num_classes.is_some() {
        let datatype = if class_names.is_some() {
            "BYTES"
        } else {
            "INT64"
        };
        write!(
            out,
            "{{\"name\":\"class\",\"shape\":[{rows}],\"datatype\":\"{datatype}\",\"data\":["
        )
        .ok()?;
        for (i, row) in predictions.chunks(width).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let best = crate::serve::argmax(row);
            match class_names {
                Some(names) => string(&mut out, names.get(best)?)?,
                None => write!(out, "{best}").ok()?,
            }
        }
        write!(out, "]}},{{\"name\":\"probabilities\",\"shape\":[{rows},{width}],\"datatype\":\"FP32\",\"data\":[").ok()?;
    } else {
        write!(
            out,
            "{{\"name\":\"value\",\"shape\":[{rows}],\"datatype\":\"FP32\",\"data\":["
        )
        .ok()?;
    }
    for (i, v) in predictions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        number(&mut out, *v)?;
    }
    out.extend_from_slice(b"]}]}");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::v2::{InferenceResponse, response_outputs};

    /// The direct writer gives the same JSON value as the general path.
    #[test]
    fn matches_the_general_response() {
        let names = vec!["no".to_string(), "yes\"q".to_string()];
        for (predictions, rows, classes, class_names, id) in [
            (vec![0.2f32, 0.8, 0.6, 0.4], 2, Some(2), None, None),
            (
                vec![0.2f32, 0.8],
                1,
                Some(2),
                Some(names.as_slice()),
                Some("r-1"),
            ),
            (vec![1.5f32, f32::NAN, -0.1], 3, None, None, None),
        ] {
            let fast = response("m", 3, id, &predictions, rows, classes, class_names).unwrap();
            let general = InferenceResponse {
                model_name: "m".into(),
                model_version: Some("3".into()),
                id: id.map(str::to_string),
                parameters: None,
                outputs: response_outputs(&predictions, rows, classes, class_names, None).unwrap(),
            };
            let fast: serde_json::Value = serde_json::from_slice(&fast).unwrap();
            assert_eq!(fast, serde_json::to_value(&general).unwrap());
        }
        assert!(response("m", 1, None, &[0.1], 1, Some(2), None).is_none());
    }
}
