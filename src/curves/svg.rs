//! SVG backend: writes a [`Scene`] as a standalone SVG document with real `<text>` elements.

use std::fmt::Write as _;

use super::scene::{Anchor, Metrics, Rect, Rgb, Scene, Shape};

const FONT_FAMILY: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// Renders `scene` as an SVG document.
pub(crate) fn render(scene: &Scene) -> String {
    let mut clips: Vec<Rect> = Vec::new();
    for shape in &scene.shapes {
        if let Shape::Polyline { clip, .. } | Shape::Marker { clip, .. } = shape
            && !clips.contains(clip)
        {
            clips.push(*clip);
        }
    }
    let clip_id = |rect: &Rect| clips.iter().position(|c| c == rect).unwrap_or(0);

    let mut out = String::new();
    // Writing to a String cannot fail, so the fmt::Results below are ignored.
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}" font-size="{size}">"#,
        w = scene.width,
        h = scene.height,
        size = Metrics::SVG.char_h,
    );
    if !clips.is_empty() {
        out.push_str("<defs>\n");
        for (i, c) in clips.iter().enumerate() {
            let _ = writeln!(
                out,
                r#"<clipPath id="plot{i}"><rect x="{}" y="{}" width="{}" height="{}"/></clipPath>"#,
                num(c.x),
                num(c.y),
                num(c.w),
                num(c.h)
            );
        }
        out.push_str("</defs>\n");
    }
    for shape in &scene.shapes {
        match shape {
            Shape::Fill { rect, color } => {
                let _ = writeln!(
                    out,
                    r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" shape-rendering="crispEdges"/>"#,
                    num(rect.x),
                    num(rect.y),
                    num(rect.w),
                    num(rect.h),
                    hex(*color)
                );
            }
            Shape::Outline { rect, color } => {
                let _ = writeln!(
                    out,
                    r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="{}" stroke-width="1" shape-rendering="crispEdges"/>"#,
                    num(rect.x + 0.5),
                    num(rect.y + 0.5),
                    num((rect.w - 1.0).max(0.0)),
                    num((rect.h - 1.0).max(0.0)),
                    hex(*color)
                );
            }
            Shape::Polyline {
                points,
                color,
                width,
                clip,
            } => {
                let coords: Vec<String> = points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|&(x, y)| format!("{},{}", num(x), num(y)))
                    .collect();
                let _ = writeln!(
                    out,
                    r#"<polyline clip-path="url(#plot{})" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" stroke-linecap="round" points="{}"/>"#,
                    clip_id(clip),
                    hex(*color),
                    num(*width),
                    coords.join(" ")
                );
            }
            Shape::Marker {
                center,
                radius,
                color,
                clip,
            } => {
                let _ = writeln!(
                    out,
                    r#"<circle clip-path="url(#plot{})" cx="{}" cy="{}" r="{}" fill="{}"/>"#,
                    clip_id(clip),
                    num(center.0),
                    num(center.1),
                    num(*radius),
                    hex(*color)
                );
            }
            Shape::Text {
                at,
                text,
                anchor,
                vertical,
                bold,
                color,
            } => write_text(&mut out, *at, text, *anchor, *vertical, *bold, *color),
        }
    }
    out.push_str("</svg>\n");
    out
}

fn write_text(
    out: &mut String,
    at: (f64, f64),
    text: &str,
    anchor: Anchor,
    vertical: bool,
    bold: bool,
    color: Rgb,
) {
    let half = Metrics::SVG.char_h / 2.0;
    // The scene gives the top (or, rotated, the left) of the character cell; SVG wants its centre.
    let (x, y) = if vertical {
        (at.0 + half, at.1)
    } else {
        (at.0, at.1 + half)
    };
    let anchor = match anchor {
        Anchor::Start => "start",
        Anchor::Middle => "middle",
        Anchor::End => "end",
    };
    let rotate = if vertical {
        format!(r#" transform="rotate(-90 {} {})""#, num(x), num(y))
    } else {
        String::new()
    };
    let weight = if bold { r#" font-weight="bold""# } else { "" };
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="{anchor}" dominant-baseline="central" fill="{}"{weight}{rotate}>{}</text>"#,
        num(x),
        num(y),
        hex(color),
        escape(text)
    );
}

/// A coordinate with at most two decimals and no trailing zeros.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "0".to_string();
    }
    let text = format!("{v:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0" } else { text }.to_string()
}

fn hex([r, g, b]: Rgb) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Escapes text for XML character data and attributes; drops characters XML 1.0 forbids.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c < ' ' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"a<b & "c">'"#),
            "a&lt;b &amp; &quot;c&quot;&gt;&apos;"
        );
        assert_eq!(escape("x\u{1}y\tz"), "xy z");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.346), "12.35");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(hex([31, 119, 180]), "#1f77b4");
    }
}
