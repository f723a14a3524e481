//! Layout: turns a [`Figure`] into a [`Scene`] of positioned shapes. Panels sit side by side;
//! each gets a title, a framed plot area with gridlines, ticks and labels, its series, and a
//! legend in whichever inner corner the data leaves emptiest.

use super::figure::{Figure, Panel};
use super::scene::{
    Anchor, FRAME, GRID, MUTED, Metrics, PALETTE, Rect, Rgb, Scene, Shape, TEXT, WHITE,
};
use super::{legend, series, ticks};

/// Space around the figure.
const MARGIN: f64 = 14.0;
/// Space between neighbouring panels.
const PANEL_GAP: f64 = 30.0;
/// Length of tick marks outside the frame.
const TICK_LEN: f64 = 5.0;
/// Width of series lines, in pixels.
pub(crate) const LINE_WIDTH: f64 = 2.5;
/// Radius of the dot drawn for a single-point series.
pub(crate) const MARKER_RADIUS: f64 = 4.5;

/// The colour of the `index`-th series of a panel (the palette repeats after ten).
pub fn series_color(index: usize) -> [u8; 3] {
    PALETTE[index % PALETTE.len()]
}

/// Lays out `figure` on a `width` × `height` canvas whose text cells measure `m`.
pub(crate) fn figure_scene(figure: &Figure, width: u32, height: u32, m: Metrics) -> Scene {
    let (w, h) = (f64::from(width), f64::from(height));
    let mut out = vec![Shape::Fill {
        rect: Rect {
            x: 0.0,
            y: 0.0,
            w,
            h,
        },
        color: WHITE,
    }];
    let mut top = MARGIN;
    if !figure.title.trim().is_empty() {
        let title = m.fit(&figure.title, w - 2.0 * MARGIN);
        out.push(text((w / 2.0, top), title, Anchor::Middle, true));
        top += m.char_h + 16.0;
    }
    let area = Rect {
        x: MARGIN,
        y: top,
        w: (w - 2.0 * MARGIN).max(1.0),
        h: (h - top - MARGIN).max(1.0),
    };
    if figure.panels.is_empty() {
        no_data(&mut out, area, m);
    }
    let n = figure.panels.len() as f64;
    let panel_w = ((area.w - PANEL_GAP * (n - 1.0)) / n).max(1.0);
    for (i, panel) in figure.panels.iter().enumerate() {
        let cell = Rect {
            x: area.x + i as f64 * (panel_w + PANEL_GAP),
            w: panel_w,
            ..area
        };
        draw_panel(panel, cell, m, &mut out);
    }
    Scene {
        width,
        height,
        shapes: out,
    }
}

pub(crate) fn text(at: (f64, f64), text: String, anchor: Anchor, bold: bool) -> Shape {
    Shape::Text {
        at,
        text,
        anchor,
        vertical: false,
        bold,
        color: TEXT,
    }
}

fn no_data(out: &mut Vec<Shape>, area: Rect, m: Metrics) {
    out.push(Shape::Text {
        at: (area.center_x(), area.center_y() - m.char_h / 2.0),
        text: m.fit("no data", area.w),
        anchor: Anchor::Middle,
        vertical: false,
        bold: false,
        color: MUTED,
    });
}

/// Maps data coordinates to pixels inside `plot`.
struct Mapping {
    plot: Rect,
    x: (f64, f64),
    y: (f64, f64),
}

impl Mapping {
    fn px(&self, x: f64) -> f64 {
        self.plot.x + (x - self.x.0) / (self.x.1 - self.x.0) * self.plot.w
    }

    fn py(&self, y: f64) -> f64 {
        self.plot.bottom() - (y - self.y.0) / (self.y.1 - self.y.0) * self.plot.h
    }
}

fn draw_panel(panel: &Panel, cell: Rect, m: Metrics, out: &mut Vec<Shape>) {
    let mut top = cell.y;
    if !panel.title.trim().is_empty() {
        let title = m.fit(&panel.title, cell.w);
        out.push(text((cell.center_x(), top), title, Anchor::Middle, true));
        top += m.char_h + 12.0;
    }
    let has_x_label = !panel.x_label.trim().is_empty();
    let has_y_label = !panel.y_label.trim().is_empty();
    let x_tick_band = 1.0 + TICK_LEN + 3.0 + m.char_h;
    let x_label_band = if has_x_label { m.char_h + 8.0 } else { 0.0 };
    let mut y_label_band = if has_y_label { m.char_h + 12.0 } else { 0.0 };
    let plot_h = (cell.bottom() - top - x_tick_band - x_label_band - 1.0)
        .max(1.0)
        .round();

    let data: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| series::finite_sorted(&s.points))
        .collect();
    let Some((x_bounds, y_bounds)) = series::bounds(&data) else {
        let left = y_label_band + 1.0;
        let plot = Rect {
            x: (cell.x + left).round(),
            y: (top + 1.0).round(),
            w: (cell.w - left - 1.0).max(1.0).round(),
            h: plot_h,
        };
        axis_labels(
            &panel.x_label,
            &panel.y_label,
            plot,
            cell,
            x_tick_band,
            m,
            out,
        );
        no_data(out, plot, m);
        out.push(frame(plot));
        return;
    };

    let (y0, y1) = series::padded(y_bounds, 0.05);
    // Rows of labels need a little over two lines between them.
    let (y_ticks, y_labels) = fitting_ticks((y0, y1), plot_h, m, |_| 2.2 * m.char_h);
    let y_labels_w = y_labels.iter().map(|l| m.text_width(l)).fold(0.0, f64::max);
    let mut left = y_label_band + y_labels_w + 4.0 + TICK_LEN + 1.0;
    if left > cell.w / 2.0 {
        // A cramped panel keeps its plot and gives up the rotated axis label.
        left -= y_label_band;
        y_label_band = 0.0;
    }
    let right = 2.5 * m.char_w;
    let plot = Rect {
        x: (cell.x + left).round(),
        y: (top + 1.0).round(),
        w: (cell.w - left - right).max(1.0).round(),
        h: plot_h,
    };
    let (x0, x1) = series::padded(x_bounds, 0.02);
    let map = Mapping {
        plot,
        x: (x0, x1),
        y: (y0, y1),
    };
    // Labels need a character's width of space between them.
    let (x_ticks, x_labels) = fitting_ticks(map.x, plot.w, m, |widest| widest + m.char_w);

    draw_grid(&map, (&y_ticks, y_labels), (&x_ticks, x_labels), m, out);
    let y_label = if y_label_band > 0.0 {
        &panel.y_label
    } else {
        ""
    };
    axis_labels(&panel.x_label, y_label, plot, cell, x_tick_band, m, out);

    // Series, projected to pixels and thinned to two points per pixel column.
    let lines: Vec<Vec<(f64, f64)>> = data
        .iter()
        .map(|points| {
            let pixels: Vec<(f64, f64)> = points
                .iter()
                .map(|&(x, y)| (map.px(x), map.py(y)))
                .collect();
            series::downsample(&pixels)
        })
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let color = series_color(i);
        match line.as_slice() {
            [] => {}
            [only] => out.push(Shape::Marker {
                center: *only,
                radius: MARKER_RADIUS,
                color,
                clip: plot,
            }),
            _ => out.push(Shape::Polyline {
                points: line.clone(),
                color,
                width: LINE_WIDTH,
                clip: plot,
            }),
        }
    }
    legend::draw(panel, &lines, plot, m, out);
    out.push(frame(plot));
}

fn fill(x: f64, y: f64, w: f64, h: f64, color: Rgb) -> Shape {
    Shape::Fill {
        rect: Rect { x, y, w, h },
        color,
    }
}

/// A 1 px frame just outside the plot area, so data drawn inside never covers it.
fn frame(plot: Rect) -> Shape {
    Shape::Outline {
        rect: Rect {
            x: plot.x - 1.0,
            y: plot.y - 1.0,
            w: plot.w + 2.0,
            h: plot.h + 2.0,
        },
        color: FRAME,
    }
}

/// The densest nice ticks (at least two where possible) over `range` drawn `length` pixels
/// long whose spacing is at least `min_gap(widest label width)`, with their labels.
fn fitting_ticks(
    range: (f64, f64),
    length: f64,
    m: Metrics,
    min_gap: impl Fn(f64) -> f64,
) -> (Vec<f64>, Vec<String>) {
    let (lo, hi) = range;
    let mut fallback = None;
    for target in (1..=12).rev() {
        let Some((ticks, step)) = ticks::ticks_with_step(lo, hi, target) else {
            continue;
        };
        let labels = ticks::tick_labels(&ticks, step);
        let widest = labels.iter().map(|l| m.text_width(l)).fold(0.0, f64::max);
        let spacing = step / (hi - lo) * length;
        let two_or_more = ticks.len() >= 2;
        if two_or_more && spacing >= min_gap(widest) {
            return (ticks, labels);
        }
        if two_or_more || fallback.is_none() {
            fallback = Some((ticks, labels));
        }
    }
    fallback.unwrap_or_default()
}

fn axis_labels(
    x_label: &str,
    y_label: &str,
    plot: Rect,
    cell: Rect,
    x_tick_band: f64,
    m: Metrics,
    out: &mut Vec<Shape>,
) {
    if !x_label.trim().is_empty() {
        let at = (plot.center_x(), plot.bottom() + x_tick_band + 8.0);
        out.push(text(at, m.fit(x_label, cell.w), Anchor::Middle, false));
    }
    if !y_label.trim().is_empty() {
        out.push(Shape::Text {
            at: (cell.x, plot.center_y()),
            text: m.fit(y_label, plot.h),
            anchor: Anchor::Middle,
            vertical: true,
            bold: false,
            color: TEXT,
        });
    }
}

/// Gridlines, tick marks outside the frame, and tick labels for both axes.
fn draw_grid(
    map: &Mapping,
    (y_ticks, y_labels): (&[f64], Vec<String>),
    (x_ticks, x_labels): (&[f64], Vec<String>),
    m: Metrics,
    out: &mut Vec<Shape>,
) {
    let plot = map.plot;
    let inside = |p: f64, lo: f64, hi: f64| p >= lo - 0.5 && p <= hi + 0.5;
    for (tick, label) in y_ticks.iter().zip(y_labels) {
        let py = map.py(*tick).round();
        if !inside(py, plot.y, plot.bottom()) {
            continue;
        }
        let row = py.clamp(plot.y, plot.bottom() - 1.0);
        out.push(fill(plot.x, row, plot.w, 1.0, GRID));
        out.push(fill(plot.x - 1.0 - TICK_LEN, row, TICK_LEN, 1.0, FRAME));
        let at = (plot.x - 1.0 - TICK_LEN - 4.0, row - m.char_h / 2.0 + 1.0);
        out.push(text(at, label, Anchor::End, false));
    }
    for (tick, label) in x_ticks.iter().zip(x_labels) {
        let px = map.px(*tick).round();
        if !inside(px, plot.x, plot.right()) {
            continue;
        }
        let col = px.clamp(plot.x, plot.right() - 1.0);
        out.push(fill(col, plot.y, 1.0, plot.h, GRID));
        out.push(fill(col, plot.bottom() + 1.0, 1.0, TICK_LEN, FRAME));
        let at = (col + 0.5, plot.bottom() + 1.0 + TICK_LEN + 3.0);
        out.push(text(at, label, Anchor::Middle, false));
    }
}
