//! Commands that talk to a running `mend up` through the control API (its
//! client is `mend_mcp::remote::Client`), and how they print changes.

use mend_model::ChangeKind;
use mend_model::events::FieldChange;

pub use mend_mcp::remote::Client;

/// One change as a line: `kind field (details)`.
pub fn describe_change(change: &FieldChange) -> String {
    match (&change.from, &change.old_type, &change.new_type) {
        (Some(from), _, _) => format!("{} {from}->{}", change.kind, change.field),
        (None, Some(old), Some(new)) if change.kind != ChangeKind::FieldAdded => {
            format!("{} {} {old}->{new}", change.kind, change.field)
        }
        _ => format!("{} {}", change.kind, change.field),
    }
}

/// One line per change: `kind field (details)`.
pub fn describe_changes(changes: &[FieldChange]) -> String {
    changes.iter().map(describe_change).collect::<Vec<_>>().join(", ")
}
