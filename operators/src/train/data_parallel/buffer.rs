//! The reused buffers one step's rows are gathered into.

use millrace_ml::preprocess::Targets;
use millrace_ml::trainer::TargetsRef;

/// Reused buffers for one step's rows, gathered in the epoch's order.
#[derive(Default)]
pub(super) struct BatchBuffer {
    x: Vec<f32>,
    classes: Vec<i64>,
    values: Vec<f32>,
}

impl BatchBuffer {
    /// The features and targets of the `picked` rows of `x` (`dim` features a row).
    pub(super) fn fill<'a>(
        &'a mut self,
        x: &[f32],
        dim: usize,
        targets: &Targets,
        picked: &[(u64, u32)],
    ) -> (&'a [f32], TargetsRef<'a>) {
        self.x.clear();
        for &(_, r) in picked {
            let r = r as usize;
            self.x.extend_from_slice(&x[r * dim..(r + 1) * dim]);
        }
        let y = match targets {
            Targets::Classes(c) => {
                self.classes.clear();
                self.classes
                    .extend(picked.iter().map(|&(_, r)| c[r as usize]));
                TargetsRef::Classes(&self.classes)
            }
            Targets::Values(v) => {
                self.values.clear();
                self.values
                    .extend(picked.iter().map(|&(_, r)| v[r as usize]));
                TargetsRef::Values(&self.values)
            }
        };
        (&self.x, y)
    }
}
