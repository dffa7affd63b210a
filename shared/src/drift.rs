//! Classifies what changed between a dataset's contract schema and a new
//! writer schema, field by field. Used by the detector (for the detection)
//! and the diagnoser (with evidence), so both name changes the same way.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema::RecordField;

use crate::events::FieldChange;
use crate::mapping::{record_of, strip_null, type_name};

/// Change kinds (the `kind` of a [`FieldChange`]).
pub mod kind {
    pub const FIELD_ADDED: &str = "field_added";
    pub const FIELD_REMOVED: &str = "field_removed";
    pub const FIELD_RENAMED: &str = "field_renamed";
    pub const TYPE_WIDENED: &str = "type_widened";
    pub const TYPE_CHANGED: &str = "type_changed";
    pub const NULLABILITY_CHANGED: &str = "nullability_changed";
    pub const ENUM_SYMBOLS_ADDED: &str = "enum_symbols_added";
    pub const ENUM_SYMBOLS_REMOVED: &str = "enum_symbols_removed";
    pub const DEFAULT_CHANGED: &str = "default_changed";
}

/// Every field-level change from `old` to `new`, in the new schema's field
/// order (removals last). Changes that need no action (field order, docs,
/// namespaces) produce nothing.
pub fn classify(old: &Schema, new: &Schema) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    if let (Some(old), Some(new)) = (record_of(old), record_of(new)) {
        diff_fields(&old.fields, &new.fields, "", &mut changes);
    } else if type_name(old) != type_name(new) {
        changes.push(change(kind::TYPE_CHANGED, "", Some(old), Some(new)));
    }
    changes
}

fn change(kind: &str, field: &str, old: Option<&Schema>, new: Option<&Schema>) -> FieldChange {
    FieldChange {
        kind: kind.to_owned(),
        field: field.to_owned(),
        old_type: old.map(type_name),
        new_type: new.map(type_name),
        ..FieldChange::default()
    }
}

fn diff_fields(old: &[RecordField], new: &[RecordField], prefix: &str, changes: &mut Vec<FieldChange>) {
    let path = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    let mut matched = vec![false; old.len()];
    let mut removals = Vec::new();
    for field in new {
        let by_name = old.iter().position(|o| o.name == field.name);
        let by_alias = by_name.or_else(|| old.iter().position(|o| field.aliases.contains(&o.name)));
        match by_alias {
            Some(index) => {
                matched[index] = true;
                let previous = &old[index];
                if previous.name != field.name {
                    let mut renamed =
                        change(kind::FIELD_RENAMED, &path(&field.name), Some(&previous.schema), Some(&field.schema));
                    renamed.from = Some(path(&previous.name));
                    renamed.to = Some(path(&field.name));
                    renamed.confidence = Some(1.0);
                    renamed.evidence = BTreeMap::from([(
                        "alias".to_owned(),
                        format!("{} lists {} among its aliases", field.name, previous.name),
                    )]);
                    changes.push(renamed);
                }
                diff_types(previous, field, &path(&field.name), changes);
            }
            None => {
                let (_, nullable) = strip_null(&field.schema);
                let mut added = change(kind::FIELD_ADDED, &path(&field.name), None, Some(&field.schema));
                added.nullable = Some(nullable);
                added.has_default = Some(field.default.is_some());
                if let Some(doc) = &field.doc {
                    added.evidence.insert("doc".into(), doc.clone());
                }
                changes.push(added);
            }
        }
    }
    for (field, _) in old.iter().zip(&matched).filter(|(_, m)| !**m) {
        let (_, nullable) = strip_null(&field.schema);
        let mut removed = change(kind::FIELD_REMOVED, &path(&field.name), Some(&field.schema), None);
        removed.nullable = Some(nullable);
        removals.push(removed);
    }
    changes.extend(removals);
}

fn diff_types(old: &RecordField, new: &RecordField, path: &str, changes: &mut Vec<FieldChange>) {
    let (old_inner, old_nullable) = strip_null(&old.schema);
    let (new_inner, new_nullable) = strip_null(&new.schema);
    if old_nullable != new_nullable {
        let mut nullability = change(kind::NULLABILITY_CHANGED, path, Some(&old.schema), Some(&new.schema));
        nullability.nullable = Some(new_nullable);
        changes.push(nullability);
    }
    match (old_inner, new_inner) {
        (Schema::Record(a), Schema::Record(b)) => diff_fields(&a.fields, &b.fields, path, changes),
        (Schema::Enum(a), Schema::Enum(b)) => {
            let added: Vec<&String> = b.symbols.iter().filter(|s| !a.symbols.contains(s)).collect();
            let removed: Vec<&String> = a.symbols.iter().filter(|s| !b.symbols.contains(s)).collect();
            for (kind, symbols) in [(kind::ENUM_SYMBOLS_ADDED, added), (kind::ENUM_SYMBOLS_REMOVED, removed)] {
                if !symbols.is_empty() {
                    let mut enum_change = change(kind, path, Some(old_inner), Some(new_inner));
                    enum_change
                        .evidence
                        .insert("symbols".into(), symbols.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
                    changes.push(enum_change);
                }
            }
        }
        (a, b) if type_name(a) == type_name(b) => {}
        (a, b) if widens(a, b) => changes.push(change(kind::TYPE_WIDENED, path, Some(a), Some(b))),
        (a, b) => changes.push(change(kind::TYPE_CHANGED, path, Some(a), Some(b))),
    }
    if old.default != new.default && !(old.default.is_none() && new.default.is_none()) {
        let mut default = change(kind::DEFAULT_CHANGED, path, None, None);
        default.has_default = Some(new.default.is_some());
        default.evidence = BTreeMap::from([
            ("old_default".to_owned(), old.default.as_ref().map_or("none".into(), ToString::to_string)),
            ("new_default".to_owned(), new.default.as_ref().map_or("none".into(), ToString::to_string)),
        ]);
        changes.push(default);
    }
}

/// Whether every value of `old` is a value of `new` (Avro promotions, and
/// decimals gaining precision at the same scale).
pub fn widens(old: &Schema, new: &Schema) -> bool {
    matches!(
        (old, new),
        (Schema::Int, Schema::Long | Schema::Float | Schema::Double)
            | (Schema::Long, Schema::Float | Schema::Double)
            | (Schema::Float, Schema::Double)
            | (Schema::String, Schema::Bytes)
            | (Schema::Bytes, Schema::String)
    ) || matches!((old, new), (Schema::Decimal(a), Schema::Decimal(b)) if b.precision > a.precision && a.scale == b.scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"O","fields":[{fields}]}}"#)).unwrap()
    }

    fn kinds(old: &str, new: &str) -> Vec<(String, String)> {
        classify(&schema(old), &schema(new)).into_iter().map(|c| (c.kind, c.field)).collect()
    }

    #[test]
    fn classifies_top_level_changes() {
        let base = r#"{"name":"id","type":"long"},{"name":"email","type":"string"}"#;
        assert_eq!(
            kinds(base, &format!(r#"{base},{{"name":"coupon","type":["null","string"],"default":null}}"#)),
            vec![("field_added".to_owned(), "coupon".to_owned())]
        );
        assert_eq!(
            kinds(base, r#"{"name":"id","type":"long"},{"name":"customer_email","type":"string","aliases":["email"]}"#),
            vec![("field_renamed".to_owned(), "customer_email".to_owned())]
        );
        assert_eq!(
            kinds(base, r#"{"name":"id","type":"long"}"#),
            vec![("field_removed".to_owned(), "email".to_owned())]
        );
        assert_eq!(
            kinds(r#"{"name":"n","type":"int"}"#, r#"{"name":"n","type":"long"}"#),
            vec![("type_widened".to_owned(), "n".to_owned())]
        );
        assert_eq!(
            kinds(r#"{"name":"n","type":"long"}"#, r#"{"name":"n","type":"string"}"#),
            vec![("type_changed".to_owned(), "n".to_owned())]
        );
        assert_eq!(
            kinds(r#"{"name":"n","type":"long"}"#, r#"{"name":"n","type":["null","long"],"default":null}"#),
            vec![("nullability_changed".to_owned(), "n".to_owned()), ("default_changed".to_owned(), "n".to_owned())]
        );
    }

    #[test]
    fn order_and_docs_are_no_change() {
        assert!(
            kinds(
                r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#,
                r#"{"name":"b","type":"string","doc":"now documented"},{"name":"a","type":"int"}"#
            )
            .is_empty()
        );
    }

    #[test]
    fn nested_fields_are_dotted() {
        let old =
            r#"{"name":"shipping","type":{"type":"record","name":"S","fields":[{"name":"street","type":"string"}]}}"#;
        let new = r#"{"name":"shipping","type":{"type":"record","name":"S","fields":[{"name":"street","type":"string"},{"name":"city","type":["null","string"],"default":null}]}}"#;
        assert_eq!(kinds(old, new), vec![("field_added".to_owned(), "shipping.city".to_owned())]);
    }
}
