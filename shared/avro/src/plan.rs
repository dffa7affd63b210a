//! How records of one writer schema become rows under a dataset's contract.
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
use apache_avro::schema::RecordField;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;
use mend_config::Nested;
use mend_model::SqlValue;

use crate::schema::{Leaf, leaves, record_of, strip_null, type_name};
use crate::values::{Writer, to_sql};

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
    /// Per column, the writer field's schema (for a field source), whose
    /// form a value keeps (a nested decimal's scale).
    written: Vec<Option<Schema>>,
    /// The writer's named types, for references inside its fields.
    names: apache_avro::schema::Names,
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
        let names = apache_avro::schema::ResolvedSchema::try_from(writer)
            .map(|resolved| resolved.get_names().iter().map(|(n, s)| (n.clone(), (*s).clone())).collect())
            .unwrap_or_default();
        // A named type reused by name loads as the type itself, everywhere.
        let (writer, contract) = (&crate::schema::inline_refs(writer), &crate::schema::inline_refs(contract));
        let writer_record = record_of(writer).ok_or("the writer schema is not a record")?;
        let contract_record = record_of(contract).ok_or("the contract schema is not a record")?;
        let writer_leaves = leaves(writer_record, nested);
        let mut used = vec![false; writer_leaves.len()];
        let mut columns = Vec::new();
        let mut sources = Vec::new();
        let mut written_schemas = Vec::new();
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
                    written_schemas.push(Some(written.schema.clone()));
                    Source::Field(writer_leaves[index].indices.clone())
                }
                None if leaf.under_nullable => {
                    written_schemas.push(None);
                    Source::Constant(SqlValue::Null)
                }
                None => {
                    written_schemas.push(None);
                    Source::Constant(default_value(field)?)
                }
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
        Ok(Self { columns, sources, written: written_schemas, names })
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
            .zip(&self.written)
            .map(|((source, schema), written)| {
                let writer = Writer { schema: written.as_ref().unwrap_or(schema), names: &self.names };
                match source {
                    Source::Constant(value) => Ok(value.clone()),
                    // Hot path: a top-level field is moved out, not cloned.
                    Source::Field(path) if path.len() == 1 => {
                        let value =
                            values.get_mut(path[0]).and_then(Option::take).ok_or("record shorter than its schema")?;
                        to_sql(value, schema, writer)
                    }
                    Source::Field(path) => {
                        let top =
                            values.get(path[0]).and_then(Option::as_ref).ok_or("record shorter than its schema")?;
                        match nested_value(top, &path[1..]) {
                            Some(value) => to_sql(value.clone(), schema, writer),
                            None => Ok(SqlValue::Null), // an enclosing record is null
                        }
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
            to_sql(value, &schema, Writer::alone(&schema))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::columns_for;
    use mend_model::Dialect;

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
}
