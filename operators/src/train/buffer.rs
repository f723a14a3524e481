//! The reused buffers one step's rows are gathered into.

use millrace_ml::preprocess::Targets;
use millrace_ml::trainer::TargetsRef;

/// Reused buffers for one step's rows, gathered in the epoch's order.
#[derive(Default)]
pub(crate) struct BatchBuffer {
    x: Vec<f32>,
    classes: Vec<i64>,
    values: Vec<f32>,
    regression: bool,
}

impl BatchBuffer {
    /// Empties the buffers for the next step.
    pub(crate) fn clear(&mut self) {
        self.x.clear();
        self.classes.clear();
        self.values.clear();
    }

    /// Appends the `picked` rows of `x` (`dim` features a row) and their targets.
    pub(crate) fn extend(
        &mut self,
        x: &[f32],
        dim: usize,
        targets: &Targets,
        picked: &[(u64, u32)],
    ) {
        for &(_, r) in picked {
            let r = r as usize;
            self.x.extend_from_slice(&x[r * dim..(r + 1) * dim]);
        }
        match targets {
            Targets::Classes(c) => {
                self.regression = false;
                self.classes
                    .extend(picked.iter().map(|&(_, r)| c[r as usize]));
            }
            Targets::Values(v) => {
                self.regression = true;
                self.values
                    .extend(picked.iter().map(|&(_, r)| v[r as usize]));
            }
        }
    }

    /// The rows gathered since the last [`BatchBuffer::clear`].
    pub(crate) fn view(&self) -> (&[f32], TargetsRef<'_>) {
        let y = if self.regression {
            TargetsRef::Values(&self.values)
        } else {
            TargetsRef::Classes(&self.classes)
        };
        (&self.x, y)
    }
}
