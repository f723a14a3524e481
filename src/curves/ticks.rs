//! "Nice" axis ticks (1, 2 or 5 × 10^k apart) and compact tick labels.

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

    /// The `i`-th multiple of the step, computed so that e.g. `3 × 0.2` prints as `0.6`.
    fn multiple(self, i: i64) -> f64 {
        scaled((i * self.mantissa) as f64, self.exponent)
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

/// Tick values inside `[min, max]`, spaced by a "nice" step (1, 2 or 5 × 10^k) chosen so there
/// are about `target` intervals.
///
/// Returns an empty vector when the range is not finite, and `[min]` when `min == max`.
///
/// ```
/// use millrace::curves::nice_ticks;
/// assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
/// assert_eq!(nice_ticks(0.0, 2300.0, 5), vec![0.0, 500.0, 1000.0, 1500.0, 2000.0]);
/// ```
pub fn nice_ticks(min: f64, max: f64, target: usize) -> Vec<f64> {
    ticks_with_step(min, max, target)
        .map(|(ticks, _)| ticks)
        .unwrap_or_else(|| {
            if min.is_finite() && min == max {
                vec![min]
            } else {
                Vec::new()
            }
        })
}

/// Ticks plus the step between them, or `None` for an empty or non-finite range.
pub(crate) fn ticks_with_step(min: f64, max: f64, target: usize) -> Option<(Vec<f64>, f64)> {
    let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
    let step = nice_step(hi - lo, target)?;
    let value = step.value();
    // A small tolerance so a bound that is itself a multiple of the step is kept.
    let first = (lo / value - 1e-9).ceil() as i64;
    let last = (hi / value + 1e-9).floor() as i64;
    if last < first || last - first > 1000 {
        return None;
    }
    let ticks = (first..=last).map(|i| step.multiple(i)).collect();
    Some((ticks, value))
}

/// Labels for a whole axis. Axes whose ticks are all tiny (below 0.01) or astronomically large
/// use scientific notation throughout (`2e-3`); otherwise each label is compact (`0.5`, `1k`,
/// `2.5M`).
pub(crate) fn tick_labels(ticks: &[f64], step: f64) -> Vec<String> {
    let largest = ticks.iter().fold(0.0f64, |acc, t| acc.max(t.abs()));
    let scientific = largest > 0.0 && !(1e-2..1e15).contains(&largest);
    ticks
        .iter()
        .map(|&t| {
            if scientific {
                format_scientific(t, step)
            } else {
                format_tick(t, step)
            }
        })
        .collect()
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

    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn unit_range_steps_by_fifths() {
        assert_close(&nice_ticks(0.0, 1.0, 5), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn thousands_step_by_500() {
        assert_close(
            &nice_ticks(0.0, 2300.0, 5),
            &[0.0, 500.0, 1000.0, 1500.0, 2000.0],
        );
    }

    #[test]
    fn offset_and_negative_ranges() {
        assert_close(&nice_ticks(-1.0, 1.0, 4), &[-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_close(&nice_ticks(0.93, 0.97, 4), &[0.93, 0.94, 0.95, 0.96, 0.97]);
        assert_close(&nice_ticks(1.0, 0.0, 2), &[0.0, 0.5, 1.0]);
        assert_close(
            &nice_ticks(0.0, 100_000.0, 5),
            &[0.0, 20_000.0, 40_000.0, 60_000.0, 80_000.0, 100_000.0],
        );
        assert_close(&nice_ticks(0.0, 0.003, 3), &[0.0, 0.001, 0.002, 0.003]);
    }

    #[test]
    fn degenerate_ranges() {
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
        assert!(nice_ticks(f64::NAN, 1.0, 5).is_empty());
        assert!(nice_ticks(0.0, f64::INFINITY, 5).is_empty());
    }

    #[test]
    fn compact_labels() {
        assert_eq!(format_tick(0.0, 0.2), "0");
        assert_eq!(format_tick(0.5, 0.5), "0.5");
        assert_eq!(format_tick(0.6000000000000001, 0.2), "0.6");
        assert_eq!(format_tick(-0.25, 0.05), "-0.25");
        assert_eq!(format_tick(500.0, 500.0), "500");
        assert_eq!(format_tick(1000.0, 500.0), "1k");
        assert_eq!(format_tick(2500.0, 500.0), "2.5k");
        assert_eq!(format_tick(40_000.0, 20_000.0), "40k");
        assert_eq!(format_tick(2_500_000.0, 500_000.0), "2.5M");
        assert_eq!(format_tick(3e9, 1e9), "3G");
        // Too many decimals at the k scale: print the integer instead.
        assert_eq!(format_tick(1001.0, 1.0), "1001");
        assert_eq!(format_tick(0.001, 0.001), "1e-3");
        assert_eq!(format_tick(0.00025, 0.00005), "2.5e-4");
        assert_eq!(format_tick(1e-10, 1.0), "0");
    }

    #[test]
    fn axis_labels_switch_to_scientific_together() {
        let (ticks, step) = ticks_with_step(0.0, 0.004, 4).unwrap_or_default();
        assert_eq!(
            tick_labels(&ticks, step),
            ["0", "1e-3", "2e-3", "3e-3", "4e-3"]
        );
        let (ticks, step) = ticks_with_step(0.0, 1.0, 2).unwrap_or_default();
        assert_eq!(tick_labels(&ticks, step), ["0", "0.5", "1"]);
    }
}
