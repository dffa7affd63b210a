//! Where a field of the contract lives in the dataset's table: shared by
//! the plan and its blast radius.

use std::collections::BTreeMap;

use mend_avro::schema::column_name;
use mend_config::Nested;

/// Where a (possibly nested) field path lives in the table: its own column
/// (top level, or flattened to `parent__child`), or inside the JSON column of
/// its top-level parent (nested records in `json` mode, anything in arrays
/// and maps).
pub(crate) enum Place {
    Column(String),
    InJson(String),
}

pub(crate) fn place(path: &str, nested: Nested, mapping: &BTreeMap<String, String>) -> Place {
    let top = path.split(['.', '[', '{']).next().unwrap_or(path);
    let column_of = |field: &str| mapping.get(field).cloned().unwrap_or_else(|| column_name(field));
    if top == path {
        Place::Column(column_of(path))
    } else if nested == Nested::Flatten && !path.contains(['[', '{']) {
        Place::Column(mapping.get(path).cloned().unwrap_or_else(|| path.replace('.', "__")))
    } else {
        Place::InJson(column_of(top))
    }
}
