//! Named input tensors of an inference request → an Arrow batch of the model's raw input schema.

use super::*;

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let out: Vec<String> = names.into_iter().map(|n| format!("'{n}'")).collect();
    if out.is_empty() {
        "none".to_owned()
    } else {
        out.join(", ")
    }
}

pub(super) fn shape_str(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// What the values of a v2 datatype are in JSON.
#[derive(Clone, Copy)]
pub(super) enum Wire {
    Bool,
    Int { min: i64, max: i64 },
    UInt { max: u64 },
    Float,
    Bytes,
}

pub(super) const DATATYPES: &str =
    "BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64, BYTES";

pub(super) fn wire(datatype: &str) -> Option<Wire> {
    Some(match datatype {
        "BOOL" => Wire::Bool,
        "INT8" => Wire::Int {
            min: i8::MIN.into(),
            max: i8::MAX.into(),
        },
        "INT16" => Wire::Int {
            min: i16::MIN.into(),
            max: i16::MAX.into(),
        },
        "INT32" => Wire::Int {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        },
        "INT64" => Wire::Int {
            min: i64::MIN,
            max: i64::MAX,
        },
        "UINT8" => Wire::UInt {
            max: u8::MAX.into(),
        },
        "UINT16" => Wire::UInt {
            max: u16::MAX.into(),
        },
        "UINT32" => Wire::UInt {
            max: u32::MAX.into(),
        },
        "UINT64" => Wire::UInt { max: u64::MAX },
        "FP16" | "FP32" | "FP64" => Wire::Float,
        "BYTES" => Wire::Bytes,
        _ => return None,
    })
}

/// Whether values sent as `wire` may fill a column of type `column`.
pub(super) fn accepts(column: &DataType, wire: Wire) -> bool {
    match wire {
        Wire::Bool => matches!(column, DataType::Boolean),
        Wire::Int { .. } | Wire::UInt { .. } => {
            column.is_numeric() || matches!(column, DataType::Timestamp(_, _))
        }
        Wire::Float => column.is_floating() || (column.is_numeric() && !column.is_integer()),
        Wire::Bytes => {
            matches!(
                column,
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::Timestamp(_, _)
                    | DataType::Date32
                    | DataType::Date64
            ) || matches!(column, DataType::Dictionary(_, v) if datatype_of(v) == Some("BYTES"))
        }
    }
}

/// The values of `data`, flattened one level (`[[1], [2]]` → `[1, 2]`).
pub(super) fn flatten<'a>(name: &str, data: &'a Value) -> Result<Vec<&'a Value>, String> {
    let items = data.as_array().ok_or_else(|| {
        format!(
            "input '{name}': data must be a list of values, got {}",
            kind(data)
        )
    })?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(inner) => {
                for v in inner {
                    if v.is_array() {
                        return Err(format!(
                            "input '{name}': data is nested more than one level deep"
                        ));
                    }
                    out.push(v);
                }
            }
            v => out.push(v),
        }
    }
    Ok(out)
}

/// The rows an input's shape says it carries: `[N]` or `[N, 1]`.
pub(super) fn rows_of(input: &RequestInput) -> Result<usize, String> {
    let name = &input.name;
    let n = match input.shape.as_slice() {
        [n] | [n, 1] => *n,
        other => {
            return Err(format!(
                "input '{name}': shape {} is not supported; each input is one column, so its shape must be [N] or [N, 1]",
                shape_str(other)
            ));
        }
    };
    usize::try_from(n).map_err(|_| {
        format!(
            "input '{name}': shape {} has a negative dimension",
            shape_str(&input.shape)
        )
    })
}

/// Named input tensors → a batch of `schema` (the model's raw input schema). Every column must be
/// given exactly once and nothing else; shapes are `[N]` or `[N, 1]` with the same N throughout;
/// the datatype must match the column or be castable to it (INT*/UINT* → integer and float
/// columns, FP* → float columns, BYTES → string, date and timestamp columns); JSON `null` is a
/// null where the column is nullable.
pub fn request_to_batch(req: &InferenceRequest, schema: &SchemaRef) -> Result<RecordBatch, String> {
    request_to_batch_with(req, &[], schema)
}

/// Like [`request_to_batch`], with the binary bytes of the inputs sent in binary: `raw[i]` for
/// `req.inputs[i]` (see [`super::binary_inputs`]; empty when the body had no binary part).
pub fn request_to_batch_with(
    req: &InferenceRequest,
    raw: &[Option<&[u8]>],
    schema: &SchemaRef,
) -> Result<RecordBatch, String> {
    request_to_batch_filling(req, raw, schema, &[])
}

/// Like [`request_to_batch_with`], where the inputs named in `fillable` (nullable feature columns
/// a feature view fills in by the request's key) may be left out: each becomes a column of nulls.
pub fn request_to_batch_filling(
    req: &InferenceRequest,
    raw: &[Option<&[u8]>],
    schema: &SchemaRef,
    fillable: &[String],
) -> Result<RecordBatch, String> {
    let mut seen = HashSet::with_capacity(req.inputs.len());
    let mut unknown = Vec::new();
    for input in &req.inputs {
        if !seen.insert(input.name.as_str()) {
            return Err(format!("input '{}' is given more than once", input.name));
        }
        if schema.field_with_name(&input.name).is_err() {
            unknown.push(input.name.as_str());
        }
    }
    let expected = || quoted(schema.fields().iter().map(|f| f.name().as_str()));
    if !unknown.is_empty() {
        return Err(format!(
            "unknown input{} {}; the model's inputs are: {}",
            if unknown.len() == 1 { "" } else { "s" },
            quoted(unknown),
            expected()
        ));
    }
    let mut rows: Option<(usize, &str)> = None;
    for input in &req.inputs {
        let n = match schema
            .field_with_name(&input.name)
            .map(|f| list_item(f.data_type()))
        {
            Ok(Some(_)) => list_shape(input)?.0,
            _ => rows_of(input)?,
        };
        match rows {
            Some((first, first_name)) if first != n => {
                return Err(format!(
                    "input '{}': shape {} says {n} rows, but input '{first_name}' has {first}",
                    input.name,
                    shape_str(&input.shape)
                ));
            }
            Some(_) => {}
            None => rows = Some((n, &input.name)),
        }
    }
    let rows = rows.map_or(0, |(n, _)| n);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let at = req.inputs.iter().position(|i| i.name == *field.name());
        if at.is_none() && field.is_nullable() && fillable.contains(field.name()) {
            columns.push(arrow::array::new_null_array(field.data_type(), rows));
            continue;
        }
        let at = at.ok_or_else(|| {
            format!(
                "missing input '{}' ({}); given: {}",
                field.name(),
                input_datatype(field.data_type()).unwrap_or("unsupported"),
                quoted(req.inputs.iter().map(|i| i.name.as_str()))
            )
        })?;
        let raw = raw.get(at).copied().flatten();
        columns.push(match list_item(field.data_type()) {
            Some(item) => list_column(&req.inputs[at], raw, field.data_type(), item, rows)?,
            None => input_column(
                &req.inputs[at],
                raw,
                field.data_type(),
                field.is_nullable(),
                rows,
            )?,
        });
    }
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| e.to_string())
}

/// The element field of a list column (List, LargeList or FixedSizeList).
pub(crate) fn list_item(t: &DataType) -> Option<&FieldRef> {
    match t {
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            Some(item)
        }
        _ => None,
    }
}

/// `[N, L]`: the rows and the elements per row a list column's input carries.
fn list_shape(input: &RequestInput) -> Result<(usize, usize), String> {
    let name = &input.name;
    let [n, len] = input.shape.as_slice() else {
        return Err(format!(
            "input '{name}': shape {} is not supported; a list column is a tensor of shape [N, L] \
             (L elements per row; end a shorter row with nulls)",
            shape_str(&input.shape)
        ));
    };
    match (usize::try_from(*n), usize::try_from(*len)) {
        (Ok(n), Ok(len)) => Ok((n, len)),
        _ => Err(format!(
            "input '{name}': shape {} has a negative dimension",
            shape_str(&input.shape)
        )),
    }
}

/// A `[N, L]` input tensor → a list column of `column`'s type: row `i` is its `L` elements
/// without the nulls that end it (so rows of different lengths fit one tensor).
fn list_column(
    input: &RequestInput,
    raw: Option<&[u8]>,
    column: &DataType,
    item: &FieldRef,
    rows: usize,
) -> Result<ArrayRef, String> {
    let (_, len) = list_shape(input)?;
    let total = rows
        .checked_mul(len)
        .ok_or_else(|| format!("input '{}': shape is too large", input.name))?;
    let flat_input = RequestInput {
        shape: vec![i64::try_from(total).unwrap_or(i64::MAX)],
        ..input.clone()
    };
    let flat = input_column(&flat_input, raw, item.data_type(), true, total)?;
    // Row lengths: up to the last element that is not null.
    let mut keep = Vec::with_capacity(total);
    let mut lengths = Vec::with_capacity(rows);
    for row in 0..rows {
        let at = row * len;
        let used = (0..len)
            .rev()
            .find(|&k| flat.is_valid(at + k))
            .map_or(0, |k| k + 1);
        if !item.is_nullable()
            && let Some(k) = (0..used).find(|&k| flat.is_null(at + k))
        {
            return Err(format!(
                "input '{}': row {row} has a null at element {k} before its end; only trailing \
                 nulls (the end of a shorter row) are allowed",
                input.name
            ));
        }
        keep.extend((0..len).map(|k| k < used));
        lengths.push(used);
    }
    let values = arrow::compute::filter(&flat, &BooleanArray::from(keep))
        .map_err(|e| format!("input '{}': {e}", input.name))?;
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().copied());
    let list = ListArray::try_new(Arc::clone(item), offsets, values, None)
        .map_err(|e| format!("input '{}': {e}", input.name))?;
    if matches!(column, DataType::List(_)) {
        return Ok(Arc::new(list));
    }
    cast_to(&input.name, &input.datatype, Arc::new(list), column)
}

/// One input tensor → an array of the column's type.
pub(super) fn input_column(
    input: &RequestInput,
    raw: Option<&[u8]>,
    column: &DataType,
    nullable: bool,
    rows: usize,
) -> Result<ArrayRef, String> {
    let name = &input.name;
    if raw.is_none()
        && input
            .parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("binary_data_size"))
    {
        return Err(format!(
            "input '{name}' has binary_data_size, but the body has no binary part (send the Inference-Header-Content-Length header)"
        ));
    }
    let Some(expected) = input_datatype(column) else {
        return Err(format!(
            "input '{name}': column type {column} cannot be provided by requests yet"
        ));
    };
    let dt = input.datatype.as_str();
    let wire = wire(dt).ok_or_else(|| {
        format!("input '{name}': unknown datatype '{dt}'; expected one of {DATATYPES}")
    })?;
    if !accepts(column, wire) {
        return Err(format!(
            "input '{name}': datatype {dt} does not fit column type {column}; send {expected}"
        ));
    }
    if let Some(bytes) = raw {
        let array = super::binary::binary_column(input, bytes, column, rows)?;
        return cast_to(name, dt, array, column);
    }
    let values = flatten(name, &input.data)?;
    if values.len() != rows {
        return Err(format!(
            "input '{name}': expected {rows} values for shape {}, got {}",
            shape_str(&input.shape),
            values.len()
        ));
    }
    if !nullable && let Some(i) = values.iter().position(|v| v.is_null()) {
        return Err(format!(
            "input '{name}': data[{i}] is null, but the input is required ({column})"
        ));
    }
    let array = json_array(name, dt, wire, column, &values)?;
    cast_to(name, dt, array, column)
}

/// The JSON `values` of input `name` (sent as `dt`) as an Arrow array of the wire's type (Int64,
/// UInt64, Float64 — Float32 for a Float32 column —, Boolean or Utf8), each value checked; the
/// caller casts it to the column's type.
fn json_array(
    name: &str,
    dt: &str,
    wire: Wire,
    column: &DataType,
    values: &[&Value],
) -> Result<ArrayRef, String> {
    let rows = values.len();
    let wrong = |i: usize, v: &Value, expected: &str| {
        format!(
            "input '{name}': data[{i}]: expected {expected} for {dt}, got {}",
            kind(v)
        )
    };
    let array: ArrayRef = match wire {
        Wire::Bool => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Bool(b) => Some(*b),
                    other => return Err(wrong(i, other, "a boolean")),
                });
            }
            Arc::new(BooleanArray::from(out))
        }
        Wire::Int { min, max } => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => {
                        let x = n
                            .as_i64()
                            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
                            .ok_or_else(|| {
                                format!("input '{name}': data[{i}]: expected an integer for {dt}, got {n}")
                            })?;
                        if x < min || x > max {
                            return Err(format!(
                                "input '{name}': data[{i}]: {x} is out of range for {dt}"
                            ));
                        }
                        Some(x)
                    }
                    other => return Err(wrong(i, other, "an integer")),
                });
            }
            Arc::new(Int64Array::from(out))
        }
        Wire::UInt { max } => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => {
                        let x = n.as_u64().ok_or_else(|| {
                            format!("input '{name}': data[{i}]: expected an unsigned integer for {dt}, got {n}")
                        })?;
                        if x > max {
                            return Err(format!(
                                "input '{name}': data[{i}]: {x} is out of range for {dt}"
                            ));
                        }
                        Some(x)
                    }
                    other => return Err(wrong(i, other, "an unsigned integer")),
                });
            }
            Arc::new(UInt64Array::from(out))
        }
        // FP32 columns (the usual feature type) are built as they are, without a cast.
        Wire::Float if *column == DataType::Float32 => {
            crate::serve::protocol::v1::f32_array(values, wrong)?
        }
        Wire::Float => {
            let mut out = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::Number(n) => Some(n.as_f64().ok_or_else(|| wrong(i, v, "a number"))?),
                    other => return Err(wrong(i, other, "a number")),
                });
            }
            Arc::new(Float64Array::from(out))
        }
        Wire::Bytes => {
            let mut out: Vec<Option<&str>> = Vec::with_capacity(rows);
            for (i, v) in values.iter().enumerate() {
                out.push(match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.as_str()),
                    other => return Err(wrong(i, other, "a string")),
                });
            }
            Arc::new(StringArray::from(out))
        }
    };
    Ok(array)
}

/// `array` (values sent as `dt`) cast to the column's type, strictly.
fn cast_to(name: &str, dt: &str, array: ArrayRef, column: &DataType) -> Result<ArrayRef, String> {
    if array.data_type() == column {
        return Ok(array);
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&array, column, &strict)
        .map_err(|e| format!("input '{name}': {dt} values do not fit column type {column}: {e}"))
}
