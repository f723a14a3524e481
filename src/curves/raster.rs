//! PNG backend: paints a [`Scene`] into an RGB buffer (anti-aliased lines and markers,
//! font8x8 glyphs at ×2) and encodes it.

use font8x8::legacy::BASIC_LEGACY;

use super::CurvesError;
use super::scene::{Anchor, Rect, Rgb, Scene, Shape};

/// Glyphs are 8×8 bitmaps drawn at this scale.
const GLYPH_SCALE: i64 = 2;
const CELL: i64 = 8 * GLYPH_SCALE;

/// An RGB image being painted.
pub(crate) struct Canvas {
    width: i64,
    height: i64,
    pixels: Vec<u8>,
}

/// Pixel bounds `[x0, x1) × [y0, y1)`, already clamped to the canvas.
#[derive(Debug, Clone, Copy)]
struct PixelBox {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl PixelBox {
    fn width(&self) -> i64 {
        (self.x1 - self.x0).max(0)
    }

    fn height(&self) -> i64 {
        (self.y1 - self.y0).max(0)
    }
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let (width, height) = (i64::from(width), i64::from(height));
        Canvas {
            width,
            height,
            pixels: vec![255; (width * height * 3) as usize],
        }
    }

    /// The pixels whose centres lie in `rect`, clamped to the canvas.
    fn pixel_box(&self, rect: Rect) -> PixelBox {
        let clamp_x = |v: f64| (v.round() as i64).clamp(0, self.width);
        let clamp_y = |v: f64| (v.round() as i64).clamp(0, self.height);
        PixelBox {
            x0: clamp_x(rect.x),
            y0: clamp_y(rect.y),
            x1: clamp_x(rect.right()),
            y1: clamp_y(rect.bottom()),
        }
    }

    /// Mixes `color` into pixel `(x, y)` with opacity `alpha`; ignores pixels off the canvas.
    fn blend(&mut self, x: i64, y: i64, color: Rgb, alpha: f64) {
        if x < 0 || y < 0 || x >= self.width || y >= self.height || alpha <= 0.0 {
            return;
        }
        let at = ((y * self.width + x) * 3) as usize;
        if let Some(pixel) = self.pixels.get_mut(at..at + 3) {
            let alpha = alpha.min(1.0);
            for (channel, &target) in pixel.iter_mut().zip(&color) {
                let mixed = f64::from(*channel) * (1.0 - alpha) + f64::from(target) * alpha;
                *channel = mixed.round() as u8;
            }
        }
    }

    fn fill(&mut self, rect: Rect, color: Rgb) {
        let b = self.pixel_box(rect);
        for y in b.y0..b.y1 {
            for x in b.x0..b.x1 {
                self.blend(x, y, color, 1.0);
            }
        }
    }

    fn outline(&mut self, rect: Rect, color: Rgb) {
        let b = self.pixel_box(rect);
        let (x0, y0) = (b.x0 as f64, b.y0 as f64);
        let (w, h) = (b.width() as f64, b.height() as f64);
        for edge in [
            Rect {
                x: x0,
                y: y0,
                w,
                h: 1.0,
            },
            Rect {
                x: x0,
                y: y0 + h - 1.0,
                w,
                h: 1.0,
            },
            Rect {
                x: x0,
                y: y0,
                w: 1.0,
                h,
            },
            Rect {
                x: x0 + w - 1.0,
                y: y0,
                w: 1.0,
                h,
            },
        ] {
            self.fill(edge, color);
        }
    }

    /// Paints `coverage(px, py)` (sampled at pixel centres) over the pixels of `area`, each
    /// pixel blended once.
    fn paint_coverage(&mut self, area: PixelBox, color: Rgb, coverage: &[f32]) {
        let stride = area.width() as usize;
        for (i, &alpha) in coverage.iter().enumerate() {
            if alpha > 0.0 {
                let x = area.x0 + (i % stride) as i64;
                let y = area.y0 + (i / stride) as i64;
                self.blend(x, y, color, f64::from(alpha));
            }
        }
    }

    /// A polyline `width` px wide with round joins and caps, anti-aliased, clipped to `clip`.
    fn polyline(&mut self, points: &[(f64, f64)], width: f64, color: Rgb, clip: Rect) {
        let area = self.pixel_box(clip);
        let stride = area.width();
        let mut coverage = vec![0f32; (stride * area.height()) as usize];
        let half = width / 2.0;
        let segments = points.windows(2).map(|p| (p[0], p[1]));
        let segments: Vec<_> = if points.len() == 1 {
            vec![(points[0], points[0])]
        } else {
            segments.collect()
        };
        for (a, b) in segments {
            if ![a.0, a.1, b.0, b.1].iter().all(|v| v.is_finite()) {
                continue;
            }
            let reach = half + 1.0;
            let x0 = ((a.0.min(b.0) - reach).floor() as i64).max(area.x0);
            let x1 = ((a.0.max(b.0) + reach).ceil() as i64).min(area.x1);
            let y0 = ((a.1.min(b.1) - reach).floor() as i64).max(area.y0);
            let y1 = ((a.1.max(b.1) + reach).ceil() as i64).min(area.y1);
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = segment_distance((x as f64 + 0.5, y as f64 + 0.5), a, b);
                    let alpha = (half + 0.5 - d).clamp(0.0, 1.0) as f32;
                    let at = ((y - area.y0) * stride + (x - area.x0)) as usize;
                    if let Some(cell) = coverage.get_mut(at) {
                        *cell = cell.max(alpha);
                    }
                }
            }
        }
        self.paint_coverage(area, color, &coverage);
    }

    /// One line of text in font8x8 glyphs at ×2; characters outside ASCII show as `?`.
    fn text(&mut self, at: (f64, f64), text: &str, anchor: Anchor, vertical: bool, color: Rgb) {
        let length = text.chars().count() as i64 * CELL;
        let shift = match anchor {
            Anchor::Start => 0,
            Anchor::Middle => length / 2,
            Anchor::End => length,
        };
        let (ax, ay) = (at.0.round() as i64, at.1.round() as i64);
        for (i, c) in text.chars().enumerate() {
            let glyph = BASIC_LEGACY
                .get(c as usize)
                .copied()
                .unwrap_or(BASIC_LEGACY[usize::from(b'?')]);
            let along = i as i64 * CELL - shift;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) == 0 {
                        continue;
                    }
                    // (u, v): position along the text and down the character cell.
                    let u = along + col * GLYPH_SCALE;
                    let v = row as i64 * GLYPH_SCALE;
                    for dy in 0..GLYPH_SCALE {
                        for dx in 0..GLYPH_SCALE {
                            let (x, y) = if vertical {
                                (ax + v + dy, ay - (u + dx) - 1)
                            } else {
                                (ax + u + dx, ay + v + dy)
                            };
                            self.blend(x, y, color, 1.0);
                        }
                    }
                }
            }
        }
    }

    fn draw(&mut self, shape: &Shape) {
        match shape {
            Shape::Fill { rect, color } => self.fill(*rect, *color),
            Shape::Outline { rect, color } => self.outline(*rect, *color),
            Shape::Polyline {
                points,
                color,
                width,
                clip,
            } => self.polyline(points, width.max(1.0), *color, *clip),
            Shape::Marker {
                center,
                radius,
                color,
                clip,
            } => self.polyline(&[*center], radius * 2.0, *color, *clip),
            Shape::Text {
                at,
                text,
                anchor,
                vertical,
                bold,
                color,
            } => {
                self.text(*at, text, *anchor, *vertical, *color);
                if *bold {
                    let nudged = if *vertical {
                        (at.0, at.1 - 1.0)
                    } else {
                        (at.0 + 1.0, at.1)
                    };
                    self.text(nudged, text, *anchor, *vertical, *color);
                }
            }
        }
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let length2 = dx * dx + dy * dy;
    let t = if length2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / length2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (p.0 - a.0 - t * dx).hypot(p.1 - a.1 - t * dy)
}

/// Paints `scene` and returns the raw RGB pixels, row by row.
pub(crate) fn paint(scene: &Scene) -> Vec<u8> {
    let mut canvas = Canvas::new(scene.width, scene.height);
    for shape in &scene.shapes {
        canvas.draw(shape);
    }
    canvas.pixels
}

/// Paints `scene` and encodes it as an 8-bit RGB PNG.
pub(crate) fn encode_png(scene: &Scene) -> Result<Vec<u8>, CurvesError> {
    let pixels = paint(scene);
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, scene.width, scene.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(pixels: &[u8], width: i64, x: i64, y: i64) -> [u8; 3] {
        let at = ((y * width + x) * 3) as usize;
        [pixels[at], pixels[at + 1], pixels[at + 2]]
    }

    #[test]
    fn lines_are_thick_and_clipped() {
        let red = [255, 0, 0];
        let clip = Rect {
            x: 10.0,
            y: 10.0,
            w: 20.0,
            h: 20.0,
        };
        let scene = Scene {
            width: 40,
            height: 40,
            shapes: vec![Shape::Polyline {
                points: vec![(0.0, 20.0), (40.0, 20.0)],
                color: red,
                width: 2.0,
                clip,
            }],
        };
        let pixels = paint(&scene);
        // Rows 19 and 20 straddle y = 20 exactly: full colour inside the clip rectangle.
        assert_eq!(pixel(&pixels, 40, 15, 19), red);
        assert_eq!(pixel(&pixels, 40, 15, 20), red);
        // Clipped: nothing left of x = 10 or right of x = 30.
        assert_eq!(pixel(&pixels, 40, 5, 20), [255, 255, 255]);
        assert_eq!(pixel(&pixels, 40, 35, 20), [255, 255, 255]);
    }

    #[test]
    fn text_uses_glyph_bitmaps() {
        let scene = Scene {
            width: 40,
            height: 20,
            shapes: vec![Shape::Text {
                at: (0.0, 0.0),
                text: "|".into(),
                anchor: Anchor::Start,
                vertical: false,
                bold: false,
                color: [0, 0, 0],
            }],
        };
        let pixels = paint(&scene);
        // font8x8's '|' is columns 3 and 4 of rows 0..6, so ×2 → x 6..10, y 0..14.
        assert_eq!(pixel(&pixels, 40, 7, 3), [0, 0, 0]);
        assert_eq!(pixel(&pixels, 40, 1, 3), [255, 255, 255]);
        assert_eq!(pixel(&pixels, 40, 20, 3), [255, 255, 255]);
    }
}
