//! End-to-end checks of whole figures, from what a reader gets: decoded PNG pixels and SVG text.

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

/// The pixels of exactly `color`, as (x, y).
fn pixels_of(pixels: &[u8], width: u32, color: [u8; 3]) -> Vec<(u32, u32)> {
    (pixels.chunks(3).enumerate())
        .filter(|(_, p)| *p == color.as_slice())
        .map(|(i, _)| (i as u32 % width, i as u32 / width))
        .collect()
}

/// Whether the SVG shows `label` as a text element (plotters puts the text on its own line).
fn has_text(svg: &str, label: &str) -> bool {
    svg.contains(&format!(">\n{label}\n</text>")) || svg.contains(&format!(">{label}</text>"))
}

/// Pixels that are neither white nor near-grey: text and axes are dark grey, series coloured.
fn dark_pixels(pixels: &[u8]) -> usize {
    pixels
        .chunks(3)
        .filter(|p| p.iter().all(|&c| c < 120))
        .count()
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
fn png_decodes_to_requested_size_with_text_and_curves() {
    let figure = sample_figure();
    for (w, h) in [(1200, 500), (640, 360), (300, 200)] {
        let (dw, dh, pixels) = decode(&figure.to_png(w, h).unwrap_or_default());
        assert_eq!((dw, dh), (w, h));
        assert_eq!(pixels.len(), (w * h * 3) as usize);
        assert_eq!(&pixels[..3], &[255, 255, 255]);
    }
    let (w, _, pixels) = decode(&figure.to_png(1200, 500).unwrap_or_default());
    // Text (titles, ticks, labels) is drawn: many dark pixels, not only the axes' lines.
    assert!(
        dark_pixels(&pixels) > 3_000,
        "{} dark pixels",
        dark_pixels(&pixels)
    );
    // Each panel's first series is drawn in its colour, the left panel's in the left half.
    let train = pixels_of(&pixels, w, series_color(0));
    assert!(train.iter().filter(|(x, _)| *x < 600).count() > 300);
    assert!(
        train.iter().filter(|(x, _)| *x >= 600).count() > 100,
        "top-1 in the right panel"
    );
    let eval = pixels_of(&pixels, w, series_color(1));
    assert!(
        eval.iter().all(|(x, _)| *x < 600),
        "eval is only in the left panel"
    );
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
    assert!(figure.to_svg(MAX_SIDE + 1, 10).is_err());
}

#[test]
fn huge_series_is_thinned_but_keeps_spikes() {
    let mut points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0)).collect();
    points[50_000].1 = 10.0;
    let figure =
        Figure::new("").with_panel(Panel::new("loss").with_series(Series::new("train", points)));
    let svg = figure.to_svg(800, 400).unwrap_or_default();
    // One polyline of at most two points per pixel column, not 100k.
    let [r, g, b] = series_color(0);
    let stroke = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
    let line = (svg.split("<polyline").find(|l| l.contains(&stroke))).unwrap_or_default();
    let points = line.split("points=\"").nth(1).unwrap_or_default();
    let count = points
        .split('"')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .count();
    assert!(count <= 2 * 800 + 2 && count > 10, "{count} points");
    // The spike reaches the top of the plot in the picture.
    let (w, h, pixels) = decode(&figure.to_png(800, 400).unwrap_or_default());
    let line = pixels_of(&pixels, w, series_color(0));
    let top = line.iter().map(|p| p.1).min().unwrap_or(h);
    let flat = line.iter().map(|p| p.1).max().unwrap_or(0);
    assert!(flat - top > h / 2, "spike from {flat} up to {top}");
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
    let (w, h, pixels) = decode(&figure.to_png(600, 400).unwrap_or_default());
    // NaN/inf points dropped; the constant line is one band of rows, mid-height (the legend's
    // short marker is the only other place its colour is).
    let flat = pixels_of(&pixels, w, series_color(0));
    let mut per_row = std::collections::BTreeMap::<u32, usize>::new();
    for (_, y) in &flat {
        *per_row.entry(*y).or_default() += 1;
    }
    let rows: Vec<u32> = per_row
        .iter()
        .filter(|(_, n)| **n > 100)
        .map(|(y, _)| *y)
        .collect();
    assert!(!rows.is_empty() && rows.len() <= 3, "line rows {rows:?}");
    let mid = rows.iter().sum::<u32>() / rows.len().max(1) as u32;
    assert!(mid > h / 3 && mid < 2 * h / 3, "row {mid} of {h}");
    // The one-point series is a dot.
    assert!(pixels_of(&pixels, w, series_color(1)).len() > 20);
    let svg = figure.to_svg(600, 400).unwrap_or_default();
    assert!(!svg.contains("NaN") && !svg.contains("inf"));
}

#[test]
fn empty_panels_say_no_data() {
    let figure = Figure::new("nothing yet")
        .with_panel(Panel::new("loss").with_series(Series::new("nan", vec![(0.0, f64::NAN)])))
        .with_panel(Panel::new("accuracy"));
    let svg = figure.to_svg(800, 300).unwrap_or_default();
    assert_eq!(svg.matches(">\nno data\n</text>").count(), 2, "{svg}");
    let (w, h, _) = decode(&figure.to_png(800, 300).unwrap_or_default());
    assert_eq!((w, h), (800, 300));
    assert!(Figure::default().to_svg(200, 100).is_ok());
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
    let svg = figure.to_svg(1000, 400).unwrap_or_default();
    // The legend's label: where plotters put it.
    let at = |label: &str| -> (f64, f64) {
        let end = svg
            .find(&format!(">\n{label}\n</text>"))
            .unwrap_or_else(|| panic!("no {label}"));
        let tag = &svg[svg[..end].rfind("<text").unwrap_or(0)..end];
        let attr = |name: &str| -> f64 {
            let v = tag.split(&format!(" {name}=\"")).nth(1).unwrap_or_default();
            v.split('"')
                .next()
                .unwrap_or_default()
                .parse()
                .unwrap_or(f64::NAN)
        };
        (attr("x"), attr("y"))
    };
    // A falling loss leaves the top right empty; a rising accuracy the bottom right.
    let (train, eval) = (at("train"), at("eval"));
    assert!(
        train.0 > 250.0 && train.0 < 500.0 && train.1 < 200.0,
        "train {train:?}"
    );
    assert!(eval.0 > 750.0 && eval.1 > 200.0, "eval {eval:?}");
}

#[test]
fn svg_is_well_formed_and_has_titles() {
    let mut figure = sample_figure();
    figure.panels[1].series[0].name = "top-1 <\"a&b\">".into();
    let svg = figure.to_svg(1200, 500).unwrap_or_default();
    assert!(svg.starts_with("<?xml"));
    assert!(svg.trim_end().ends_with("</svg>"));
    for label in [
        "run 42: resnet-ish on cifar-ish",
        "loss",
        "eval accuracy",
        "step",
        "train",
    ] {
        assert!(has_text(&svg, label), "missing {label}");
    }
    assert!(svg.contains("<polyline") && svg.contains(r#"width="1200" height="500""#));
    // Data in labels is escaped, never markup.
    assert!(!svg.contains("<\"a&b\">"));
    assert!(svg.contains("top-1 &lt;"), "the escaped label");
    // Tick labels are compact numbers.
    assert!(has_text(&svg, "10k") || has_text(&svg, "8k"), "{svg}");
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

/// Renders the sample for eyeballing: `cargo test -p millrace --lib curves -- --ignored`.
#[test]
#[ignore = "writes /tmp/curves_sample.{png,svg} for a human to look at"]
fn render_sample() {
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
