//! Borrowed training targets.

/// The targets of a batch of rows, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TargetsRef<'a> {
    /// Class indices in `0..num_classes` (classification).
    Classes(&'a [i64]),
    /// Target values (regression).
    Values(&'a [f32]),
}

impl TargetsRef<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            TargetsRef::Classes(c) => c.len(),
            TargetsRef::Values(v) => v.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `start..end` (clamped to the length).
    pub fn slice(&self, start: usize, end: usize) -> Self {
        let clamp = |len: usize| (start.min(len), end.min(len).max(start.min(len)));
        match *self {
            TargetsRef::Classes(c) => {
                let (s, e) = clamp(c.len());
                TargetsRef::Classes(&c[s..e])
            }
            TargetsRef::Values(v) => {
                let (s, e) = clamp(v.len());
                TargetsRef::Values(&v[s..e])
            }
        }
    }
}
