//! Delta schema JSON → Arrow types.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use serde_json::Value;

/// Delta primitive/nested type JSON → Arrow [`DataType`].
///
/// Lists use an item field named `element` and maps `key_value { key, value }`, as in Parquet.
pub fn delta_type_to_arrow(value: &Value) -> Result<DataType, String> {
    match value {
        Value::String(name) => primitive_type(name),
        Value::Object(obj) => match obj.get("type").and_then(Value::as_str) {
            Some("struct") => {
                let fields = obj
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or("struct type without a `fields` array")?;
                Ok(DataType::Struct(struct_fields(fields)?))
            }
            Some("array") => {
                let element = obj
                    .get("elementType")
                    .ok_or("array type without `elementType`")?;
                let element =
                    delta_type_to_arrow(element).map_err(|e| format!("array element: {e}"))?;
                let nullable = obj
                    .get("containsNull")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                Ok(DataType::List(Arc::new(Field::new(
                    "element", element, nullable,
                ))))
            }
            Some("map") => {
                let key = obj.get("keyType").ok_or("map type without `keyType`")?;
                let key = delta_type_to_arrow(key).map_err(|e| format!("map key: {e}"))?;
                let value = obj.get("valueType").ok_or("map type without `valueType`")?;
                let value = delta_type_to_arrow(value).map_err(|e| format!("map value: {e}"))?;
                let nullable = obj
                    .get("valueContainsNull")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                let entries = Fields::from(vec![
                    Field::new("key", key, false),
                    Field::new("value", value, nullable),
                ]);
                let entries = Field::new("key_value", DataType::Struct(entries), false);
                Ok(DataType::Map(Arc::new(entries), false))
            }
            Some(other) => Err(format!("unknown nested type `{other}`")),
            None => Err("nested type without a `type` name".to_string()),
        },
        other => Err(format!(
            "expected a type name or a type object, got `{other}`"
        )),
    }
}

pub(super) fn primitive_type(name: &str) -> Result<DataType, String> {
    Ok(match name {
        "string" => DataType::Utf8,
        "long" => DataType::Int64,
        "integer" => DataType::Int32,
        "short" => DataType::Int16,
        "byte" => DataType::Int8,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "boolean" => DataType::Boolean,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => {
            let Some(args) = name
                .strip_prefix("decimal(")
                .and_then(|r| r.strip_suffix(')'))
            else {
                return Err(format!("unknown or unsupported type `{name}`"));
            };
            let bad = || {
                format!(
                    "bad decimal type `{name}`: expected decimal(precision,scale) with 1 <= precision <= 38 and 0 <= scale <= precision"
                )
            };
            let (p, s) = args.split_once(',').ok_or_else(bad)?;
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            let s: i8 = s.trim().parse().map_err(|_| bad())?;
            if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
                return Err(bad());
            }
            DataType::Decimal128(p, s)
        }
    })
}

pub(super) fn struct_fields(fields: &[Value]) -> Result<Fields, String> {
    let fields = fields.iter().map(|f| {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or("struct field without a `name`")?;
        let ty = f
            .get("type")
            .ok_or_else(|| format!("field `{name}` has no `type`"))?;
        let ty = delta_type_to_arrow(ty).map_err(|e| format!("field `{name}`: {e}"))?;
        let nullable = f.get("nullable").and_then(Value::as_bool).unwrap_or(true);
        Ok::<_, String>(Field::new(name, ty, nullable))
    });
    fields.collect::<Result<Vec<_>, _>>().map(Fields::from)
}
