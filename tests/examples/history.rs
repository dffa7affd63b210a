//! Runs consecutive versions of real schemas through mend's diff and Avro's
//! own resolution: one JSON line per pair on stdin (`{"id", "name", "old":
//! [schema texts], "new": [schema texts]}`, each side every schema of its
//! commit, so named types defined in other files resolve; `name` the full
//! name of the record compared), one JSON line per pair on stdout: mend's
//! changes, and whether the old schema (the contract) can read the new.
//! Used to measure mend against public schema histories (the closing notes
//! say which); not part of `make test`.

use std::io::BufRead as _;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde_json::{Value, json};

fn find(texts: &[String], name: &str) -> Result<Schema, String> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let schemas = Schema::parse_list(refs).map_err(|e| e.to_string())?;
    schemas
        .into_iter()
        .find(|s| matches!(s, Schema::Record(r) if r.name.fullname(None) == name))
        .ok_or_else(|| format!("no record {name}"))
}

fn main() -> anyhow::Result<()> {
    for line in std::io::stdin().lock().lines() {
        let pair: Value = serde_json::from_str(&line?)?;
        let texts = |side: &str| -> Vec<String> {
            pair[side].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_owned)).collect()
        };
        let name = pair["name"].as_str().unwrap_or_default();
        let out = match (find(&texts("old"), name), find(&texts("new"), name)) {
            (Ok(old), Ok(new)) => {
                let changes = mend_avro::drift::classify(&old, &new);
                json!({
                    "id": pair["id"], "name": name,
                    "contract_can_read": SchemaCompatibility::can_read(&new, &old).is_ok(),
                    "changes": changes.iter().map(|c| json!({"kind": c.kind.as_str(), "field": c.field,
                        "from": c.from, "to": c.to, "confidence": c.confidence})).collect::<Vec<_>>(),
                    "identical": old.canonical_form() == new.canonical_form(),
                })
            }
            (old, new) => json!({"id": pair["id"], "name": name, "error": format!("{:?} {:?}", old.err(), new.err())}),
        };
        println!("{out}");
    }
    Ok(())
}
