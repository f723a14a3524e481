//! Compact tick labels (`0.5`, `20k`, `2.5M`, `1e-3`) with just enough decimals for the step
//! between ticks (1, 2 or 5 × 10^k, as plotters places them).

/// A tick step written as `mantissa × 10^exponent`, with mantissa 1, 2 or 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    mantissa: i64,
    exponent: i32,
}

impl Step {
    fn value(self) -> f64 {
        scaled(self.mantissa as f64, self.exponent)
    }
}

/// `m × 10^e`, dividing for negative exponents so decimal values round correctly.
fn scaled(m: f64, e: i32) -> f64 {
    if e >= 0 {
        m * 10f64.powi(e)
    } else {
        m / 10f64.powi(-e)
    }
}

/// Picks a 1/2/5 × 10^k step that splits `span` into roughly `target` intervals.
fn nice_step(span: f64, target: usize) -> Option<Step> {
    if !span.is_finite() || span <= 0.0 {
        return None;
    }
    let rough = span / target.max(1) as f64;
    let exponent = rough.log10().floor() as i32;
    let normalized = rough / scaled(1.0, exponent);
    let (mantissa, exponent) = if normalized < 1.5 {
        (1, exponent)
    } else if normalized < 3.0 {
        (2, exponent)
    } else if normalized < 7.0 {
        (5, exponent)
    } else {
        (1, exponent + 1)
    };
    Some(Step { mantissa, exponent })
}

/// The 1/2/5 × 10^k step that splits `span` into about `target` intervals, as a number (the
/// span itself when it is empty or not finite): what [`format_tick`] resolves labels to.
pub(crate) fn label_step(span: f64, target: usize) -> f64 {
    nice_step(span, target).map_or(span, Step::value)
}

/// Formats a tick value compactly, with just enough decimals to tell ticks `step` apart:
/// `0.5`, `1k`, `2.5M`, `1e-3`.
///
/// ```
/// use millrace::curves::format_tick;
/// assert_eq!(format_tick(0.6000000000000001, 0.2), "0.6");
/// assert_eq!(format_tick(2500.0, 500.0), "2.5k");
/// assert_eq!(format_tick(2_500_000.0, 500_000.0), "2.5M");
/// assert_eq!(format_tick(0.001, 0.001), "1e-3");
/// ```
pub fn format_tick(value: f64, step: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let step = if step.is_finite() && step > 0.0 {
        step
    } else {
        value.abs().max(1.0)
    };
    let step_exp = step.log10().floor() as i32;
    let magnitude = value.abs();
    if magnitude < step * 1e-6 {
        return "0".to_string();
    }
    if !(1e-2..1e15).contains(&magnitude) {
        return format_scientific(value, step);
    }
    const SUFFIXES: [(f64, i32, &str); 4] =
        [(1e12, 12, "T"), (1e9, 9, "G"), (1e6, 6, "M"), (1e3, 3, "k")];
    for (scale, scale_exp, suffix) in SUFFIXES {
        let decimals = (scale_exp - step_exp).max(0);
        if magnitude >= scale && decimals <= 2 {
            return format!("{}{suffix}", fixed(value / scale, decimals));
        }
    }
    fixed(value, (-step_exp).clamp(0, 12))
}

/// `m e k` notation such as `2.5e-4`, with enough mantissa decimals to resolve `step`.
fn format_scientific(value: f64, step: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format_tick(value, step);
    }
    let exponent = value.abs().log10().floor() as i32;
    let mantissa = value / scaled(1.0, exponent);
    let step_exp = if step.is_finite() && step > 0.0 {
        step.log10().floor() as i32
    } else {
        exponent
    };
    let decimals = (exponent - step_exp).clamp(0, 3);
    let text = fixed(mantissa, decimals);
    // Rounding can carry the mantissa to 10 (9.99 → "10"); renormalise.
    if text.trim_start_matches('-') == "10" {
        let sign = if value < 0.0 { "-" } else { "" };
        return format!("{sign}1e{}", exponent + 1);
    }
    format!("{text}e{exponent}")
}

/// Fixed-point with at most `decimals` decimals, trailing zeros trimmed, never `-0`.
fn fixed(value: f64, decimals: i32) -> String {
    let mut text = format!("{:.*}", decimals.max(0) as usize, value);
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if text == "-0" {
        text = "0".to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(label_step(1.0, 5), 0.2);
        assert_eq!(label_step(2300.0, 5), 500.0);
        assert_eq!(label_step(0.003, 6), 0.0005);
        assert_eq!(label_step(0.0, 5), 0.0);
    }

    #[test]
    fn labels_resolve_the_step() {
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(1500.0, 500.0), "1.5k");
        assert_eq!(format_tick(-2e-4, 1e-4), "-2e-4");
        assert_eq!(format_tick(0.0, 0.2), "0");
    }
}
