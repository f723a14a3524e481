//! End-to-end checks of whole figures: decoded PNG pixels, scene geometry and SVG structure.

use super::scene::{FRAME, Metrics, Rect, Shape};
use super::*;

/// Decodes PNG bytes into (width, height, RGB pixels).
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("not a PNG: {e}"));
    let mut pixels = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut pixels)
        .unwrap_or_else(|e| panic!("bad PNG frame: {e}"));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

fn pixel(pixels: &[u8], width: u32, x: u32, y: u32) -> [u8; 3] {
    let at = ((y * width + x) * 3) as usize;
    [pixels[at], pixels[at + 1], pixels[at + 2]]
}

/// The frames (plot area plus its 1 px border) of each panel, left to right.
fn frames(figure: &Figure, width: u32, height: u32) -> Vec<Rect> {
    let scene = layout::figure_scene(figure, width, height, Metrics::RASTER);
    scene
        .shapes
        .iter()
        .filter_map(|s| match s {
            Shape::Outline { rect, color } if *color == FRAME => Some(*rect),
            _ => None,
        })
        .collect()
}

fn loss_curve(n: usize) -> Vec<(f64, f64)> {
    (0..n)
        .map(|i| {
            let s = i as f64;
            (s, 2.5 / (1.0 + s / 300.0) + 0.05 * (s * 0.37).sin())
        })
        .collect()
}

fn sample_figure() -> Figure {
    let accuracy: Vec<(f64, f64)> = (0..=20)
        .map(|i| {
            let s = i as f64 * 500.0;
            (s, 0.95 - 0.6 * (-s / 2500.0).exp())
        })
        .collect();
    let eval_loss: Vec<(f64, f64)> = loss_curve(10_001)
        .into_iter()
        .step_by(500)
        .map(|(s, l)| (s, l * 1.1 + 0.05))
        .collect();
    Figure::new("run 42: resnet-ish on cifar-ish")
        .with_panel(
            Panel::new("loss")
                .with_axes("step", "loss")
                .with_series(Series::new("train", loss_curve(10_001)))
                .with_series(Series::new("eval", eval_loss)),
        )
        .with_panel(
            Panel::new("eval accuracy")
                .with_axes("step", "accuracy")
                .with_series(Series::new("top-1", accuracy)),
        )
}

#[test]
fn png_decodes_to_requested_size() {
    let figure = sample_figure();
    for (w, h) in [(1200, 500), (640, 480), (300, 200), (40, 30)] {
        let bytes = figure.to_png(w, h).unwrap_or_else(|e| panic!("{e}"));
        let (dw, dh, pixels) = decode(&bytes);
        assert_eq!((dw, dh), (w, h));
        assert_eq!(pixels.len(), (w * h * 3) as usize);
        // The corner is background.
        assert_eq!(pixel(&pixels, w, 0, 0), [255, 255, 255]);
    }
}

#[test]
fn rejects_undrawable_sizes() {
    let figure = sample_figure();
    assert!(matches!(
        figure.to_png(0, 10),
        Err(CurvesError::InvalidSize {
            width: 0,
            height: 10
        })
    ));
    assert!(figure.to_png(10, MAX_SIDE + 1).is_err());
}

#[test]
fn series_colours_stay_inside_their_frames() {
    let (w, h) = (1200, 500);
    let figure = sample_figure();
    let frames = frames(&figure, w, h);
    assert_eq!(frames.len(), 2);
    let (_, _, pixels) = decode(&figure.to_png(w, h).unwrap_or_default());
    let in_frame = |x: u32, y: u32, r: &Rect| {
        let (x, y) = (f64::from(x), f64::from(y));
        x >= r.x && x < r.right() && y >= r.y && y < r.bottom()
    };
    // (panel, series index) pairs that are drawn.
    for (panel, index) in [(0, 0), (0, 1), (1, 0)] {
        let color = series_color(index);
        let frame = &frames[panel];
        let mut inside = 0;
        for y in 0..h {
            for x in 0..w {
                if pixel(&pixels, w, x, y) != color {
                    continue;
                }
                // Colour of panel 0's series 0 is also panel 1's series 0: either frame will do.
                assert!(
                    frames.iter().any(|f| in_frame(x, y, f)),
                    "series colour {color:?} at ({x}, {y}) outside every frame"
                );
                inside += usize::from(in_frame(x, y, frame));
            }
        }
        assert!(inside > 100, "panel {panel} series {index}: {inside} px");
    }
}

#[test]
fn huge_series_is_thinned_but_keeps_spikes() {
    let mut points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0)).collect();
    points[50_000].1 = 10.0;
    let figure =
        Figure::new("").with_panel(Panel::new("loss").with_series(Series::new("train", points)));
    let scene = layout::figure_scene(&figure, 800, 400, Metrics::RASTER);
    let frame = frames(&figure, 800, 400)[0];
    let line = scene
        .shapes
        .iter()
        .find_map(|s| match s {
            Shape::Polyline { points, clip, .. } if points.len() > 2 => Some((points, *clip)),
            _ => None,
        })
        .map(|(p, c)| (p.clone(), c))
        .unwrap_or_default();
    let (points, plot) = line;
    assert!(
        points.len() <= 2 * plot.w as usize + 2,
        "{} points",
        points.len()
    );
    // The spike reaches the top 10% of the plot.
    let top = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    assert!(
        top < plot.y + plot.h * 0.1,
        "spike top at {top}, plot {plot:?}"
    );

    let (_, _, pixels) = decode(&figure.to_png(800, 400).unwrap_or_default());
    let color = series_color(0);
    let spike_rows = (frame.y as u32..(frame.y + frame.h * 0.15) as u32)
        .filter(|&y| (0..800).any(|x| pixel(&pixels, 800, x, y) == color))
        .count();
    assert!(spike_rows > 5, "spike visible in {spike_rows} rows");
}

#[test]
fn constant_nan_and_single_point_series() {
    let figure = Figure::new("").with_panel(
        Panel::new("edge cases")
            .with_series(Series::new(
                "flat",
                vec![
                    (0.0, 0.5),
                    (1.0, f64::NAN),
                    (2.0, 0.5),
                    (f64::INFINITY, 3.0),
                ],
            ))
            .with_series(Series::new("one", vec![(1.0, 0.5)])),
    );
    let scene = layout::figure_scene(&figure, 600, 400, Metrics::RASTER);
    let flat = scene.shapes.iter().find_map(|s| match s {
        Shape::Polyline { points, clip, .. }
            if points.len() == 2 && points[0].0 < points[1].0 - 100.0 =>
        {
            Some((points.clone(), *clip))
        }
        _ => None,
    });
    let Some((points, plot)) = flat else {
        panic!("flat series not drawn: {:?}", scene.shapes)
    };
    // NaN/inf points dropped; the constant line sits mid-height.
    for p in &points {
        assert!((p.1 - plot.center_y()).abs() <= 1.0, "{p:?} vs {plot:?}");
    }
    assert!(scene.shapes.iter().any(|s| matches!(
        s,
        Shape::Marker { color, center, .. } if *color == series_color(1) && plot.contains(*center)
    )));
    let (_, _, pixels) = decode(&figure.to_png(600, 400).unwrap_or_default());
    let marker_px = pixels
        .chunks(3)
        .filter(|p| *p == series_color(1).as_slice())
        .count();
    assert!(marker_px > 20, "{marker_px} marker pixels");
}

#[test]
fn empty_panels_say_no_data() {
    let figure = Figure::new("nothing yet")
        .with_panel(Panel::new("loss").with_series(Series::new("nan", vec![(0.0, f64::NAN)])))
        .with_panel(Panel::new("accuracy"));
    let svg = figure.to_svg(800, 300);
    assert_eq!(svg.matches(">no data</text>").count(), 2);
    let (w, h, _) = decode(&figure.to_png(800, 300).unwrap_or_default());
    assert_eq!((w, h), (800, 300));
    assert!(
        Figure::default()
            .to_svg(200, 100)
            .contains(">no data</text>")
    );
}

#[test]
fn legend_goes_to_the_emptiest_corner() {
    let falling: Vec<(f64, f64)> = (0..100)
        .map(|i| (f64::from(i), 1.0 / (1.0 + f64::from(i))))
        .collect();
    let rising: Vec<(f64, f64)> = falling.iter().map(|&(x, y)| (x, 1.0 - y)).collect();
    let figure = Figure::new("")
        .with_panel(Panel::new("loss").with_series(Series::new("train", falling)))
        .with_panel(Panel::new("accuracy").with_series(Series::new("eval", rising)));
    let scene = layout::figure_scene(&figure, 1000, 400, Metrics::RASTER);
    let legends: Vec<Rect> = scene
        .shapes
        .iter()
        .filter_map(|s| match s {
            Shape::Outline { rect, color } if *color == super::scene::LEGEND_BORDER => Some(*rect),
            _ => None,
        })
        .collect();
    let frames = frames(&figure, 1000, 400);
    assert_eq!((legends.len(), frames.len()), (2, 2));
    // A falling loss leaves the top right empty; a rising accuracy the bottom right.
    let (loss, acc) = (legends[0], legends[1]);
    assert!(loss.center_x() > frames[0].center_x() && loss.center_y() < frames[0].center_y());
    assert!(acc.center_x() > frames[1].center_x() && acc.center_y() > frames[1].center_y());
    let svg = figure.to_svg(1000, 400);
    assert!(svg.contains(">train</text>") && svg.contains(">eval</text>"));
}

/// Checks that every opened tag is closed in order; returns the tag names seen.
fn check_balanced(xml: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        let Some(len) = rest[start..].find('>') else {
            panic!("unterminated tag at {start}")
        };
        let tag = &rest[start + 1..start + len];
        rest = &rest[start + len + 1..];
        if tag.starts_with('?') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()));
        seen.push(name.to_string());
        if !tag.ends_with('/') {
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    seen
}

#[test]
fn svg_is_well_formed_and_has_titles() {
    let mut figure = sample_figure();
    figure.panels[1].series[0].name = "top-1 <\"a&b\">".into();
    let svg = figure.to_svg(1200, 500);
    let tags = check_balanced(&svg);
    assert_eq!(tags.first().map(String::as_str), Some("svg"));
    for needle in [
        ">run 42: resnet-ish on cifar-ish</text>",
        ">loss</text>",
        ">eval accuracy</text>",
        ">step</text>",
        ">top-1 &lt;&quot;a&amp;b&quot;&gt;</text>",
        "<polyline",
        r#"width="1200" height="500""#,
    ] {
        assert!(svg.contains(needle), "missing {needle}");
    }
    // Tick labels are compact numbers.
    assert!(
        svg.contains(">10k</text>") || svg.contains(">8k</text>"),
        "{svg}"
    );
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}

#[test]
fn write_saves_both_files() {
    let dir = std::env::temp_dir().join(format!("millrace-curves-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (png_path, svg_path) = (dir.join("c.png"), dir.join("c.svg"));
    sample_figure()
        .write(&png_path, Some(&svg_path))
        .unwrap_or_else(|e| panic!("{e}"));
    let (w, h, _) = decode(&std::fs::read(&png_path).unwrap_or_default());
    assert_eq!((w, h), (DEFAULT_WIDTH, DEFAULT_HEIGHT));
    let svg = std::fs::read_to_string(&svg_path).unwrap_or_default();
    assert!(svg.starts_with("<?xml"));
    let missing = dir.join("no/such/dir/c.png");
    let err = sample_figure().write(&missing, None).err();
    assert!(matches!(&err, Some(CurvesError::Write { path, .. }) if *path == missing));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Renders the sample to /tmp for eyeballing: `cargo test -p millrace --lib curves -- --ignored`.
#[test]
#[ignore = "writes /tmp/curves_sample.{png,svg} for a human to look at"]
fn render_sample() {
    // A 100k-step noisy loss with a spike, evaluated every 5k steps; accuracy to match.
    let loss = |s: f64| 2.3 / (1.0 + s / 4000.0) + 0.08;
    let mut train: Vec<(f64, f64)> = (0..100_000)
        .map(|i| {
            let s = i as f64;
            let noise = 0.06 * ((s * 0.37).sin() + (s * 1.91).sin()) * loss(s);
            (s, loss(s) + noise)
        })
        .collect();
    train[61_000].1 = 1.4;
    let eval: Vec<(f64, f64)> = (0..=20)
        .map(|i| (i as f64 * 5000.0, loss(i as f64 * 5000.0) * 1.15 + 0.03))
        .collect();
    let accuracy: Vec<(f64, f64)> = (0..=20)
        .map(|i| (i as f64 * 5000.0, 0.93 - 0.83 * (-(i as f64) / 4.0).exp()))
        .collect();
    let mut figure = sample_figure();
    figure.panels[0].series = vec![Series::new("train", train), Series::new("eval", eval)];
    figure.panels[1].series = vec![
        Series::new("top-1", accuracy.clone()),
        Series::new(
            "top-5",
            accuracy
                .iter()
                .map(|&(s, a)| (s, 1.0 - (1.0 - a) * 0.3))
                .collect(),
        ),
        Series::new("best", vec![(90_000.0, 0.93)]),
    ];
    figure
        .write(
            std::path::Path::new("/tmp/curves_sample.png"),
            Some(std::path::Path::new("/tmp/curves_sample.svg")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
}
