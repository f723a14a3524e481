//! The figure model (figure → panels → series) and its PNG/SVG output.

use std::path::Path;

use super::{CurvesError, Result, plot};

/// The size [`Figure::write`] renders at.
pub const DEFAULT_WIDTH: u32 = 1200;
/// The size [`Figure::write`] renders at.
pub const DEFAULT_HEIGHT: u32 = 500;
/// The largest width or height [`Figure::to_png`] accepts.
pub const MAX_SIDE: u32 = 8192;

/// One named curve: `(step, value)` points. Non-finite points are skipped when drawing; points
/// out of step order are drawn in step order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Shown in the panel's legend.
    pub name: String,
    /// `(step, value)` pairs.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series called `name` with the given `(step, value)` points.
    #[must_use]
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// One chart: a title, axis labels and the series drawn on shared axes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panel {
    /// Shown above the plot.
    pub title: String,
    /// Shown under the x axis (usually "step").
    pub x_label: String,
    /// Shown, rotated, left of the y axis.
    pub y_label: String,
    /// The curves, coloured in order from a 10-colour palette.
    pub series: Vec<Series>,
}

impl Panel {
    /// An empty panel titled `title`.
    #[must_use]
    pub fn new(title: impl Into<String>) -> Self {
        Panel {
            title: title.into(),
            ..Panel::default()
        }
    }

    /// Sets the x and y axis labels.
    #[must_use]
    pub fn with_axes(mut self, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        self.x_label = x_label.into();
        self.y_label = y_label.into();
        self
    }

    /// Adds a series.
    #[must_use]
    pub fn with_series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }
}

/// A titled row of panels, e.g. "training loss" next to "eval accuracy".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figure {
    /// Shown centred above all panels; omitted when empty.
    pub title: String,
    /// Laid out left to right with equal widths.
    pub panels: Vec<Panel>,
}

impl Figure {
    /// A figure titled `title` with no panels yet.
    #[must_use]
    pub fn new(title: impl Into<String>) -> Self {
        Figure {
            title: title.into(),
            panels: Vec::new(),
        }
    }

    /// Adds a panel to the right of the existing ones.
    #[must_use]
    pub fn with_panel(mut self, panel: Panel) -> Self {
        self.panels.push(panel);
        self
    }

    /// Renders the figure as an 8-bit RGB PNG of `width` × `height` pixels.
    ///
    /// # Errors
    ///
    /// [`CurvesError::InvalidSize`] when a side is 0 or above [`MAX_SIDE`].
    pub fn to_png(&self, width: u32, height: u32) -> Result<Vec<u8>> {
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(CurvesError::InvalidSize { width, height });
        }
        plot::png(self, width, height)
    }

    /// Renders the figure as a standalone SVG document of `width` × `height` pixels, with text as
    /// `<text>` elements.
    ///
    /// # Errors
    ///
    /// [`CurvesError::InvalidSize`] when a side is 0 or above [`MAX_SIDE`].
    pub fn to_svg(&self, width: u32, height: u32) -> Result<String> {
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(CurvesError::InvalidSize { width, height });
        }
        plot::svg(self, width, height)
    }

    /// Writes the figure as a PNG to `png_path` and, if given, as an SVG to `svg_path`, both at
    /// [`DEFAULT_WIDTH`] × [`DEFAULT_HEIGHT`].
    ///
    /// # Errors
    ///
    /// [`CurvesError::Write`], naming the file, when a file cannot be written.
    pub fn write(&self, png_path: &Path, svg_path: Option<&Path>) -> Result<()> {
        let png = self.to_png(DEFAULT_WIDTH, DEFAULT_HEIGHT)?;
        write_file(png_path, &png)?;
        if let Some(path) = svg_path {
            write_file(path, self.to_svg(DEFAULT_WIDTH, DEFAULT_HEIGHT)?.as_bytes())?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| CurvesError::Write {
        path: path.to_path_buf(),
        source,
    })
}
