//! Avro schema helpers: the record inside a schema, nullable unions, the SQL
//! type and column(s) a field gets, short type names for messages.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema::{RecordField, RecordSchema};
use mend_config::Nested;
use mend_model::{Column, Dialect};

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
        // `[null, X]`, `[X, null]` and the single-branch `[X]` are X.
        if non_null.len() == 1 {
            return (non_null[0], variants.len() == 2);
        }
        return (schema, variants.iter().any(|s| matches!(s, Schema::Null)));
    }
    (schema, matches!(schema, Schema::Null))
}

/// `schema` with every reference to a named type (a record, enum or fixed
/// reused by name) replaced by the type itself, so a reused type gets the
/// same columns, values and diff wherever it appears. A type that refers to
/// itself (a recursive record) keeps that reference. A schema whose names
/// do not resolve is returned as it is.
pub fn inline_refs(schema: &Schema) -> Schema {
    use apache_avro::schema::{ArraySchema, MapSchema, Name, ResolvedSchema, UnionSchema};
    let Ok(resolved) = ResolvedSchema::try_from(schema) else { return schema.clone() };
    let names = resolved.get_names();
    fn walk(schema: &Schema, names: &apache_avro::schema::NamesRef<'_>, open: &mut Vec<Name>) -> Schema {
        match schema {
            Schema::Ref { name } if !open.contains(name) => match names.get(name) {
                Some(named) => walk(named, names, open),
                None => schema.clone(),
            },
            Schema::Record(record) => {
                open.push(record.name.clone());
                let mut inlined = record.clone();
                for field in &mut inlined.fields {
                    field.schema = walk(&field.schema, names, open);
                }
                open.pop();
                Schema::Record(inlined)
            }
            Schema::Array(array) => Schema::Array(ArraySchema {
                items: Box::new(walk(&array.items, names, open)),
                attributes: array.attributes.clone(),
            }),
            Schema::Map(map) => Schema::Map(MapSchema {
                types: Box::new(walk(&map.types, names, open)),
                attributes: map.attributes.clone(),
            }),
            Schema::Union(union) => {
                let variants = union.variants().iter().map(|v| walk(v, names, open)).collect();
                UnionSchema::new(variants).map_or_else(|_| schema.clone(), Schema::Union)
            }
            other => other.clone(),
        }
    }
    walk(schema, names, &mut Vec::new())
}

/// Whether a field of this Avro type is stored in a JSON column (its value
/// in the form `values::json_of` gives): records, arrays, maps, unions of
/// several types, durations, named types referred to by name — everything
/// [`sql_type`] has no column type of its own for.
pub fn json_column(schema: &Schema) -> bool {
    !matches!(
        strip_null(schema).0,
        Schema::Null
            | Schema::Boolean
            | Schema::Int
            | Schema::Long
            | Schema::Float
            | Schema::Double
            | Schema::Bytes
            | Schema::Fixed(_)
            | Schema::String
            | Schema::Enum(_)
            | Schema::Uuid(_)
            | Schema::Decimal(_)
            | Schema::BigDecimal
            | Schema::Date
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
            | Schema::TimeMillis
            | Schema::TimeMicros
    )
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
        Schema::TimestampMillis | Schema::TimestampMicros => if pg { "TIMESTAMPTZ" } else { "TEXT" }.into(),
        Schema::LocalTimestampMillis | Schema::LocalTimestampMicros => if pg { "TIMESTAMP" } else { "TEXT" }.into(),
        // PostgreSQL's timestamps keep microseconds: nanoseconds are kept
        // as RFC 3339 text, which sorts as time does.
        Schema::TimestampNanos | Schema::LocalTimestampNanos => "TEXT".into(),
        Schema::TimeMillis | Schema::TimeMicros => if pg { "BIGINT" } else { "INTEGER" }.into(),
        _ => if pg { "JSONB" } else { "TEXT" }.into(),
    }
}

/// A column name for a field: the field name, which Avro already restricts
/// to `[A-Za-z_][A-Za-z0-9_]*`.
pub fn column_name(field: &str) -> String {
    field.to_owned()
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

/// A field that becomes one column: a top-level field, or with
/// `nested = "flatten"` a field inside (nested) records.
#[derive(Debug, Clone)]
pub(crate) struct Leaf<'a> {
    /// The fields from the top record down to this one.
    pub(crate) path: Vec<&'a RecordField>,
    /// Field indices along the path.
    pub(crate) indices: Vec<usize>,
    /// Whether an enclosing record is nullable (then so is the column).
    pub(crate) under_nullable: bool,
}

impl Leaf<'_> {
    pub(crate) fn field(&self) -> &RecordField {
        self.path[self.path.len() - 1]
    }

    /// Dotted path (`shipping.city`): the key of the contract's mapping.
    pub(crate) fn dotted(&self) -> String {
        self.path.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(".")
    }

    /// The column a field gets by default (`shipping__city`).
    pub(crate) fn default_column(&self) -> String {
        self.path.iter().map(|f| column_name(&f.name)).collect::<Vec<_>>().join("__")
    }
}

pub(crate) fn leaves(record: &RecordSchema, nested: Nested) -> Vec<Leaf<'_>> {
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
    let schema = &inline_refs(schema);
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
