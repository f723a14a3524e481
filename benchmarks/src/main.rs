//! millrace's end-to-end benchmarks; see benchmarks/README.md.
fn main() {}
