//! The evidence for and against a rename without an alias: names, types,
//! docs and the values sampled from the old column.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema::RecordField;

use mend_model::RenameProof;

use super::widens;
use crate::schema::{strip_null, type_name};

/// Renames without an alias are accepted at or above this score.
pub const RENAME_THRESHOLD: f64 = 0.8;

/// Distinct sampled values enough for values that do not overlap to veto a
/// rename the names suggest.
pub const VETO_SAMPLES: usize = 5;

/// Below this share of overlapping values (with [`VETO_SAMPLES`] or more),
/// the values say the fields are not the same.
pub const VETO_OVERLAP: f64 = 0.2;

/// How many of the new field's distinct values were found in the old column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// Share of the new field's distinct sampled values present in the old column (0–1).
    pub fraction: f64,
    /// Distinct new values sampled.
    pub sampled: usize,
}

/// Share of the distinct `new` values that also occur in `old`. The cost of
/// the value-overlap evidence: one hash lookup per distinct sampled value.
pub fn value_overlap<'a>(new: impl IntoIterator<Item = &'a str>, old: &std::collections::HashSet<String>) -> Overlap {
    let distinct: std::collections::HashSet<&str> = new.into_iter().collect();
    let found = distinct.iter().filter(|v| old.contains(**v)).count();
    let fraction = if distinct.is_empty() { 0.0 } else { found as f64 / distinct.len() as f64 };
    Overlap { fraction, sampled: distinct.len() }
}

/// A value's text, comparable across Avro values and warehouse text casts
/// (numbers in one canonical form: `3`, `3.0` and `3.00` are one value).
pub fn comparable(text: &str) -> String {
    match text.trim().parse::<f64>() {
        Ok(number) if number.is_finite() => format!("{number}"),
        _ => text.to_owned(),
    }
}

/// The comparable text of a loaded value (None for NULL).
pub fn comparable_value(value: &mend_model::SqlValue) -> Option<String> {
    use mend_model::SqlValue;
    Some(match value {
        SqlValue::Null => return None,
        SqlValue::Bool(b) => b.to_string(),
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Float(f) => comparable(&f.to_string()),
        SqlValue::Bytes(b) => hex::encode(b),
        SqlValue::Text(s) | SqlValue::Json(s) | SqlValue::Timestamp(s) | SqlValue::Date(s) => s.clone(),
        SqlValue::Decimal(s) => comparable(s),
    })
}

/// Similarity of two field names (0–1): Jaro-Winkler on the names without
/// case and separators. A name contained in the other (`timestamp` in
/// `produceTimestampMillis`) gets no credit of its own: it proves nothing
/// without values (see [`rename_score`]).
pub fn name_similarity(a: &str, b: &str) -> f64 {
    let norm = |s: &str| s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>();
    strsim::jaro_winkler(&norm(a), &norm(b))
}

/// Similarity of two docs (0–1), on their words: None when either has none.
pub(super) fn doc_similarity(a: Option<&String>, b: Option<&String>) -> Option<f64> {
    let words = |s: &str| {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 2)
            .map(str::to_lowercase)
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (a, b) = (words(a?), words(b?));
    if a.is_empty() || b.is_empty() {
        return None;
    }
    Some(a.intersection(&b).count() as f64 / a.union(&b).count() as f64)
}

/// How well the old field's values fit the new field's type: 1 for the same
/// type, 0.7 for a widening, 0 otherwise (then it is no rename).
pub fn type_agreement(old: &Schema, new: &Schema) -> f64 {
    let (old, _) = strip_null(old);
    let (new, _) = strip_null(new);
    if type_name(old) == type_name(new) {
        1.0
    } else if widens(old, new) {
        0.7
    } else {
        0.0
    }
}

/// The rename score of a removed/added pair and its evidence, for and
/// against. A rename is proposed only when the evidence for it outweighs
/// the evidence against:
/// - for: similar names, agreeing types, sampled values found in the old
///   column;
/// - against: sampled values that do not overlap (with [`VETO_SAMPLES`] or
///   more distinct values they veto a match the names suggest), docs that
///   say different things, types that disagree (never a rename).
pub(super) fn rename_score(
    removed: &RecordField,
    added: &RecordField,
    overlap: Option<Overlap>,
) -> (f64, BTreeMap<String, String>) {
    let name = name_similarity(&removed.name, &added.name);
    let types = type_agreement(&removed.schema, &added.schema);
    // Names and types alone can prove a rename (customerId -> customer_id);
    // values can prove one the names do not suggest (amount -> total).
    let by_name = 0.6 * name + 0.4 * types;
    let by_values = overlap.map_or(0.0, |o| 0.25 * name + 0.25 * types + 0.5 * o.fraction);
    let mut score = if types == 0.0 { 0.0 } else { by_name.max(by_values) };
    let mut against = Vec::new();
    if let Some(o) = overlap
        && o.sampled >= VETO_SAMPLES
        && o.fraction < VETO_OVERLAP
    {
        against.push(format!("{:.0}% of {} sampled values found in the old column", o.fraction * 100.0, o.sampled));
        score = score.min(RENAME_THRESHOLD - 0.01);
    }
    let docs = doc_similarity(removed.doc.as_ref(), added.doc.as_ref());
    let mut for_docs = None;
    match docs {
        Some(docs) if docs < 0.3 => {
            against.push(format!("the docs say different things (word overlap {docs:.2})"));
            score -= 0.2;
        }
        // The same doc under another name (payload -> data, "the payload
        // serialized into Avro bytes"): evidence for, with agreeing types.
        Some(docs) if docs >= 0.6 && types > 0.0 => {
            for_docs = Some(format!("the docs say the same (word overlap {docs:.2})"));
            score += 0.2;
        }
        _ => {}
    }
    if types == 0.0 {
        against.push("the types disagree".to_owned());
    }
    let score = score.clamp(0.0, 1.0);
    let mut evidence = BTreeMap::from([
        ("method".to_owned(), RenameProof::Similarity.describe().to_owned()),
        ("name_similarity".to_owned(), format!("{name:.2}")),
        ("type_agreement".to_owned(), format!("{types:.2}")),
        ("score".to_owned(), format!("{score:.2}")),
        ("threshold".to_owned(), format!("{RENAME_THRESHOLD:.2}")),
    ]);
    match overlap {
        Some(o) => {
            evidence.insert("value_overlap".into(), format!("{:.2}", o.fraction));
            evidence.insert("values_sampled".into(), o.sampled.to_string());
        }
        None => {
            evidence.insert("value_overlap".into(), "not sampled".into());
        }
    }
    if let Some(docs) = docs {
        evidence.insert("doc_similarity".into(), format!("{docs:.2}"));
    }
    let mut for_it = vec![format!("names {name:.2} alike"), format!("types agree {types:.2}")];
    for_it.extend(for_docs);
    if let Some(o) = overlap.filter(|o| o.fraction >= VETO_OVERLAP) {
        for_it.push(format!("{:.0}% of {} sampled values found in the old column", o.fraction * 100.0, o.sampled));
    }
    evidence.insert("evidence_for".into(), for_it.join("; "));
    if !against.is_empty() {
        evidence.insert("evidence_against".into(), against.join("; "));
    }
    (score, evidence)
}
