//! The legend: a white box with one row per series (swatch, name), placed in the inner corner
//! of the plot that covers the least data.

use super::figure::Panel;
use super::layout::{LINE_WIDTH, MARKER_RADIUS, series_color, text};
use super::scene::{Anchor, LEGEND_BORDER, Metrics, Rect, Shape, WHITE};
use super::series;

/// Padding inside the box.
const PAD: f64 = 8.0;
/// Distance from the plot frame.
const INSET: f64 = 8.0;
/// Length of the line sample before each name.
const SWATCH: f64 = 24.0;
/// Vertical space between rows.
const ROW_GAP: f64 = 6.0;

/// Adds the legend of `panel`, whose series are drawn as `lines` (pixels), to `out`. Skipped
/// when the plot is too small to hold it.
pub(crate) fn draw(
    panel: &Panel,
    lines: &[Vec<(f64, f64)>],
    plot: Rect,
    m: Metrics,
    out: &mut Vec<Shape>,
) {
    if panel.series.is_empty() {
        return;
    }
    let row_h = m.char_h + ROW_GAP;
    let room = plot.h - 2.0 * (INSET + PAD) + ROW_GAP;
    let max_rows = (room / row_h).floor().max(0.0) as usize;
    if max_rows == 0 {
        return;
    }
    let name_room = plot.w - 2.0 * (INSET + PAD) - SWATCH - 8.0;
    // (name, series index) per row; rows that do not fit collapse into "+N more".
    let mut rows: Vec<(String, Option<usize>)> = panel
        .series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = if s.name.trim().is_empty() {
                format!("series {}", i + 1)
            } else {
                s.name.clone()
            };
            (m.fit(&name, name_room), Some(i))
        })
        .collect();
    if rows.len() > max_rows {
        let hidden = rows.len() - (max_rows - 1);
        rows.truncate(max_rows - 1);
        rows.push((m.fit(&format!("+{hidden} more"), name_room), None));
    }
    let widest = rows.iter().map(|r| m.text_width(&r.0)).fold(0.0, f64::max);
    let box_w = (2.0 * PAD + SWATCH + 8.0 + widest).round();
    let box_h = (2.0 * PAD + rows.len() as f64 * row_h - ROW_GAP).round();
    if widest <= 0.0 || box_w > plot.w - 2.0 * INSET {
        return;
    }
    let (left, right) = (plot.x + INSET, plot.right() - INSET - box_w);
    let (upper, lower) = (plot.y + INSET, plot.bottom() - INSET - box_h);
    let corners = [(right, upper), (left, upper), (right, lower), (left, lower)];
    let place = |&(x, y): &(f64, f64)| Rect {
        x,
        y,
        w: box_w,
        h: box_h,
    };
    let Some(legend_box) = corners
        .iter()
        .map(place)
        .min_by_key(|r| series::crowding(lines, *r))
    else {
        return;
    };
    out.push(Shape::Fill {
        rect: legend_box,
        color: WHITE,
    });
    out.push(Shape::Outline {
        rect: legend_box,
        color: LEGEND_BORDER,
    });
    for (row, (name, series_index)) in rows.into_iter().enumerate() {
        let top = legend_box.y + PAD + row as f64 * row_h;
        let mid = top + m.char_h / 2.0 - 1.0;
        let x = legend_box.x + PAD;
        if let Some(i) = series_index {
            let color = series_color(i);
            let single = lines.get(i).is_some_and(|l| l.len() == 1);
            out.push(if single {
                Shape::Marker {
                    center: (x + SWATCH / 2.0, mid),
                    radius: MARKER_RADIUS,
                    color,
                    clip: plot,
                }
            } else {
                Shape::Polyline {
                    points: vec![(x, mid), (x + SWATCH, mid)],
                    color,
                    width: LINE_WIDTH + 0.5,
                    clip: plot,
                }
            });
        }
        out.push(text((x + SWATCH + 8.0, top), name, Anchor::Start, false));
    }
}
