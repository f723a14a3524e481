//! Streaming building blocks.

pub mod window;
