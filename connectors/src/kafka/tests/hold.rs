//! What a source keeps of held partitions (no broker needed).

use std::collections::BTreeSet;

use crate::kafka::RawMessage;
use crate::kafka::hold::Hold;

fn message(partition: i32, offset: i64, bytes: usize) -> RawMessage {
    RawMessage {
        partition,
        offset,
        timestamp_ms: None,
        key: None,
        payload: Some(vec![b'x'; bytes]),
    }
}

/// A held partition keeps its messages in order, asks to be paused once (at its cap), and after
/// it is released delivers them first, in order, a batch at a time; a message that arrives while
/// older ones are still kept is kept behind them.
#[test]
fn held_messages_are_kept_in_order_and_delivered_after_release() {
    let mut hold = Hold::default();
    hold.cap = 250;
    assert!(hold.set_held(BTreeSet::from([0])).is_empty());
    assert!(hold.keeps(0) && !hold.keeps(1));
    let pauses: Vec<bool> = (0..5).map(|o| hold.keep(message(0, o, 100))).collect();
    assert_eq!(
        pauses,
        [false, false, true, false, false],
        "paused once, at the cap"
    );
    assert!(hold.has_kept(0) && !hold.has_kept(1) && hold.keeps_any());

    let mut out = Vec::new();
    hold.release_into(&mut out, 10, |_, _| panic!("a held partition delivered"));
    assert!(out.is_empty());

    assert_eq!(
        hold.set_held(BTreeSet::new()),
        vec![0],
        "resume what was paused"
    );
    let mut delivered = Vec::new();
    hold.release_into(&mut out, 3, |p, o| delivered.push((p, o)));
    assert_eq!(delivered, [(0, 0), (0, 1), (0, 2)]);
    assert!(
        hold.keeps(0),
        "older messages still kept: a new one waits behind them"
    );
    assert!(!hold.keep(message(0, 5, 100)), "not held: never paused");
    out.clear();
    hold.release_into(&mut out, 10, |p, o| delivered.push((p, o)));
    let offsets: Vec<i64> = out.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [3, 4, 5]);
    assert!(!hold.keeps_any() && !hold.keeps(0));
}
