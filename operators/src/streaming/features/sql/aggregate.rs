//! One aggregate of the query: a window function or a GROUP BY aggregate, its function and
//! input, and its window read off the `OVER` clause (partition, order and frame).

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    Expr, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use millrace_engine::features::AggKind;

use super::{Query, computed_outside, outside};
use crate::Result;
use crate::spec::{DurationText, FeatureAggregateSpec};

impl Query<'_> {
    /// The feature `name` computed by `e`, a window function or a GROUP BY aggregate.
    pub(super) fn aggregate(&mut self, name: &str, mut e: &Expr) -> Result<()> {
        while let Expr::Alias(a) = e {
            e = a.expr.as_ref();
        }
        let (function, args, distinct, window_ms) = match e {
            Expr::WindowFunction(w) => {
                let WindowFunction { fun, params } = w.as_ref();
                let function = match fun {
                    WindowFunctionDefinition::AggregateUDF(udf) => udf.name(),
                    WindowFunctionDefinition::WindowUDF(udf) if udf.name() == "last_value" => {
                        udf.name()
                    }
                    WindowFunctionDefinition::WindowUDF(_) => {
                        return Err(outside(
                            format!("the window function `{fun}` (in `{name}`)"),
                            "use COUNT, SUM, AVG, MIN, MAX, LAST_VALUE or COUNT(DISTINCT)",
                        ));
                    }
                };
                if let Some(filter) = &params.filter {
                    return Err(outside(
                        format!("FILTER (WHERE {filter}) in `{name}`"),
                        "filter the records in [preprocess] sql",
                    ));
                }
                self.partition(name, &params.partition_by)?;
                self.order(name, &params.order_by)?;
                let window_ms = self.frame(name, &params.window_frame)?;
                (
                    function.to_string(),
                    &params.args,
                    params.distinct,
                    window_ms,
                )
            }
            Expr::AggregateFunction(a) => {
                let AggregateFunction { func, params } = a;
                if let Some(filter) = &params.filter {
                    return Err(outside(
                        format!("FILTER (WHERE {filter}) in `{name}`"),
                        "filter the records in [preprocess] sql",
                    ));
                }
                if !params.order_by.is_empty() {
                    return Err(outside(
                        format!("ORDER BY inside `{name}`"),
                        "aggregates follow event time",
                    ));
                }
                (func.name().to_string(), &params.args, params.distinct, None)
            }
            other => return Err(computed_outside(other)),
        };
        let column = match args.as_slice() {
            [Expr::Column(c)] if self.is_events(c) => Some(c.name.clone()),
            [Expr::Literal(..)] | [] => None,
            [other] => {
                return Err(outside(
                    format!("the aggregate input `{other}` (in `{name}`)"),
                    "aggregate a records' column; compute it in [preprocess] sql",
                ));
            }
            _ => {
                return Err(outside(
                    format!("`{function}` with {} arguments (in `{name}`)", args.len()),
                    "aggregate one column",
                ));
            }
        };
        let kind = match (function.as_str(), distinct, &column) {
            ("count", false, None) => AggKind::Count,
            ("count", true, Some(_)) => AggKind::CountDistinct,
            ("sum", false, Some(_)) => AggKind::Sum,
            ("avg", false, Some(_)) => AggKind::Mean,
            ("min", false, Some(_)) => AggKind::Min,
            ("max", false, Some(_)) => AggKind::Max,
            ("last_value", false, Some(_)) => AggKind::Last,
            ("count", false, Some(c)) => {
                return Err(outside(
                    format!("COUNT({c}) (in `{name}`)"),
                    "COUNT(*) counts the events, COUNT(DISTINCT c) the distinct values",
                ));
            }
            (f, true, _) => {
                return Err(outside(
                    format!("{f}(DISTINCT …) (in `{name}`)"),
                    "only COUNT takes DISTINCT",
                ));
            }
            (f, _, _) => {
                return Err(outside(
                    format!("the aggregate `{f}` (in `{name}`)"),
                    "use COUNT, SUM, AVG, MIN, MAX, LAST_VALUE or COUNT(DISTINCT)",
                ));
            }
        };
        self.features.push(FeatureAggregateSpec {
            name: name.to_string(),
            kind,
            column,
            window: window_ms.map(DurationText::from_millis),
        });
        Ok(())
    }

    fn partition(&mut self, name: &str, by: &[Expr]) -> Result<()> {
        match by {
            [Expr::Column(c)] if self.is_events(c) => self.agree_on_key(&c.name, "PARTITION BY"),
            [] => Err(outside(
                format!("`{name}` without PARTITION BY"),
                "aggregates are per key: PARTITION BY the key column",
            )),
            _ => Err(outside(
                format!("the PARTITION BY of `{name}`"),
                "partition by the records' key column alone",
            )),
        }
    }

    fn order(&self, name: &str, by: &[datafusion::logical_expr::SortExpr]) -> Result<()> {
        match by {
            [s] if s.asc && matches!(&s.expr, Expr::Column(c) if c.name == self.time_column) => {
                Ok(())
            }
            _ => Err(outside(
                format!("the ORDER BY of `{name}`"),
                &format!(
                    "a feature is as of each record's event time: ORDER BY {} (ascending)",
                    self.time_column
                ),
            )),
        }
    }

    /// The view's window for a frame: `None` for every event so far.
    fn frame(
        &self,
        name: &str,
        frame: &datafusion::logical_expr::WindowFrame,
    ) -> Result<Option<u64>> {
        if frame.units != WindowFrameUnits::Range {
            return Err(outside(
                format!("a {} frame (in `{name}`)", frame.units),
                "windows are event-time ranges: RANGE BETWEEN … PRECEDING AND CURRENT ROW",
            ));
        }
        if frame.end_bound != WindowFrameBound::CurrentRow {
            return Err(outside(
                format!("a frame ending at {} (in `{name}`)", frame.end_bound),
                "a feature must not see later events: end the frame at CURRENT ROW",
            ));
        }
        match &frame.start_bound {
            WindowFrameBound::Preceding(v) if v.is_null() => Ok(None),
            WindowFrameBound::Preceding(v) => {
                let ms = span_ms(v).ok_or_else(|| {
                    outside(
                        format!("the frame offset `{v}` (in `{name}`)"),
                        "give whole milliseconds (int64 event time) or an INTERVAL of days, hours, … milliseconds",
                    )
                })?;
                Ok(Some(ms + 1))
            }
            other => Err(outside(
                format!("a frame starting at {other} (in `{name}`)"),
                "start it at <n> PRECEDING or UNBOUNDED PRECEDING",
            )),
        }
    }
}

/// A frame offset in milliseconds: an integer (an int64 event time is in ms) or an interval
/// without months.
fn span_ms(v: &ScalarValue) -> Option<u64> {
    let ms: i128 = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            let nanos = i128::from(i.days) * 86_400_000_000_000 + i128::from(i.nanoseconds);
            (nanos % 1_000_000 == 0).then_some(nanos / 1_000_000)?
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            i128::from(i.days) * 86_400_000 + i128::from(i.milliseconds)
        }
        ScalarValue::Utf8(Some(text)) => text.trim().parse().ok()?,
        v if v.data_type().is_integer() => match v.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(n)) => n.into(),
            _ => return None,
        },
        _ => return None,
    };
    u64::try_from(ms).ok()
}
