//! Classifies what changed between a dataset's contract schema and a new
//! writer schema, field by field. Used by the detector (for the detection)
//! and the diagnoser (with evidence), so both name changes the same way.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema::RecordField;

use mend_model::events::FieldChange;
use mend_model::{ChangeKind, RenameProof};

use crate::schema::{record_of, strip_null, type_name};

mod rename;
use rename::rename_score;
pub use rename::{
    Overlap, RENAME_THRESHOLD, VETO_OVERLAP, VETO_SAMPLES, comparable, comparable_value, name_similarity,
    type_agreement, value_overlap,
};

/// Value evidence for rename candidates: `(removed path, added path)` →
/// overlap. Absent pairs are scored on name and type alone.
pub type OverlapEvidence = BTreeMap<(String, String), Overlap>;

/// Every field-level change from `old` to `new`, in the new schema's field
/// order (removals last). Changes that need no action (field order, docs,
/// namespaces) produce nothing. Renames are proven by aliases; without one,
/// a removed and an added field are paired when name, type and (when given)
/// value overlap score at least [`RENAME_THRESHOLD`].
pub fn classify(old: &Schema, new: &Schema) -> Vec<FieldChange> {
    classify_with(old, new, &OverlapEvidence::new())
}

/// [`classify`] with value-overlap evidence for rename candidates.
pub fn classify_with(old: &Schema, new: &Schema, overlap: &OverlapEvidence) -> Vec<FieldChange> {
    // A named type reused by name is compared wherever it appears.
    let (old, new) = (&crate::schema::inline_refs(old), &crate::schema::inline_refs(new));
    let mut changes = Vec::new();
    if let (Some(old), Some(new)) = (record_of(old), record_of(new)) {
        diff_fields(&old.fields, &new.fields, "", overlap, &mut changes);
    } else if type_name(old) != type_name(new) {
        changes.push(change(ChangeKind::TypeChanged, "", Some(old), Some(new)));
    }
    // The floor: Avro's own resolution. A new schema the contract cannot
    // read is never "no change", even where the diff sees none.
    if changes.is_empty()
        && let Err(why) = apache_avro::schema_compatibility::SchemaCompatibility::can_read(new, old)
    {
        let mut incompatible = change(ChangeKind::Incompatible, "", Some(old), Some(new));
        incompatible.evidence.insert("avro".into(), why.to_string());
        incompatible.avro_error = Some(why.to_string());
        changes.push(incompatible);
    }
    changes
}

/// Pairs of top-level (removed, added) fields whose types agree: the
/// rename candidates worth sampling values for (names alone may not tell).
pub fn rename_candidates(old: &Schema, new: &Schema) -> Vec<(String, String)> {
    let (Some(old), Some(new)) = (record_of(old), record_of(new)) else { return Vec::new() };
    let removed =
        old.fields.iter().filter(|o| !new.fields.iter().any(|n| n.name == o.name || n.aliases.contains(&o.name)));
    let mut pairs = Vec::new();
    for r in removed {
        let added =
            new.fields.iter().filter(|n| !old.fields.iter().any(|o| o.name == n.name || n.aliases.contains(&o.name)));
        for a in added {
            if type_agreement(&r.schema, &a.schema) > 0.0 {
                pairs.push((r.name.clone(), a.name.clone()));
            }
        }
    }
    pairs
}

fn change(kind: ChangeKind, field: &str, old: Option<&Schema>, new: Option<&Schema>) -> FieldChange {
    FieldChange { old_type: old.map(type_name), new_type: new.map(type_name), ..FieldChange::new(kind, field) }
}

fn diff_fields(
    old: &[RecordField],
    new: &[RecordField],
    prefix: &str,
    overlap: &OverlapEvidence,
    changes: &mut Vec<FieldChange>,
) {
    let path = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    let mut matched = vec![false; old.len()];
    let mut added = Vec::new();
    // Per new field, its changes (kept in the new schema's order).
    let mut per_field: Vec<Vec<FieldChange>> = vec![Vec::new(); new.len()];
    for (position, field) in new.iter().enumerate() {
        let by_name = old.iter().position(|o| o.name == field.name);
        let by_alias = by_name.or_else(|| old.iter().position(|o| field.aliases.contains(&o.name)));
        match by_alias {
            Some(index) if !matched[index] => {
                matched[index] = true;
                let previous = &old[index];
                let out = &mut per_field[position];
                if previous.name != field.name {
                    let mut renamed = change(
                        ChangeKind::FieldRenamed,
                        &path(&field.name),
                        Some(&previous.schema),
                        Some(&field.schema),
                    );
                    renamed.from = Some(path(&previous.name));
                    renamed.to = Some(path(&field.name));
                    renamed.confidence = Some(1.0);
                    renamed.rename_proof = Some(RenameProof::Alias);
                    renamed.evidence = BTreeMap::from([
                        ("method".to_owned(), RenameProof::Alias.describe().to_owned()),
                        ("alias".to_owned(), format!("{} lists {} among its aliases", field.name, previous.name)),
                    ]);
                    out.push(renamed);
                }
                diff_types(previous, field, &path(&field.name), overlap, out);
            }
            _ => added.push(position),
        }
    }
    // Renames without an alias: the best-scoring removed/added pairs at or
    // above the threshold, each field used once.
    let removed: Vec<usize> = (0..old.len()).filter(|i| !matched[*i]).collect();
    let mut scored = Vec::new();
    for &r in &removed {
        for &a in &added {
            let key = (path(&old[r].name), path(&new[a].name));
            let (score, evidence) = rename_score(&old[r], &new[a], overlap.get(&key).copied());
            if score >= RENAME_THRESHOLD {
                scored.push((score, r, a, evidence));
            }
        }
    }
    scored.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut paired_new = std::collections::BTreeSet::new();
    for (score, r, a, evidence) in scored {
        if matched[r] || paired_new.contains(&a) {
            continue;
        }
        matched[r] = true;
        paired_new.insert(a);
        let (previous, field) = (&old[r], &new[a]);
        let mut renamed =
            change(ChangeKind::FieldRenamed, &path(&field.name), Some(&previous.schema), Some(&field.schema));
        renamed.from = Some(path(&previous.name));
        renamed.to = Some(path(&field.name));
        renamed.confidence = Some((score * 100.0).round() / 100.0);
        renamed.evidence = evidence;
        renamed.rename_proof = Some(RenameProof::Similarity);
        per_field[a].push(renamed);
        diff_types(previous, field, &path(&field.name), overlap, &mut per_field[a]);
    }
    for a in added.into_iter().filter(|a| !paired_new.contains(a)) {
        let field = &new[a];
        let (_, nullable) = strip_null(&field.schema);
        let mut addition = change(ChangeKind::FieldAdded, &path(&field.name), None, Some(&field.schema));
        addition.nullable = Some(nullable);
        addition.has_default = Some(field.default.is_some());
        if let Some(doc) = &field.doc {
            addition.evidence.insert("doc".into(), doc.clone());
            addition.doc = Some(doc.clone());
        }
        per_field[a].push(addition);
    }
    changes.extend(per_field.into_iter().flatten());
    for (field, _) in old.iter().zip(&matched).filter(|(_, m)| !**m) {
        let (_, nullable) = strip_null(&field.schema);
        let mut removal = change(ChangeKind::FieldRemoved, &path(&field.name), Some(&field.schema), None);
        removal.nullable = Some(nullable);
        changes.push(removal);
    }
}

fn diff_types(
    old: &RecordField,
    new: &RecordField,
    path: &str,
    overlap: &OverlapEvidence,
    changes: &mut Vec<FieldChange>,
) {
    let (old_inner, old_nullable) = strip_null(&old.schema);
    let (new_inner, new_nullable) = strip_null(&new.schema);
    if old_nullable != new_nullable {
        let mut nullability = change(ChangeKind::NullabilityChanged, path, Some(&old.schema), Some(&new.schema));
        nullability.nullable = Some(new_nullable);
        changes.push(nullability);
    }
    diff_schemas(old_inner, new_inner, path, overlap, changes);
    if old.default != new.default && !(old.default.is_none() && new.default.is_none()) {
        let mut default = change(ChangeKind::DefaultChanged, path, None, None);
        default.has_default = Some(new.default.is_some());
        default.evidence = BTreeMap::from([
            ("old_default".to_owned(), old.default.as_ref().map_or("none".into(), ToString::to_string)),
            ("new_default".to_owned(), new.default.as_ref().map_or("none".into(), ToString::to_string)),
        ]);
        changes.push(default);
    }
}

/// Changes between two (non-null) types at `path`; arrays and maps recurse
/// into their items as `path[]`.
fn diff_schemas(old: &Schema, new: &Schema, path: &str, overlap: &OverlapEvidence, changes: &mut Vec<FieldChange>) {
    match (old, new) {
        (Schema::Record(a), Schema::Record(b)) => diff_fields(&a.fields, &b.fields, path, overlap, changes),
        (Schema::Array(a), Schema::Array(b)) => diff_within(&a.items, &b.items, &format!("{path}[]"), overlap, changes),
        (Schema::Map(a), Schema::Map(b)) => diff_within(&a.types, &b.types, &format!("{path}{{}}"), overlap, changes),
        (Schema::Union(a), Schema::Union(b)) => diff_unions(a.variants(), b.variants(), path, overlap, changes),
        // A branch the writer no longer sends: the union reads it as before.
        (Schema::Union(a), b) if a.variants().iter().any(|v| type_name(v) == type_name(b)) => {
            if let Some(v) = a.variants().iter().find(|v| type_name(v) == type_name(b)) {
                diff_schemas(v, b, path, overlap, changes);
            }
        }
        (Schema::Enum(a), Schema::Enum(b)) => {
            let added: Vec<&String> = b.symbols.iter().filter(|s| !a.symbols.contains(s)).collect();
            let removed: Vec<&String> = a.symbols.iter().filter(|s| !b.symbols.contains(s)).collect();
            for (kind, symbols) in [(ChangeKind::EnumSymbolsAdded, added), (ChangeKind::EnumSymbolsRemoved, removed)] {
                if !symbols.is_empty() {
                    let mut enum_change = change(kind, path, Some(old), Some(new));
                    enum_change
                        .evidence
                        .insert("symbols".into(), symbols.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","));
                    enum_change.evidence.insert("all_symbols".into(), b.symbols.join(","));
                    enum_change.all_symbols.clone_from(&b.symbols);
                    changes.push(enum_change);
                }
            }
        }
        (a, b) if type_name(a) == type_name(b) => {}
        (a, b) if widens(a, b) => changes.push(change(ChangeKind::TypeWidened, path, Some(a), Some(b))),
        (a, b) => changes.push(change(ChangeKind::TypeChanged, path, Some(a), Some(b))),
    }
}

/// Changes of an array's items or a map's values at `path`, nullability
/// included (`map<string>` → `map<[null, string]>`).
fn diff_within(old: &Schema, new: &Schema, path: &str, overlap: &OverlapEvidence, changes: &mut Vec<FieldChange>) {
    let (old_inner, old_nullable) = strip_null(old);
    let (new_inner, new_nullable) = strip_null(new);
    if old_nullable != new_nullable {
        let mut nullability = change(ChangeKind::NullabilityChanged, path, Some(old), Some(new));
        nullability.nullable = Some(new_nullable);
        changes.push(nullability);
    }
    diff_schemas(old_inner, new_inner, path, overlap, changes);
}

/// How a union branch is named in a change's path: a named type by its
/// name, any other by its type (`payment<Card>.number`, `value<long>`).
fn branch_label(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.name().to_owned(),
        Schema::Enum(e) => e.name.name().to_owned(),
        Schema::Fixed(f) => f.name.name().to_owned(),
        other => type_name(other),
    }
}

/// The full name of a named branch.
fn full_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        Schema::Enum(e) => Some(e.name.fullname(None)),
        Schema::Fixed(f) => Some(f.name.fullname(None)),
        _ => None,
    }
}

/// Changes between two unions (of two or more types besides null): each
/// new branch is matched with an old one — named types by full name, then
/// records by shape (the most field names in common, at least half), any
/// other type by its type — and compared inside; a new branch without an
/// old one is a type change (the contract cannot read its values), and a
/// branch the writer dropped changes nothing. Nullability is a change too.
fn diff_unions(old: &[Schema], new: &[Schema], path: &str, overlap: &OverlapEvidence, changes: &mut Vec<FieldChange>) {
    let null = |v: &[Schema]| v.iter().any(|s| matches!(s, Schema::Null));
    if null(old) != null(new) {
        let mut nullability = change(ChangeKind::NullabilityChanged, path, None, None);
        nullability.nullable = Some(null(new));
        changes.push(nullability);
    }
    let old: Vec<&Schema> = old.iter().filter(|s| !matches!(s, Schema::Null)).collect();
    let mut used = vec![false; old.len()];
    let mut unmatched = Vec::new();
    for branch in new.iter().filter(|s| !matches!(s, Schema::Null)) {
        let by_name = full_name(branch).and_then(|name| {
            old.iter().enumerate().position(|(i, o)| !used[i] && full_name(o).as_deref() == Some(name.as_str()))
        });
        let by_type = || {
            old.iter()
                .enumerate()
                .position(|(i, o)| !used[i] && full_name(o).is_none() && type_name(o) == type_name(branch))
        };
        match by_name.or_else(|| if full_name(branch).is_none() { by_type() } else { None }) {
            Some(i) => {
                used[i] = true;
                diff_schemas(old[i], branch, &format!("{path}<{}>", branch_label(branch)), overlap, changes);
            }
            None => unmatched.push(branch),
        }
    }
    for branch in unmatched {
        // A record renamed with its fields: the best overlap of field names.
        let shape =
            |schema: &Schema| record_of(schema).map(|r| r.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>());
        let best = shape(branch).and_then(|fields| {
            old.iter()
                .enumerate()
                .filter(|(i, _)| !used[*i])
                .filter_map(|(i, o)| {
                    let theirs = shape(o)?;
                    let common = fields.iter().filter(|f| theirs.contains(f)).count();
                    (common * 2 >= fields.len().max(theirs.len()) && common > 0).then_some((common, i))
                })
                .max()
        });
        match best {
            Some((_, i)) => {
                used[i] = true;
                diff_schemas(old[i], branch, &format!("{path}<{}>", branch_label(branch)), overlap, changes);
            }
            None => {
                let widened = old.iter().any(|o| widens(o, branch));
                let kind = if widened { ChangeKind::TypeWidened } else { ChangeKind::TypeChanged };
                let mut added = change(kind, path, None, Some(branch));
                added.evidence.insert("union_branch_added".into(), branch_label(branch));
                changes.push(added);
            }
        }
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
mod tests;
