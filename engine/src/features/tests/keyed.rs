//! The keyed operators' pure parts.

use crate::features::keyed::by_key_and_time;
use crate::features::value::Value;

/// Every key's updates of one time come in one call, each (key, time) once, a key's times in
/// order and a group's values in order, whatever order the updates came in.
#[test]
fn updates_are_grouped_by_key_then_time_with_values_in_order() {
    let keys = [
        Value::from("b"),
        Value::from("a"),
        Value::Int(3),
        Value::from("a"),
    ];
    let mut updates = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        for time in [7u64, 2, 7, 5] {
            let value = (10 - i as i64) * 100 + time as i64;
            updates.push(((key.clone(), value), time, 1isize));
        }
    }
    let total = updates.len();
    let mut seen: Vec<(Value, u64, Vec<i64>)> = Vec::new();
    by_key_and_time(updates, |key, time, group| {
        assert!(group.iter().all(|((k, _), t, _)| k == key && *t == time));
        seen.push((
            key.clone(),
            time,
            group.iter().map(|((_, v), _, _)| *v).collect(),
        ));
    });
    assert_eq!(seen.iter().map(|s| s.2.len()).sum::<usize>(), total);
    for (key, time, values) in &seen {
        assert!(
            values.is_sorted(),
            "values of {key:?} at {time}: {values:?}"
        );
        let same = seen.iter().filter(|s| &s.0 == key && s.1 == *time).count();
        assert_eq!(same, 1, "{key:?} at {time} came in {same} calls");
    }
    for key in [Value::from("a"), Value::from("b"), Value::Int(3)] {
        let times: Vec<u64> = seen.iter().filter(|s| s.0 == key).map(|s| s.1).collect();
        assert_eq!(times, vec![2, 5, 7], "times of {key:?}");
    }
    let a_at_7: &Vec<i64> = &seen
        .iter()
        .find(|s| s.0 == Value::from("a") && s.1 == 7)
        .unwrap()
        .2;
    assert_eq!(a_at_7, &vec![707, 707, 907, 907]);
}
