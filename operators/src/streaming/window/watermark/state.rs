//! A windower's state for checkpoints: [`Windower::snapshot`] and [`Windower::restore`].

use serde::{Deserialize, Serialize};

use super::*;

/// A [`Windower`]'s state, for a checkpoint: from [`Windower::snapshot`], back with
/// [`Windower::restore`], possibly into another windower (of the same spec) or several states into
/// one windower. Serializable with serde (e.g. bincode or JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// Every open window with its partial aggregates, in `(end, start, key)` order.
    pub open: Vec<WindowResult>,
    /// The largest watermark windows were closed at (see [`Windower::closed_watermark`]);
    /// `None` when nothing was closed yet.
    pub closed_ms: Option<i64>,
    /// The largest event time seen, epoch ms; `None` before any row with an event time.
    pub max_event_ms: Option<i64>,
}

impl Windower {
    /// The state of this windower for a checkpoint: every open window with its partial
    /// aggregates, in `(end, start, key)` order, the closing frontier and the largest event time.
    /// The windower is not changed.
    pub fn snapshot(&self) -> WindowState {
        let size = self.r.size_ms;
        let mut open: Vec<WindowResult> = self
            .slots
            .iter()
            .filter(|slot| slot.live)
            .map(|slot| WindowResult {
                start_ms: slot.start,
                end_ms: slot.start + size,
                key: slot.key.clone(),
                state: slot.accs.clone(),
            })
            .collect();
        open.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        WindowState {
            open,
            closed_ms: self.closed_watermark(),
            max_event_ms: self.max_event_ms,
        }
    }

    /// Merges a [`Self::snapshot`] (of a windower with the same spec) into this windower: its open
    /// windows are added to this one's (the partial aggregates of the same window and key merged,
    /// as [`super::merge`] does), and the closing frontier and the largest event time become the
    /// larger of the two. Restoring each worker's state into its own fresh windower, or several
    /// workers' states into one (calling this once per state), gives the same later results,
    /// merged with [`super::merge_all`], as the original windowers, as long as they were closed at
    /// the same watermark (as a job does with [`combined_watermark`]). An open window that ends at
    /// or before the merged frontier takes no more rows, and is emitted by the next
    /// [`Self::close`] that reaches its end, or by [`Self::flush_all`].
    ///
    /// Fails with [`Error::Checkpoint`], naming the window, and without changing this windower,
    /// when the state does not fit the spec: a window's aggregates differ in number or function,
    /// its start is not a multiple of the slide, its end is not its start plus the size, it holds
    /// no usable event time, or its key does not fit the key column.
    pub fn restore(&mut self, state: WindowState) -> Result<()> {
        for w in &state.open {
            self.check_restored(w)?;
        }
        if let Some(m) = state.max_event_ms
            && !(-MAX_TIME_MS..=MAX_TIME_MS).contains(&m)
        {
            return Err(Error::Checkpoint(format!(
                "window state: the largest event time {m} ms is beyond the usable range of ±{MAX_TIME_MS} ms"
            )));
        }
        for w in state.open {
            let idx = self.find_or_open(w.start_ms, KeyRef::of(&w.key));
            for (acc, s) in self.slots[idx].accs.iter_mut().zip(&w.state) {
                if !acc.merge(s) {
                    return Err(Error::Internal(format!(
                        "window state {} passed the check but does not merge",
                        describe(&w)
                    )));
                }
            }
        }
        self.closed_ms = self.closed_ms.max(state.closed_ms.unwrap_or(i64::MIN));
        self.max_event_ms = self.max_event_ms.max(state.max_event_ms);
        Ok(())
    }

    /// Checks that a restored window fits this windower's spec.
    fn check_restored(&self, w: &WindowResult) -> Result<()> {
        let bad = |why: String| {
            Err(Error::Checkpoint(format!(
                "window state {} does not fit the window spec: {why}",
                describe(w)
            )))
        };
        let (size, slide) = (self.r.size_ms, self.r.slide_ms);
        if w.start_ms.rem_euclid(slide) != 0 {
            return bad(format!(
                "its start is not a multiple of the slide ({slide} ms)"
            ));
        }
        if w.start_ms.checked_add(size) != Some(w.end_ms) {
            return bad(format!("it is not {size} ms long, the window size"));
        }
        if w.start_ms > MAX_TIME_MS || w.end_ms <= -MAX_TIME_MS {
            return bad(format!(
                "it holds no event time within the usable range of ±{MAX_TIME_MS} ms"
            ));
        }
        let key_fits = matches!(
            (&self.r.key, &w.key),
            (None, None)
                | (Some(_), Some(KeyValue::Null))
                | (Some(KeyKind::Int(_)), Some(KeyValue::Int(_)))
                | (Some(KeyKind::Str(_)), Some(KeyValue::Str(_)))
        );
        if !key_fits {
            let want = match &self.r.key {
                None => "no key",
                Some(KeyKind::Int(_)) => "an integer or null key",
                Some(KeyKind::Str(_)) => "a string or null key",
            };
            return bad(format!("the spec groups by {want}"));
        }
        if w.state.len() != self.r.aggs.len() {
            return bad(format!(
                "it has {} aggregate states, the spec has {} aggregates",
                w.state.len(),
                self.r.aggs.len()
            ));
        }
        for (i, (s, (f, _))) in w.state.iter().zip(&self.r.aggs).enumerate() {
            if s.function() != *f {
                return bad(format!(
                    "aggregate {i} ({:?}) is {f:?} in the spec, but the state is {:?}",
                    self.spec.aggregates[i].name,
                    s.function()
                ));
            }
        }
        Ok(())
    }
}

/// A window for error messages: `[start, end) of key …`.
fn describe(w: &WindowResult) -> String {
    let key = match &w.key {
        None => String::new(),
        Some(KeyValue::Null) => " of the null key".into(),
        Some(KeyValue::Int(v)) => format!(" of key {v}"),
        Some(KeyValue::Str(s)) => format!(" of key {s:?}"),
    };
    format!("[{}, {}){key}", w.start_ms, w.end_ms)
}
