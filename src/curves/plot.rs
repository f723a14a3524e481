//! Drawing a [`Figure`] with plotters, on its bitmap backend (encoded here as PNG) or its SVG
//! backend. Text is DejaVu Sans (embedded, so no system fonts are needed); tick labels are
//! [`format_tick`]'s compact ones.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::figure::{Figure, Panel};
use super::series::{bounds, downsample, finite_sorted, padded};
use super::ticks::{format_tick, label_step};
use super::{CurvesError, Result};

/// The ten-colour palette series take in order (Tableau 10).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];
const GRID: RGBColor = RGBColor(232, 232, 232);
const AXIS: RGBColor = RGBColor(80, 80, 80);
const FONT: &str = "sans-serif";
/// Tick labels per axis plotters aims for.
const LABELS: usize = 6;
/// Width of series lines, and the radius of the dot of a one-point series, in pixels.
const LINE_WIDTH: u32 = 2;
const MARKER_RADIUS: i32 = 4;

/// The colour of the `index`-th series of a panel (the palette repeats after ten).
pub fn series_color(index: usize) -> [u8; 3] {
    PALETTE[index % PALETTE.len()]
}

fn color(index: usize) -> RGBColor {
    let [r, g, b] = series_color(index);
    RGBColor(r, g, b)
}

/// Makes the embedded DejaVu Sans plotters' `sans-serif` (once per process).
fn fonts() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("font/DejaVuSans.ttf");
        // The font is checked by the tests; a failure here would leave text undrawn, not panic.
        let _ = register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// `figure` as RGB pixels, row by row, encoded as a PNG.
pub(crate) fn png(figure: &Figure, width: u32, height: u32) -> Result<Vec<u8>> {
    fonts();
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(figure, &root).map_err(|e| CurvesError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| CurvesError::Draw(e.to_string()))?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

/// `figure` as an SVG document with its text as `<text>` elements.
pub(crate) fn svg(figure: &Figure, width: u32, height: u32) -> Result<String> {
    fonts();
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        draw(figure, &root).map_err(|e| CurvesError::Draw(e.to_string()))?;
        root.present()
            .map_err(|e| CurvesError::Draw(e.to_string()))?;
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{text}"
    ))
}

type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(figure: &Figure, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let area = match figure.title.is_empty() {
        true => root.clone(),
        false => root.titled(&figure.title, (FONT, 20).into_font().color(&BLACK))?,
    };
    let panels = area
        .margin(6, 10, 10, 10)
        .split_evenly((1, figure.panels.len().max(1)));
    for (panel, area) in figure.panels.iter().zip(&panels) {
        draw_panel(panel, area)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(panel: &Panel, area: &DrawingArea<DB, Shift>) -> Drawn<DB> {
    let series: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| finite_sorted(&s.points))
        .collect();
    let Some((x, y)) = bounds(&series) else {
        let area = area.titled(&panel.title, (FONT, 16).into_font().color(&BLACK))?;
        let (w, h) = area.dim_in_pixel();
        let style = (FONT, 15).into_font().color(&AXIS).pos(text_center());
        area.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style))?;
        return Ok(());
    };
    let (x, y) = (padded(x, 0.0), padded(y, 0.05));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 16).into_font().color(&BLACK))
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(58)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    let (x_step, y_step) = (label_step(x.1 - x.0, LABELS), label_step(y.1 - y.0, LABELS));
    let x_label = |v: &f64| format_tick(*v, x_step);
    let y_label = |v: &f64| format_tick(*v, y_step);
    chart
        .configure_mesh()
        .x_labels(LABELS)
        .y_labels(LABELS)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style((FONT, 13).into_font().color(&AXIS))
        .axis_desc_style((FONT, 14).into_font().color(&AXIS))
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .draw()?;
    let width = chart.plotting_area().dim_in_pixel().0.max(1);
    let to_px = |v: f64| (v - x.0) / (x.1 - x.0) * f64::from(width);
    let from_px = |p: f64| x.0 + p / f64::from(width) * (x.1 - x.0);
    let mut labelled = false;
    for (index, (points, named)) in series.iter().zip(&panel.series).enumerate() {
        let annotation = if let [only] = points.as_slice() {
            let style = color(index).filled();
            chart.draw_series(std::iter::once(Circle::new(*only, MARKER_RADIUS, style)))?
        } else {
            // At most two points per pixel column (its lowest and highest): the same picture.
            let pixels: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (to_px(x), y)).collect();
            let thinned: Vec<(f64, f64)> = (downsample(&pixels).into_iter())
                .map(|(p, y)| (from_px(p), y))
                .collect();
            // A dense line is drawn 1 px wide: plotters joins wide lines with mitres, which
            // shoot far out of the plot where a noisy curve turns back sharply.
            let width = match thinned.len() as u32 > width / 4 {
                true => 1,
                false => LINE_WIDTH,
            };
            chart.draw_series(LineSeries::new(thinned, color(index).stroke_width(width)))?
        };
        if !named.name.is_empty() {
            labelled = true;
            annotation.label(named.name.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color(index).stroke_width(3))
            });
        }
    }
    if labelled {
        chart
            .configure_series_labels()
            .position(emptiest_corner(&series, x, y))
            .label_font((FONT, 13).into_font().color(&BLACK))
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .draw()?;
    }
    Ok(())
}

fn text_center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

/// Where the legend covers the least of the data: the corners first, then the middles of the
/// sides, each taken as a box of about a third of the plot; the lines are sampled along their
/// segments, so a line crossing a box counts even when none of its points is in it.
fn emptiest_corner(
    series: &[Vec<(f64, f64)>],
    x: (f64, f64),
    y: (f64, f64),
) -> SeriesLabelPosition {
    use SeriesLabelPosition::{LowerLeft, LowerMiddle, LowerRight, MiddleLeft, MiddleRight};
    use SeriesLabelPosition::{UpperLeft, UpperMiddle, UpperRight};
    const HIGH: (f64, f64) = (0.68, 1.01);
    const LOW: (f64, f64) = (-0.01, 0.32);
    const MID: (f64, f64) = (0.34, 0.66);
    let boxes = [
        (HIGH, HIGH, UpperRight),
        (HIGH, LOW, LowerRight),
        (LOW, HIGH, UpperLeft),
        (LOW, LOW, LowerLeft),
        (HIGH, MID, MiddleRight),
        (LOW, MID, MiddleLeft),
        (MID, HIGH, UpperMiddle),
        (MID, LOW, LowerMiddle),
    ];
    // The lines in plot units (0..1 on both axes), 16 samples per segment.
    let mut samples = Vec::new();
    for line in series {
        let unit: Vec<(f64, f64)> = (line.iter())
            .map(|(px, py)| ((px - x.0) / (x.1 - x.0), (py - y.0) / (y.1 - y.0)))
            .collect();
        samples.extend(unit.first().copied());
        for pair in unit.windows(2) {
            let ((u0, v0), (u1, v1)) = (pair[0], pair[1]);
            samples.extend((1..=16).map(|k| {
                let t = f64::from(k) / 16.0;
                (u0 + (u1 - u0) * t, v0 + (v1 - v0) * t)
            }));
        }
    }
    let inside = |(u0, u1): (f64, f64), (v0, v1): (f64, f64)| {
        samples
            .iter()
            .filter(|(u, v)| (u0..=u1).contains(u) && (v0..=v1).contains(v))
            .count()
    };
    let mut best = (usize::MAX, UpperRight);
    for (u, v, position) in boxes {
        let n = inside(u, v);
        if n < best.0 {
            best = (n, position);
        }
    }
    best.1
}
