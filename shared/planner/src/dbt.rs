//! dbt `schema.yml` patches: what a schema change means for the model's
//! documentation and tests, as a unified diff a person (or `git apply`) can
//! apply. The file is edited as text, line by line, so comments, ordering and
//! formatting the team chose are kept; only the lines mend adds or replaces
//! change.
//!
//! - a new column gets an entry with the Avro `doc` as its description;
//! - a renamed field loaded into its old column gets `meta.mend_source_field`
//!   on that column, so readers know where the values now come from;
//! - new enum symbols are added to the column's `accepted_values` test.

/// One change to the model's columns.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnEdit {
    Added { column: String, description: Option<String> },
    Renamed { column: String, field: String, from: String },
    AcceptedValues { column: String, values: Vec<String> },
}

/// The patched text and its unified diff, or None when nothing changes.
/// Err names why the file cannot be patched (the model is not in it).
pub fn patch(path: &str, text: &str, model: &str, edits: &[ColumnEdit]) -> Result<Option<String>, String> {
    let patched = apply(text, model, edits)?;
    if patched == text {
        return Ok(None);
    }
    Ok(Some(diff(path, text, &patched)))
}

/// The unified diff turning `before` into `after`, the file named `path`
/// on both sides (for `git apply` in the dbt project).
pub fn diff(path: &str, before: &str, after: &str) -> String {
    diffy::DiffOptions::new()
        .set_context_len(3)
        .set_original_filename(format!("a/{path}"))
        .set_modified_filename(format!("b/{path}"))
        .create_patch(before, after)
        .to_string()
}

/// Applies a patch made by [`patch`] to another copy of the file (say, the
/// one in the team's repository). Err when it does not apply.
pub fn apply_patch(text: &str, patch: &str) -> Result<String, String> {
    let patch = diffy::Patch::from_str(patch).map_err(|e| format!("not a unified diff: {e}"))?;
    diffy::apply(text, &patch).map_err(|e| format!("the patch does not apply: {e}"))
}

/// Whether `text` already holds what `patch` adds (it reverses cleanly).
pub fn apply_patch_reverse(text: &str, patch: &str) -> Result<String, String> {
    let patch = diffy::Patch::from_str(patch).map_err(|e| format!("not a unified diff: {e}"))?;
    diffy::apply(text, &patch.reverse()).map_err(|e| format!("the patch does not reverse: {e}"))
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// `- name: x` (optionally quoted) → x.
fn list_name(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("- name:")?.trim();
    let rest = rest.split(" #").next().unwrap_or(rest).trim();
    Some(rest.trim_matches(|c| c == '"' || c == '\''))
}

/// YAML double-quoted scalar.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " "))
}

/// The line range `[start, end)` of the block introduced by `lines[start]`:
/// every following line indented more deeply (or blank).
fn block_end(lines: &[String], start: usize) -> usize {
    let indent = indent_of(&lines[start]);
    let mut end = start + 1;
    while end < lines.len() && (lines[end].trim().is_empty() || indent_of(&lines[end]) > indent) {
        end += 1;
    }
    // Trailing blank lines belong to what follows.
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    end
}

fn apply(text: &str, model: &str, edits: &[ColumnEdit]) -> Result<String, String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // The model's entry under the top-level `models:` key (sources,
    // seeds and snapshots may use the same name).
    let missing = || format!("model {model:?} is not described under `models:` in the dbt file");
    let models = lines.iter().position(|l| l.trim_end() == "models:").ok_or_else(missing)?;
    let models_end = block_end(&lines, models);
    let model_line = (models + 1..models_end).find(|&i| list_name(&lines[i]) == Some(model)).ok_or_else(missing)?;
    for edit in edits {
        let model_end = block_end(&lines, model_line);
        // The model's `columns:` key, directly under the model entry.
        let key_indent = indent_of(&lines[model_line]) + 2;
        let columns_line = (model_line + 1..model_end)
            .find(|&i| indent_of(&lines[i]) == key_indent && lines[i].trim_start().starts_with("columns:"));
        let (columns_line, columns_end) = match columns_line {
            Some(line) => (line, block_end(&lines, line)),
            None => {
                lines.insert(model_end, format!("{}columns:", " ".repeat(key_indent)));
                (model_end, model_end + 1)
            }
        };
        let entries: Vec<usize> = (columns_line + 1..columns_end).filter(|&i| list_name(&lines[i]).is_some()).collect();
        let entry_indent = entries.first().map_or(key_indent + 2, |&i| indent_of(&lines[i]));
        let find = |lines: &[String], column: &str| {
            entries
                .iter()
                .copied()
                .find(|&i| indent_of(&lines[i]) == entry_indent && list_name(&lines[i]) == Some(column))
        };
        let pad = " ".repeat(entry_indent + 2);
        match edit {
            ColumnEdit::Added { column, description } => {
                if find(&lines, column).is_some() {
                    continue;
                }
                let mut new = vec![format!("{}- name: {column}", " ".repeat(entry_indent))];
                if let Some(description) = description {
                    new.push(format!("{pad}description: {}", quoted(description)));
                }
                let at = columns_end;
                lines.splice(at..at, new);
            }
            ColumnEdit::Renamed { column, field, from } => {
                let Some(entry) = find(&lines, column) else { continue };
                let end = block_end(&lines, entry);
                if (entry + 1..end).any(|i| lines[i].trim_start().starts_with("meta:")) {
                    continue;
                }
                lines.insert(end, format!("{pad}meta: {{mend_source_field: {field}, mend_renamed_from: {from}}}"));
            }
            ColumnEdit::AcceptedValues { column, values } => {
                let Some(entry) = find(&lines, column) else { continue };
                let end = block_end(&lines, entry);
                let Some(test) = (entry + 1..end).find(|&i| lines[i].contains("accepted_values")) else { continue };
                let Some(values_line) = (test..end).find(|&i| lines[i].trim_start().starts_with("values:")) else {
                    continue;
                };
                let values_end = block_end(&lines, values_line);
                let flow = values.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect::<Vec<_>>().join(", ");
                let indent = " ".repeat(indent_of(&lines[values_line]));
                lines.splice(values_line..values_end, [format!("{indent}values: [{flow}]")]);
            }
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "\
version: 2

sources:
  - name: shop
    tables:
      - name: orders

models:
  - name: orders
    description: \"Orders from the shop\"
    columns:
      - name: id
        data_tests:
          - unique
      - name: email
        description: \"Who ordered\"
      - name: status
        data_tests:
          - accepted_values:
              arguments:
                values:
                  - paid
                  - shipped
  - name: customers
    columns:
      - name: id
";

    #[test]
    fn adds_renames_and_extends_accepted_values() {
        let edits = [
            ColumnEdit::Added { column: "coupon".into(), description: Some("promotion \"code\"".into()) },
            ColumnEdit::Renamed { column: "email".into(), field: "customer_email".into(), from: "email".into() },
            ColumnEdit::AcceptedValues {
                column: "status".into(),
                values: vec!["paid".into(), "shipped".into(), "refunded".into()],
            },
        ];
        let patched = apply(SCHEMA, "orders", &edits).unwrap();
        assert!(
            patched
                .contains("      - name: coupon\n        description: \"promotion \\\"code\\\"\"\n  - name: customers")
        );
        assert!(patched.contains(
            "description: \"Who ordered\"\n        meta: {mend_source_field: customer_email, mend_renamed_from: email}\n"
        ));
        assert!(
            patched.contains("              arguments:\n                values: ['paid', 'shipped', 'refunded']\n")
        );
        // The other model is untouched.
        assert!(patched.ends_with("  - name: customers\n    columns:\n      - name: id\n"));
        let diff = patch("models/schema.yml", SCHEMA, "orders", &edits).unwrap().unwrap();
        assert!(diff.starts_with("--- a/models/schema.yml\n+++ b/models/schema.yml\n"));
        assert!(diff.contains("+      - name: coupon\n"));
        // The diff applies to the original, and reverses on the result.
        assert_eq!(apply_patch(SCHEMA, &diff).unwrap(), patched);
        assert_eq!(apply_patch_reverse(&patched, &diff).unwrap(), SCHEMA);
        assert!(apply_patch(&patched, &diff).is_err());
    }

    #[test]
    fn a_model_without_columns_gets_them_and_nothing_is_nothing() {
        let text = "version: 2\nmodels:\n  - name: orders\n    description: x\n";
        let patched =
            apply(text, "orders", &[ColumnEdit::Added { column: "coupon".into(), description: None }]).unwrap();
        assert_eq!(
            patched,
            "version: 2\nmodels:\n  - name: orders\n    description: x\n    columns:\n      - name: coupon\n"
        );
        assert_eq!(patch("s.yml", text, "orders", &[]).unwrap(), None);
        assert!(patch("s.yml", text, "missing", &[]).is_err());
    }
}
