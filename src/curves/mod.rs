//! Training curves as pictures a person can read at a glance, drawn with plotters: PNG (its bitmap
//! backend, text in the embedded DejaVu Sans, so no system fonts are needed) and SVG (its SVG
//! backend, real text).
//!
//! A [`Figure`] is a row of [`Panel`]s (say "training loss" and "eval accuracy"); each panel
//! draws its [`Series`] of `(step, value)` points as lines on plotters' axes (ticks labelled
//! compactly: `0.5`, `20k`, `2.5M`, `1e-3`), with gridlines, a title, axis labels and a legend in
//! the corner the data leaves emptiest. NaN and infinite points are skipped, a one-point series is drawn as a
//! dot, a flat series sits mid-panel, a panel without data says "no data", and long series are
//! thinned to the lowest and highest point of each pixel column, so a 100k-step loss curve draws
//! quickly and still shows every spike.
//!
//! ```
//! use millrace::curves::{Figure, Panel, Series};
//!
//! let loss: Vec<(f64, f64)> = (0..1000).map(|s| (s as f64, 2.0 / (1.0 + s as f64 / 50.0))).collect();
//! let figure = Figure::new("run 42").with_panel(
//!     Panel::new("training loss")
//!         .with_axes("step", "loss")
//!         .with_series(Series::new("train", loss)),
//! );
//! let png = figure.to_png(800, 400)?;
//! assert!(png.starts_with(b"\x89PNG"));
//! let svg = figure.to_svg(800, 400)?;
//! assert!(svg.contains("training loss"));
//! # Ok::<(), millrace::curves::CurvesError>(())
//! ```

mod figure;
mod plot;
mod series;
mod ticks;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use figure::{DEFAULT_HEIGHT, DEFAULT_WIDTH, Figure, MAX_SIDE, Panel, Series};
pub use plot::series_color;
pub use ticks::format_tick;

/// What can go wrong when rendering or saving a figure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CurvesError {
    /// The caller asked for an image size that cannot be drawn.
    #[error(
        "cannot draw a {width}x{height} figure: width and height must be between 1 and {MAX_SIDE} pixels"
    )]
    InvalidSize {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
    },
    /// plotters could not draw the figure; this is a bug in this module.
    #[error("could not draw the figure (a bug in millrace::curves): {0}")]
    Draw(String),
    /// The PNG encoder rejected the image; this is a bug in this module.
    #[error("could not encode the figure as PNG (a bug in millrace::curves): {0}")]
    Encode(#[from] png::EncodingError),
    /// The file system refused the output file (missing folder, permissions, full disk).
    #[error("could not write the figure to {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Results of this module.
pub type Result<T, E = CurvesError> = std::result::Result<T, E>;
