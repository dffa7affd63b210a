//! From Avro records to warehouse rows.
//!
//! A dataset's contract is a registry schema plus a field → column mapping.
//! For every writer schema seen, a [`LoadPlan`] is computed once: for each
//! contract field, where its value comes from in the writer's records (Avro's
//! reader/writer resolution: by name or alias, promotions, defaults). A writer
//! schema is loadable only if the resolution loses nothing: every writer field
//! has a column, and every value fits its column. Otherwise its records go to
//! quarantine, never into guessed columns. Per record, the cost is index
//! lookups and value conversion.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema::{RecordField, RecordSchema};
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;

use crate::config::Nested;
use crate::warehouse::{Column, Dialect, SqlValue};

/// The record schema inside a (possibly referenced) top-level schema.
pub fn record_of(schema: &Schema) -> Option<&RecordSchema> {
    match schema {
        Schema::Record(record) => Some(record),
        _ => None,
    }
}

/// The non-null branch of a nullable union, and whether it was nullable.
pub fn strip_null(schema: &Schema) -> (&Schema, bool) {
    if let Schema::Union(union) = schema {
        let variants = union.variants();
        let non_null: Vec<&Schema> = variants.iter().filter(|s| !matches!(s, Schema::Null)).collect();
        if non_null.len() == 1 && variants.len() == 2 {
            return (non_null[0], true);
        }
        return (schema, variants.iter().any(|s| matches!(s, Schema::Null)));
    }
    (schema, matches!(schema, Schema::Null))
}

/// The SQL type a field of this Avro type gets.
pub fn sql_type(schema: &Schema, dialect: Dialect) -> String {
    let (schema, _) = strip_null(schema);
    let pg = dialect == Dialect::Postgres;
    match schema {
        Schema::Boolean => if pg { "BOOLEAN" } else { "INTEGER" }.into(),
        Schema::Int => "INTEGER".into(),
        Schema::Long => if pg { "BIGINT" } else { "INTEGER" }.into(),
        Schema::Float => "REAL".into(),
        Schema::Double => if pg { "DOUBLE PRECISION" } else { "REAL" }.into(),
        Schema::Bytes | Schema::Fixed(_) => if pg { "BYTEA" } else { "BLOB" }.into(),
        Schema::String | Schema::Enum(_) | Schema::Uuid(_) => "TEXT".into(),
        Schema::Decimal(d) if pg => format!("NUMERIC({}, {})", d.precision, d.scale),
        Schema::Decimal(_) | Schema::BigDecimal => if pg { "NUMERIC" } else { "TEXT" }.into(),
        Schema::Date => if pg { "DATE" } else { "TEXT" }.into(),
        Schema::TimestampMillis | Schema::TimestampMicros | Schema::TimestampNanos => {
            if pg { "TIMESTAMPTZ" } else { "TEXT" }.into()
        }
        Schema::LocalTimestampMillis | Schema::LocalTimestampMicros | Schema::LocalTimestampNanos => {
            if pg { "TIMESTAMP" } else { "TEXT" }.into()
        }
        Schema::TimeMillis | Schema::TimeMicros => if pg { "BIGINT" } else { "INTEGER" }.into(),
        _ => if pg { "JSONB" } else { "TEXT" }.into(),
    }
}

/// A column name for a field: the field name, which Avro already restricts
/// to `[A-Za-z_][A-Za-z0-9_]*`.
pub fn column_name(field: &str) -> String {
    field.to_owned()
}

/// A field that becomes one column: a top-level field, or with
/// `nested = "flatten"` a field inside (nested) records.
#[derive(Debug, Clone)]
struct Leaf<'a> {
    /// The fields from the top record down to this one.
    path: Vec<&'a RecordField>,
    /// Field indices along the path.
    indices: Vec<usize>,
    /// Whether an enclosing record is nullable (then so is the column).
    under_nullable: bool,
}

impl Leaf<'_> {
    fn field(&self) -> &RecordField {
        self.path[self.path.len() - 1]
    }

    /// Dotted path (`shipping.city`): the key of the contract's mapping.
    fn dotted(&self) -> String {
        self.path.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(".")
    }

    /// The column a field gets by default (`shipping__city`).
    fn default_column(&self) -> String {
        self.path.iter().map(|f| column_name(&f.name)).collect::<Vec<_>>().join("__")
    }
}

fn leaves(record: &RecordSchema, nested: Nested) -> Vec<Leaf<'_>> {
    let mut out = Vec::new();
    for (index, field) in record.fields.iter().enumerate() {
        let (inner, nullable) = strip_null(&field.schema);
        match inner {
            Schema::Record(child) if nested == Nested::Flatten => {
                for mut leaf in leaves(child, nested) {
                    leaf.path.insert(0, field);
                    leaf.indices.insert(0, index);
                    leaf.under_nullable |= nullable;
                    out.push(leaf);
                }
            }
            _ => out.push(Leaf { path: vec![field], indices: vec![index], under_nullable: false }),
        }
    }
    out
}

/// The table columns and identity mapping of a record schema (field path →
/// column; nested records flattened to `parent__child` columns when `nested`
/// says so, else one JSON column each).
pub fn columns_for(
    schema: &Schema,
    dialect: Dialect,
    nested: Nested,
) -> Result<(Vec<Column>, BTreeMap<String, String>), String> {
    let record = record_of(schema).ok_or("the schema is not a record")?;
    let mut columns = Vec::new();
    let mut mapping = BTreeMap::new();
    for leaf in leaves(record, nested) {
        let field = leaf.field();
        let (_, nullable) = strip_null(&field.schema);
        let name = leaf.default_column();
        columns.push(Column {
            name: name.clone(),
            sql_type: sql_type(&field.schema, dialect),
            nullable: nullable || leaf.under_nullable,
        });
        mapping.insert(leaf.dotted(), name);
    }
    Ok((columns, mapping))
}

/// Where one column's value comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Field indices from the top record down to the writer field.
    Field(Vec<usize>),
    /// The contract field's default (or NULL).
    Constant(SqlValue),
}

/// How records of one writer schema become rows under one contract.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Column names, in row order.
    pub columns: Vec<String>,
    sources: Vec<(Source, Schema)>,
}

impl LoadPlan {
    /// Resolves `writer` against the contract schema. Err explains why the
    /// writer's records cannot be loaded without loss.
    ///
    /// A contract field finds its writer field by name or alias at every
    /// level, or, for a renamed field whose old name has no alias, by the
    /// contract's mapping (the writer field that maps to the same column).
    pub fn new(
        writer: &Schema,
        contract: &Schema,
        mapping: &BTreeMap<String, String>,
        nested: Nested,
    ) -> Result<Self, String> {
        let writer_record = record_of(writer).ok_or("the writer schema is not a record")?;
        let contract_record = record_of(contract).ok_or("the contract schema is not a record")?;
        let writer_leaves = leaves(writer_record, nested);
        let mut used = vec![false; writer_leaves.len()];
        let mut columns = Vec::new();
        let mut sources = Vec::new();
        let column_of = |leaf: &Leaf<'_>| mapping.get(&leaf.dotted()).cloned().unwrap_or_else(|| leaf.default_column());
        for leaf in leaves(contract_record, nested) {
            let field = leaf.field();
            let column = column_of(&leaf);
            let same_path = |w: &Leaf<'_>| {
                w.path.len() == leaf.path.len()
                    && w.path.iter().zip(&leaf.path).all(|(w, c)| w.name == c.name || c.aliases.contains(&w.name))
            };
            let found = writer_leaves.iter().position(same_path).or_else(|| {
                // A rename without an alias: the old field maps to this column.
                writer_leaves.iter().enumerate().position(|(i, w)| {
                    !used[i]
                        && column_of(w) == column
                        && !leaves(contract_record, nested).iter().any(|c| c.dotted() == w.dotted())
                })
            });
            let source = match found {
                Some(index) => {
                    let written = writer_leaves[index].field();
                    match SchemaCompatibility::can_read(&written.schema, &field.schema) {
                        Ok(Compatibility::Full) => {}
                        _ => {
                            return Err(format!(
                                "field {} is {} in the record but {} in the contract (column {column})",
                                writer_leaves[index].dotted(),
                                type_name(&written.schema),
                                type_name(&field.schema)
                            ));
                        }
                    }
                    used[index] = true;
                    Source::Field(writer_leaves[index].indices.clone())
                }
                None if leaf.under_nullable => Source::Constant(SqlValue::Null),
                None => Source::Constant(default_value(field)?),
            };
            columns.push(column);
            sources.push((source, field.schema.clone()));
        }
        if let Some(index) = used.iter().position(|u| !u) {
            let leaf = &writer_leaves[index];
            return Err(format!(
                "field {} ({}) has no column in the contract",
                leaf.dotted(),
                type_name(&leaf.field().schema)
            ));
        }
        Ok(Self { columns, sources })
    }

    /// Per column, in row order: where its value comes from, and the
    /// contract field's schema (what the value is converted for).
    pub(crate) fn sources(&self) -> &[(Source, Schema)] {
        &self.sources
    }

    /// The row of one decoded record (decoded with the writer schema).
    pub fn row(&self, record: Value) -> Result<Vec<SqlValue>, String> {
        let Value::Record(fields) = record else { return Err("the record is not an Avro record".into()) };
        let mut values: Vec<Option<Value>> = fields.into_iter().map(|(_, v)| Some(v)).collect();
        self.sources
            .iter()
            .map(|(source, schema)| match source {
                Source::Constant(value) => Ok(value.clone()),
                // Hot path: a top-level field is moved out, not cloned.
                Source::Field(path) if path.len() == 1 => {
                    let value =
                        values.get_mut(path[0]).and_then(Option::take).ok_or("record shorter than its schema")?;
                    to_sql(value, schema)
                }
                Source::Field(path) => {
                    let top = values.get(path[0]).and_then(Option::as_ref).ok_or("record shorter than its schema")?;
                    match nested_value(top, &path[1..]) {
                        Some(value) => to_sql(value.clone(), schema),
                        None => Ok(SqlValue::Null), // an enclosing record is null
                    }
                }
            })
            .collect()
    }
}

/// The value at `path` inside a record value; None when a record on the way is null.
fn nested_value<'v>(value: &'v Value, path: &[usize]) -> Option<&'v Value> {
    let mut current = value;
    for &index in path {
        let inner = match current {
            Value::Union(_, inner) => inner.as_ref(),
            other => other,
        };
        match inner {
            Value::Record(fields) => current = &fields.get(index)?.1,
            _ => return None,
        }
    }
    Some(current)
}

fn default_value(field: &RecordField) -> Result<SqlValue, String> {
    match &field.default {
        None if strip_null(&field.schema).1 => Ok(SqlValue::Null),
        None => Err(format!("field {} is missing from the record and has no default", field.name)),
        Some(serde_json::Value::Null) => Ok(SqlValue::Null),
        Some(json) => {
            // A union's default belongs to its first branch.
            let schema = match &field.schema {
                Schema::Union(u) => u.variants().first().cloned().unwrap_or(Schema::Null),
                other => other.clone(),
            };
            let value = Value::try_from(json.clone())
                .map_err(|e| format!("default of {} is not a value: {e}", field.name))?
                .resolve(&schema)
                .map_err(|e| format!("default of {} does not fit its type: {e}", field.name))?;
            to_sql(value, &schema)
        }
    }
}

/// A short name for an Avro type, for messages and evidence.
pub fn type_name(schema: &Schema) -> String {
    let (inner, nullable) = strip_null(schema);
    let base = match inner {
        Schema::Record(r) => format!("record {}", r.name.name()),
        Schema::Enum(e) => format!("enum {}", e.name.name()),
        Schema::Fixed(f) => format!("fixed({})", f.size),
        Schema::Array(a) => format!("array<{}>", type_name(&a.items)),
        Schema::Map(m) => format!("map<{}>", type_name(&m.types)),
        Schema::Decimal(d) => format!("decimal({},{})", d.precision, d.scale),
        Schema::Union(u) => u.variants().iter().map(type_name).collect::<Vec<_>>().join("|"),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    };
    if nullable && !matches!(inner, Schema::Union(_)) { format!("{base}?") } else { base }
}

/// Converts a value (written with any schema the contract field can read) to
/// the SQL value of the contract field's column.
pub fn to_sql(value: Value, schema: &Schema) -> Result<SqlValue, String> {
    let value = match value {
        Value::Union(_, inner) => *inner,
        other => other,
    };
    let (target, _) = strip_null(schema);
    Ok(match (value, target) {
        (Value::Null, _) => SqlValue::Null,
        (Value::Boolean(b), _) => SqlValue::Bool(b),
        (Value::Int(i), Schema::Float | Schema::Double) => SqlValue::Float(f64::from(i)),
        (Value::Long(i), Schema::Float | Schema::Double) => SqlValue::Float(i as f64),
        (Value::Int(i), _) => SqlValue::Int(i64::from(i)),
        (Value::Long(i), _) => SqlValue::Int(i),
        (Value::Float(f), _) => SqlValue::Float(f64::from(f)),
        (Value::Double(f), _) => SqlValue::Float(f),
        (Value::String(s), Schema::Bytes) => SqlValue::Bytes(s.into_bytes()),
        (Value::Bytes(b), Schema::String) => {
            SqlValue::Text(String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 for a string column")?)
        }
        (Value::String(s), _) | (Value::Enum(_, s), _) => SqlValue::Text(s),
        (Value::Uuid(u), _) => SqlValue::Text(u.to_string()),
        (Value::Bytes(b), _) | (Value::Fixed(_, b), _) => SqlValue::Bytes(b),
        (Value::Date(days), _) => SqlValue::Date(date_text(i64::from(days))),
        (Value::TimestampMillis(ms), _) | (Value::LocalTimestampMillis(ms), _) => {
            SqlValue::Timestamp(timestamp_text(ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000))
        }
        (Value::TimestampMicros(us), _) | (Value::LocalTimestampMicros(us), _) => {
            SqlValue::Timestamp(timestamp_text(us.div_euclid(1_000_000), us.rem_euclid(1_000_000) * 1000))
        }
        (Value::TimestampNanos(ns), _) | (Value::LocalTimestampNanos(ns), _) => {
            SqlValue::Timestamp(timestamp_text(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000)))
        }
        (Value::TimeMillis(ms), _) => SqlValue::Int(i64::from(ms)),
        (Value::TimeMicros(us), _) => SqlValue::Int(us),
        (Value::Decimal(d), Schema::Decimal(schema)) => SqlValue::Decimal(decimal_text(&d, schema.scale)?),
        (Value::BigDecimal(d), _) => SqlValue::Decimal(d.to_string()),
        (other, _) => SqlValue::Json(json_of(other).to_string()),
    })
}

fn json_of(value: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Int(i) => J::from(i),
        Value::Long(i) | Value::TimeMicros(i) | Value::TimestampMillis(i) | Value::TimestampMicros(i) => J::from(i),
        Value::Float(f) => J::from(f64::from(f)),
        Value::Double(f) => J::from(f),
        Value::String(s) | Value::Enum(_, s) => J::String(s),
        Value::Bytes(b) | Value::Fixed(_, b) => J::String(hex::encode(b)),
        Value::Union(_, inner) => json_of(*inner),
        Value::Array(items) => J::Array(items.into_iter().map(json_of).collect()),
        Value::Map(map) => J::Object(map.into_iter().map(|(k, v)| (k, json_of(v))).collect()),
        Value::Record(fields) => J::Object(fields.into_iter().map(|(k, v)| (k, json_of(v))).collect()),
        Value::Date(d) => J::String(date_text(i64::from(d))),
        Value::Uuid(u) => J::String(u.to_string()),
        other => J::String(format!("{other:?}")),
    }
}

fn decimal_text(decimal: &apache_avro::Decimal, scale: usize) -> Result<String, String> {
    let bytes: Vec<u8> = Vec::try_from(decimal).map_err(|e| e.to_string())?;
    if bytes.len() > 16 {
        return Err("decimal wider than 128 bits".into());
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buffer = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buffer[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(buffer);
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return Ok(format!("{sign}{digits}"));
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    Ok(format!("{sign}{int}.{frac}"))
}

/// `YYYY-MM-DD` of a day number since 1970-01-01 (proleptic Gregorian).
fn date_text(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ISO 8601 UTC text of a timestamp.
fn timestamp_text(seconds: i64, nanos: i64) -> String {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    let mut text = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60);
    if nanos != 0 {
        text.push_str(format!(".{nanos:09}").trim_end_matches('0'));
    }
    text.push_str("+00:00");
    text
}

/// Howard Hinnant's days → civil date algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"O","fields":[{fields}]}}"#)).unwrap()
    }

    fn identity(schema: &Schema) -> BTreeMap<String, String> {
        columns_for(schema, Dialect::Postgres, Nested::Json).unwrap().1
    }

    fn plan(writer: &Schema, contract: &Schema, mapping: &BTreeMap<String, String>) -> Result<LoadPlan, String> {
        LoadPlan::new(writer, contract, mapping, Nested::Json)
    }

    #[test]
    fn the_contract_schema_loads_itself() {
        let v1 = schema(r#"{"name":"id","type":"long"},{"name":"email","type":["null","string"]}"#);
        let plan = plan(&v1, &v1, &identity(&v1)).unwrap();
        let row = plan
            .row(Value::Record(vec![
                ("id".into(), Value::Long(1)),
                ("email".into(), Value::Union(1, Box::new(Value::String("a@b".into())))),
            ]))
            .unwrap();
        assert_eq!(row, vec![SqlValue::Int(1), SqlValue::Text("a@b".into())]);
    }

    #[test]
    fn a_new_field_without_a_column_is_not_loadable() {
        let v1 = schema(r#"{"name":"id","type":"long"}"#);
        let v2 = schema(r#"{"name":"id","type":"long"},{"name":"coupon","type":["null","string"],"default":null}"#);
        let error = plan(&v2, &v1, &identity(&v1)).unwrap_err();
        assert!(error.contains("coupon"), "{error}");
        // Once the contract has moved to v2, v1 records load with NULL coupons.
        let plan = plan(&v1, &v2, &identity(&v2)).unwrap();
        let row = plan.row(Value::Record(vec![("id".into(), Value::Long(3))])).unwrap();
        assert_eq!(row, vec![SqlValue::Int(3), SqlValue::Null]);
    }

    #[test]
    fn an_aliased_rename_maps_to_the_old_column() {
        let v1 = schema(r#"{"name":"email","type":"string"}"#);
        let v2 = schema(r#"{"name":"customer_email","type":"string","aliases":["email"]}"#);
        let mut mapping = BTreeMap::new();
        mapping.insert("customer_email".to_owned(), "email".to_owned());
        // Old records under the new contract, and new records under it.
        let old = plan(&v1, &v2, &mapping).unwrap();
        assert_eq!(old.columns, vec!["email".to_owned()]);
        let new = plan(&v2, &v2, &mapping).unwrap();
        assert_eq!(
            new.row(Value::Record(vec![("customer_email".into(), Value::String("x".into()))])).unwrap(),
            vec![SqlValue::Text("x".into())]
        );
    }

    #[test]
    fn an_incompatible_type_is_not_loadable_and_a_promotion_is() {
        let v1 = schema(r#"{"name":"amount","type":"double"}"#);
        let text = schema(r#"{"name":"amount","type":"string"}"#);
        assert!(plan(&text, &v1, &identity(&v1)).unwrap_err().contains("amount"));
        let int = schema(r#"{"name":"amount","type":"int"}"#);
        let plan = plan(&int, &v1, &identity(&v1)).unwrap();
        assert_eq!(
            plan.row(Value::Record(vec![("amount".into(), Value::Int(2))])).unwrap(),
            vec![SqlValue::Float(2.0)]
        );
    }

    #[test]
    fn a_rename_without_alias_loads_old_records_through_the_mapping() {
        let v1 = schema(r#"{"name":"id","type":"long"},{"name":"email","type":"string"}"#);
        let v2 = schema(r#"{"name":"id","type":"long"},{"name":"mail","type":"string"}"#);
        let mut mapping = identity(&v1);
        mapping.insert("mail".into(), "email".into());
        let old = plan(&v1, &v2, &mapping).unwrap();
        assert_eq!(old.columns, ["id", "email"]);
        let row = old
            .row(Value::Record(vec![("id".into(), Value::Long(1)), ("email".into(), Value::String("a".into()))]))
            .unwrap();
        assert_eq!(row, vec![SqlValue::Int(1), SqlValue::Text("a".into())]);
    }

    #[test]
    fn nested_records_flatten_to_parent_child_columns() {
        let shipping = |extra: &str| {
            schema(&format!(
                r#"{{"name":"id","type":"long"}},{{"name":"ship","type":["null",{{"type":"record","name":"S","fields":[{{"name":"city","type":"string"}}{extra}]}}],"default":null}}"#
            ))
        };
        let v1 = shipping("");
        let (columns, mapping) = columns_for(&v1, Dialect::Postgres, Nested::Flatten).unwrap();
        assert_eq!(columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id", "ship__city"]);
        assert!(columns[1].nullable, "inside a nullable record");
        assert_eq!(mapping.get("ship.city").map(String::as_str), Some("ship__city"));
        let flat = LoadPlan::new(&v1, &v1, &mapping, Nested::Flatten).unwrap();
        let city = Value::Record(vec![("city".into(), Value::String("Oslo".into()))]);
        let row = flat
            .row(Value::Record(vec![("id".into(), Value::Long(1)), ("ship".into(), Value::Union(1, Box::new(city)))]))
            .unwrap();
        assert_eq!(row, vec![SqlValue::Int(1), SqlValue::Text("Oslo".into())]);
        let none = flat
            .row(Value::Record(vec![
                ("id".into(), Value::Long(2)),
                ("ship".into(), Value::Union(0, Box::new(Value::Null))),
            ]))
            .unwrap();
        assert_eq!(none, vec![SqlValue::Int(2), SqlValue::Null]);
        // A new nested field has no column yet: not loadable (no silent loss).
        let v2 = shipping(r#",{"name":"zip","type":["null","string"],"default":null}"#);
        let error = LoadPlan::new(&v2, &v1, &mapping, Nested::Flatten).unwrap_err();
        assert!(error.contains("ship.zip"), "{error}");
        // In JSON mode the whole record is one column and the new field rides along.
        let json = LoadPlan::new(&v2, &v1, &identity(&v1), Nested::Json).unwrap();
        assert_eq!(json.columns, ["id", "ship"]);
    }

    #[test]
    fn logical_values_render_as_sql_text() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(19_723), "2024-01-01");
        assert_eq!(timestamp_text(1_700_000_000, 123_000_000), "2023-11-14T22:13:20.123+00:00");
        assert_eq!(timestamp_text(-1, 0), "1969-12-31T23:59:59+00:00");
        let decimal = apache_avro::Decimal::from(vec![0xff, 0x38]); // -200
        assert_eq!(decimal_text(&decimal, 2).unwrap(), "-2.00");
        assert_eq!(decimal_text(&apache_avro::Decimal::from(vec![0x05]), 3).unwrap(), "0.005");
    }
}
