//! A backend-neutral list of drawing commands. Layout produces a [`Scene`] once; the PNG and SVG
//! backends only translate it, so both outputs share one geometry.

/// An sRGB colour.
pub(crate) type Rgb = [u8; 3];

/// Background of the figure and of legend boxes.
pub(crate) const WHITE: Rgb = [255, 255, 255];
/// Titles, labels and tick labels.
pub(crate) const TEXT: Rgb = [34, 34, 34];
/// The "no data" note.
pub(crate) const MUTED: Rgb = [150, 150, 150];
/// Plot frame and tick marks.
pub(crate) const FRAME: Rgb = [68, 68, 68];
/// Gridlines.
pub(crate) const GRID: Rgb = [228, 228, 228];
/// Legend box outline.
pub(crate) const LEGEND_BORDER: Rgb = [190, 190, 190];

/// Series colours: the Tableau 10 palette, distinct and readable on white.
pub(crate) const PALETTE: [Rgb; 10] = [
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

/// An axis-aligned rectangle in pixels; `(x, y)` is the top-left corner.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }

    pub fn center_x(&self) -> f64 {
        self.x + self.w / 2.0
    }

    pub fn center_y(&self) -> f64 {
        self.y + self.h / 2.0
    }

    pub fn contains(&self, (x, y): (f64, f64)) -> bool {
        x >= self.x && x <= self.right() && y >= self.y && y <= self.bottom()
    }
}

/// Where a text's anchor point sits along the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    Start,
    Middle,
    End,
}

/// How wide and tall one character cell is in a backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Metrics {
    pub char_w: f64,
    pub char_h: f64,
}

impl Metrics {
    /// font8x8 glyphs drawn at ×2.
    pub const RASTER: Metrics = Metrics {
        char_w: 16.0,
        char_h: 16.0,
    };
    /// A 16 px monospace font, whose advance is about 0.6 em.
    pub const SVG: Metrics = Metrics {
        char_w: 9.6,
        char_h: 16.0,
    };

    pub fn text_width(&self, text: &str) -> f64 {
        text.chars().count() as f64 * self.char_w
    }

    /// `text`, shortened with a trailing `~` so that it fits in `max_width`.
    pub fn fit(&self, text: &str, max_width: f64) -> String {
        if self.text_width(text) <= max_width {
            return text.to_string();
        }
        let keep = ((max_width / self.char_w).floor() as usize).saturating_sub(1);
        let mut short: String = text.chars().take(keep).collect();
        if keep > 0 {
            short.push('~');
        }
        short
    }
}

/// One drawing command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// A filled rectangle (also used for crisp 1 px gridlines and tick marks).
    Fill { rect: Rect, color: Rgb },
    /// A 1 px outline drawn just inside `rect`.
    Outline { rect: Rect, color: Rgb },
    /// A connected line, drawn only inside `clip`.
    Polyline {
        points: Vec<(f64, f64)>,
        color: Rgb,
        width: f64,
        clip: Rect,
    },
    /// A filled dot, drawn only inside `clip`.
    Marker {
        center: (f64, f64),
        radius: f64,
        color: Rgb,
        clip: Rect,
    },
    /// One line of text. Horizontal text: `at.0` is the anchor along the text, `at.1` the top of
    /// the character cell. Vertical text reads bottom to top: `at.0` is the left of the cell,
    /// `at.1` the anchor along the text.
    Text {
        at: (f64, f64),
        text: String,
        anchor: Anchor,
        vertical: bool,
        bold: bool,
        color: Rgb,
    },
}

/// Everything to draw, in painting order, on a `width` × `height` canvas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scene {
    pub width: u32,
    pub height: u32,
    pub shapes: Vec<Shape>,
}
