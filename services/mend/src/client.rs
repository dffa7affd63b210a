//! Commands that talk to a running `mend up` through the control API (its
//! client is `mend_mcp::remote::Client`), and how they print changes.

use serde_json::Value;

pub use mend_mcp::remote::Client;

/// One change as a line: `kind field (details)`.
pub fn describe_change(change: &mend_model::events::FieldChange) -> String {
    describe_changes(&Value::Array(vec![serde_json::to_value(change).unwrap_or_default()]))
}

/// One line per change: `kind field (details)`.
pub fn describe_changes(changes: &Value) -> String {
    changes
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|c| {
                    let kind = c["kind"].as_str().unwrap_or("?");
                    let field = c["field"].as_str().unwrap_or("?");
                    match (c["from"].as_str(), c["old_type"].as_str(), c["new_type"].as_str()) {
                        (Some(from), _, _) => format!("{kind} {from}->{field}"),
                        (None, Some(old), Some(new)) if kind != "field_added" => format!("{kind} {field} {old}->{new}"),
                        _ => format!("{kind} {field}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
