//! Series data preparation: cleaning, axis ranges and pixel-column downsampling.

/// The finite points of a series, sorted by step (stable, so equal steps keep their order).
pub(crate) fn finite_sorted(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut clean: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if !clean.is_sorted_by(|a, b| a.0 <= b.0) {
        clean.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    clean
}

/// The smallest and largest x and y over all points, or `None` when there are no points.
pub(crate) fn bounds(series: &[Vec<(f64, f64)>]) -> Option<((f64, f64), (f64, f64))> {
    let mut points = series.iter().flatten();
    let &(x, y) = points.next()?;
    Some(
        points.fold(((x, x), (y, y)), |((x0, x1), (y0, y1)), &(x, y)| {
            ((x0.min(x), x1.max(x)), (y0.min(y), y1.max(y)))
        }),
    )
}

/// Widens `(lo, hi)` by `fraction` of its span on each side. A (near-)constant range is opened
/// up around its value so a flat series is drawn mid-height with readable ticks.
pub(crate) fn padded((lo, hi): (f64, f64), fraction: f64) -> (f64, f64) {
    let span = hi - lo;
    let mid = lo / 2.0 + hi / 2.0;
    if !span.is_finite() {
        return (lo, hi);
    }
    if span <= mid.abs() * 1e-9 {
        let half = if mid == 0.0 { 1.0 } else { mid.abs() * 0.05 };
        return (mid - half, mid + half);
    }
    (lo - span * fraction, hi + span * fraction)
}

/// Keeps at most two points per pixel column: the lowest and the highest, in their original
/// order. The points must be sorted by x and already in pixels. A line through the kept points
/// covers the same pixels as one through all of them, so a 100k-point curve stays faithful.
pub(crate) fn downsample(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len().min(4096));
    let mut rest = points;
    while let Some(&(x, _)) = rest.first() {
        let column = x.floor();
        let run = rest
            .iter()
            .position(|p| p.0.floor() != column)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(run);
        if group.len() <= 2 {
            out.extend_from_slice(group);
        } else {
            let mut low = 0;
            let mut high = 0;
            for (i, p) in group.iter().enumerate() {
                if p.1 < group[low].1 {
                    low = i;
                }
                if p.1 > group[high].1 {
                    high = i;
                }
            }
            out.push(group[low.min(high)]);
            if low != high {
                out.push(group[low.max(high)]);
            }
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_non_finite_and_sorts() {
        let points = [
            (2.0, 1.0),
            (0.0, f64::NAN),
            (1.0, 3.0),
            (f64::INFINITY, 1.0),
        ];
        assert_eq!(finite_sorted(&points), vec![(1.0, 3.0), (2.0, 1.0)]);
    }

    #[test]
    fn bounds_cover_every_series() {
        let data = vec![vec![(0.0, 1.0), (5.0, -2.0)], vec![], vec![(-1.0, 4.0)]];
        assert_eq!(bounds(&data), Some(((-1.0, 5.0), (-2.0, 4.0))));
        assert_eq!(bounds(&[vec![]]), None);
    }

    #[test]
    fn constant_ranges_open_up() {
        assert_eq!(padded((0.0, 0.0), 0.05), (-1.0, 1.0));
        let (lo, hi) = padded((2.0, 2.0), 0.05);
        assert!((lo - 1.9).abs() < 1e-12 && (hi - 2.1).abs() < 1e-12);
        assert_eq!(padded((0.0, 10.0), 0.1), (-1.0, 11.0));
    }

    #[test]
    fn downsampling_keeps_column_extremes() {
        // 1000 points in 10 columns, each column a zig-zag between -k and k.
        let points: Vec<(f64, f64)> = (0..1000)
            .map(|i| {
                let x = i as f64 / 100.0;
                let k = (i / 100) as f64 + 1.0;
                (x, if i % 2 == 0 { k } else { -k })
            })
            .collect();
        let kept = downsample(&points);
        assert_eq!(kept.len(), 20);
        for column in 0..10 {
            let k = column as f64 + 1.0;
            let ys: Vec<f64> = kept
                .iter()
                .filter(|p| p.0.floor() == column as f64)
                .map(|p| p.1)
                .collect();
            assert_eq!(ys, vec![k, -k], "column {column}");
        }
        // Sparse input is untouched.
        let sparse = [(0.5, 1.0), (3.5, 2.0), (3.7, 0.0)];
        assert_eq!(downsample(&sparse), sparse.to_vec());
    }
}
