//! The SQL subset mapped onto `[features]`, and the constructs outside it named.

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::resolve;
use crate::spec::{FeatureAggregateSpec, FeatureTableSpec, FeaturesSpec, TableJoin};

fn records(time: DataType) -> Schema {
    Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("ts", time, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("label", DataType::Int64, true),
    ])
}

fn users() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("score", DataType::Float64, true),
        Field::new("tier", DataType::Utf8, true),
    ])
}

fn written(sql: &str, table: bool) -> FeaturesSpec {
    FeaturesSpec {
        name: "features".into(),
        key: String::new(),
        table: table.then(|| FeatureTableSpec {
            name: Some("users".into()),
            path: "/tables/users".into(),
            refresh: Some("1s".parse().unwrap()),
            ..Default::default()
        }),
        aggregates: Vec::new(),
        sql: Some(sql.into()),
    }
}

fn resolved(sql: &str, time: DataType) -> crate::Result<FeaturesSpec> {
    let table = sql.contains("users");
    resolve(
        &written(sql, table),
        &records(time),
        "ts",
        table.then(users).as_ref(),
    )
}

fn agg(name: &str, kind: &str, column: Option<&str>, window: Option<&str>) -> FeatureAggregateSpec {
    FeatureAggregateSpec {
        name: name.into(),
        kind: kind.parse().unwrap(),
        column: column.map(String::from),
        window: window.map(|w| w.parse().unwrap()),
    }
}

/// The error `sql` gets, resolved and checked as the job checks it.
fn error(sql: &str) -> String {
    let spec = match resolved(sql, DataType::Int64) {
        Err(e) => return e.to_string(),
        Ok(spec) => spec,
    };
    match spec.view() {
        Err(e) => e.to_string(),
        Ok(_) => panic!("`{sql}` was accepted: {spec:?}"),
    }
}

#[test]
fn window_functions_over_a_left_join_become_the_view() {
    let sql = "SELECT events.*, score, tier,
                      COUNT(*) OVER last_second AS n_1s,
                      SUM(amount) OVER (PARTITION BY user_id ORDER BY ts) AS spend,
                      AVG(amount) OVER last_second AS avg_1s,
                      MAX(amount) OVER last_second AS max_1s,
                      COUNT(DISTINCT label) OVER (PARTITION BY user_id ORDER BY ts
                          RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS labels,
                      LAST_VALUE(amount) OVER last_second AS last_amount
               FROM events LEFT JOIN users USING (user_id)
               WINDOW last_second AS (PARTITION BY user_id ORDER BY ts
                                      RANGE BETWEEN 999 PRECEDING AND CURRENT ROW)";
    let spec = resolved(sql, DataType::Int64).unwrap();
    assert_eq!(spec.key, "user_id");
    let table = spec.table.clone().unwrap();
    assert_eq!(table.key, None, "the same name on both sides");
    assert_eq!(table.columns, ["score", "tier"]);
    assert_eq!(table.join, TableJoin::Left);
    assert_eq!(
        table.refresh.as_ref().map(|r| r.as_str()),
        Some("1s"),
        "kept as written"
    );
    let mut aggregates = spec.aggregates.clone();
    aggregates.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        aggregates,
        [
            agg("avg_1s", "mean", Some("amount"), Some("1000ms")),
            agg("labels", "count_distinct", Some("label"), None),
            agg("last_amount", "last", Some("amount"), Some("1000ms")),
            agg("max_1s", "max", Some("amount"), Some("1000ms")),
            agg("n_1s", "count", None, Some("1000ms")),
            agg("spend", "sum", Some("amount"), None),
        ]
    );
    // [t - 999, t] in SQL is the view's (t - 1000, t].
    let view = spec.view().unwrap();
    let n_1s = view.aggregates.iter().find(|a| a.name == "n_1s").unwrap();
    assert_eq!(n_1s.window_ms, Some(1000));
}

#[test]
fn intervals_over_a_timestamp_an_on_join_and_group_by() {
    let time = DataType::Timestamp(TimeUnit::Millisecond, None);
    let spec = resolved(
        "SELECT u.tier, SUM(e.amount) OVER (PARTITION BY e.user_id ORDER BY e.ts
                    RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS spend_1h
         FROM events e LEFT JOIN users u ON e.user_id = u.id",
        time.clone(),
    )
    .unwrap();
    assert_eq!(spec.key, "user_id");
    let table = spec.table.unwrap();
    assert_eq!(
        (table.key.as_deref(), table.columns),
        (Some("id"), vec!["tier".to_string()])
    );
    assert_eq!(
        spec.aggregates,
        [agg("spend_1h", "sum", Some("amount"), Some("3600001ms"))]
    );

    let grouped = resolved(
        "SELECT user_id, COUNT(*) AS n, MIN(amount) AS least FROM events GROUP BY user_id",
        time,
    )
    .unwrap();
    assert_eq!(grouped.key, "user_id");
    assert!(grouped.table.is_none());
    assert_eq!(
        grouped.aggregates,
        [
            agg("n", "count", None, None),
            agg("least", "min", Some("amount"), None)
        ]
    );

    let inner = resolved(
        "SELECT score FROM events JOIN users USING (user_id)",
        DataType::Int64,
    )
    .unwrap();
    assert_eq!(inner.table.unwrap().join, TableJoin::Inner);
}

#[test]
fn constructs_outside_the_subset_are_named() {
    let join = "FROM events LEFT JOIN users USING (user_id)";
    let over = "OVER (PARTITION BY user_id ORDER BY ts)";
    let cases: Vec<(String, &str)> = vec![
        (format!("SELECT score {join} WHERE amount > 1"), "WHERE"),
        (format!("SELECT score {join} ORDER BY ts"), "ORDER BY"),
        (format!("SELECT score {join} LIMIT 5"), "LIMIT"),
        (
            "SELECT score FROM events RIGHT JOIN users USING (user_id)".into(),
            "a RIGHT JOIN",
        ),
        (format!("SELECT SUM(amount) {over} {join}"), "name the aggregate"),
        (format!("SELECT score AS s {join}"), "renaming the table column `score`"),
        (format!("SELECT amount * 2 AS double {join}"), "the expression"),
        (format!("SELECT COUNT(amount) {over} AS n {join}"), "COUNT(amount)"),
        (format!("SELECT LAG(amount) {over} AS prev {join}"), "window function `lag`"),
        (
            format!("SELECT SUM(amount) OVER (PARTITION BY user_id ORDER BY amount) AS s {join}"),
            "ORDER BY ts",
        ),
        (
            format!(
                "SELECT SUM(amount) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS s {join}"
            ),
            "a ROWS frame",
        ),
        (
            format!(
                "SELECT SUM(amount) OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN 5 PRECEDING AND 5 FOLLOWING) AS s {join}"
            ),
            "CURRENT ROW",
        ),
        (
            format!("SELECT SUM(amount) OVER (PARTITION BY label ORDER BY ts) AS s {join}"),
            "PARTITION BY on `label`",
        ),
        (
            format!("SELECT SUM(amount) OVER (ORDER BY ts) AS s {join}"),
            "without PARTITION BY",
        ),
        (
            "SELECT score, COUNT(*) OVER (PARTITION BY user_id ORDER BY ts) AS n FROM events JOIN users USING (user_id)".into(),
            "an inner join with aggregates",
        ),
        ("SELECT score FROM events LEFT JOIN people USING (user_id)".into(), "people"),
        ("SELECT amount FROM events".into(), "names no key"),
        (
            "SELECT user_id, SUM(amount) AS s FROM events GROUP BY user_id HAVING SUM(amount) > 1".into(),
            "WHERE (or HAVING)",
        ),
    ];
    for (sql, want) in cases {
        let got = error(&sql);
        assert!(got.contains(want), "`{sql}`: {got}");
        assert!(got.contains("features"), "`{sql}`: {got}");
    }
}

#[test]
fn settings_the_sql_replaces_are_refused_beside_it() {
    let mut spec = written(
        "SELECT score FROM events LEFT JOIN users USING (user_id)",
        true,
    );
    spec.key = "user_id".into();
    let e = resolve(&spec, &records(DataType::Int64), "ts", Some(&users())).unwrap_err();
    assert!(e.to_string().contains("features.key"), "{e}");
    let mut spec = written(
        "SELECT score FROM events LEFT JOIN users USING (user_id)",
        true,
    );
    spec.table.as_mut().unwrap().name = None;
    let e = resolve(&spec, &records(DataType::Int64), "ts", Some(&users())).unwrap_err();
    assert!(e.to_string().contains("features.table.name"), "{e}");
}
