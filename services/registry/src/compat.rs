//! Compatibility levels and checks, with Avro's reader/writer resolution
//! rules (apache-avro's schema_compatibility: promotions int→long→float→double,
//! defaults, aliases, enum symbols, unions).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// A compatibility level, as Confluent names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Level {
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_uppercase())).ok()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }

    /// Whether the level checks against every earlier version, not just the latest.
    pub fn transitive(self) -> bool {
        matches!(self, Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive)
    }

    fn backward(self) -> bool {
        matches!(self, Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive)
    }

    fn forward(self) -> bool {
        matches!(self, Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive)
    }
}

/// Why a schema is incompatible with an earlier one.
pub type Incompatibilities = Vec<String>;

/// Checks `new` against each of `existing` (already chosen by the caller for
/// the level: the latest only, or all for transitive levels) and returns the
/// reasons it is not compatible (empty when it is).
pub fn check(level: Level, new: &Schema, existing: &[(u32, Schema)]) -> Incompatibilities {
    let mut problems = Vec::new();
    for (version, old) in existing {
        if level.backward()
            && let Some(problem) = can_read(old, new)
        {
            problems.push(format!(
                "{}: the new schema cannot read data written with version {version}: {problem}",
                level.name()
            ));
        }
        if level.forward()
            && let Some(problem) = can_read(new, old)
        {
            problems.push(format!(
                "{}: version {version} cannot read data written with the new schema: {problem}",
                level.name()
            ));
        }
    }
    problems
}

/// None when `reader` reads everything `writer` writes.
fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        // Java's checker (and so Confluent's) rejects these: some values
        // (an enum symbol, a union branch) could not be read.
        Ok(Compatibility::Partial) => Some(
            "only partially compatible: some enum symbols or union branches of the writer are unknown to the reader"
                .into(),
        ),
        Err(error) => Some(error.to_string()),
    }
}

/// Inlines referenced named types into a schema's JSON, so the result parses
/// and compares on its own. `named` maps a referenced full name to its schema
/// JSON (itself already inlined). Names resolve against the enclosing
/// namespace, as Avro resolves them. Only the first use of a name is
/// replaced; later uses stay by name, as Avro requires.
pub fn inline_references(schema: &serde_json::Value, named: &HashMap<String, serde_json::Value>) -> serde_json::Value {
    let mut defined = std::collections::HashSet::new();
    walk(schema, None, named, &mut defined)
}

fn full_name(name: &str, namespace: Option<&str>) -> String {
    let name = name.trim_start_matches('.');
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn walk(
    node: &serde_json::Value,
    namespace: Option<&str>,
    named: &HashMap<String, serde_json::Value>,
    defined: &mut std::collections::HashSet<String>,
) -> serde_json::Value {
    use serde_json::Value;
    match node {
        Value::String(name) => {
            let full = full_name(name, namespace);
            match named.get(&full) {
                Some(definition) if defined.insert(full) => walk(definition, None, named, defined),
                _ => node.clone(),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, namespace, named, defined)).collect()),
        Value::Object(map) => {
            let mut inner = namespace.map(str::to_owned);
            if let Some(Value::String(name)) = map.get("name")
                && map.get("type").is_some_and(|t| t == "record" || t == "enum" || t == "fixed" || t == "error")
            {
                let declared = map.get("namespace").and_then(Value::as_str).or(namespace);
                let full = full_name(name, declared);
                inner = full.rsplit_once('.').map(|(ns, _)| ns.to_owned());
                defined.insert(full);
            }
            let mut out = serde_json::Map::new();
            for (key, value) in map {
                let walked = match key.as_str() {
                    "type" | "items" | "values" | "fields" => walk(value, inner.as_deref(), named, defined),
                    _ => value.clone(),
                };
                out.insert(key.clone(), walked);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        let text = format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#);
        match Schema::parse_str(&text) {
            Ok(schema) => schema,
            Err(error) => panic!("{text}: {error}"),
        }
    }

    #[test]
    fn adding_a_field_with_a_default_is_backward_compatible() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);
        assert!(check(Level::Backward, &v2, &[(1, v1.clone())]).is_empty());
        assert!(check(Level::Full, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn adding_a_required_field_breaks_backward_but_not_forward() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
        assert_eq!(check(Level::Backward, &v2, &[(1, v1.clone())]).len(), 1);
        assert!(check(Level::Forward, &v2, &[(1, v1.clone())]).is_empty());
        assert!(check(Level::None, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn int_widens_to_long_backward_only() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record(r#"{"name":"a","type":"long"}"#);
        assert!(check(Level::Backward, &v2, &[(1, v1.clone())]).is_empty());
        assert!(!check(Level::Forward, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn a_rename_with_an_alias_is_backward_compatible() {
        let v1 = record(r#"{"name":"email","type":"string"}"#);
        let v2 = record(r#"{"name":"customer_email","type":"string","aliases":["email"]}"#);
        assert!(check(Level::Backward, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn removing_an_enum_symbol_is_not_forward_compatible() {
        let e = |symbols: &str| {
            record(&format!(r#"{{"name":"s","type":{{"type":"enum","name":"S","symbols":[{symbols}]}}}}"#))
        };
        let v1 = e(r#""A","B""#);
        let v2 = e(r#""A""#);
        assert!(!check(Level::Backward, &v2, &[(1, v1.clone())]).is_empty());
        assert!(check(Level::Forward, &v2, &[(1, v1)]).is_empty());
    }

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(Level::parse("full_transitive"), Some(Level::FullTransitive));
        assert_eq!(Level::parse("BACKWARD"), Some(Level::Backward));
        assert_eq!(Level::parse("SIDEWAYS"), None);
    }

    #[test]
    fn references_are_inlined_once() -> anyhow::Result<()> {
        let address: serde_json::Value = serde_json::from_str(
            r#"{"type":"record","name":"Address","namespace":"x","fields":[{"name":"city","type":"string"}]}"#,
        )?;
        let user: serde_json::Value = serde_json::from_str(
            r#"{"type":"record","name":"User","namespace":"x","fields":[{"name":"home","type":"Address"},{"name":"work","type":"x.Address"}]}"#,
        )?;
        let inlined = inline_references(&user, &HashMap::from([("x.Address".to_owned(), address)]));
        let schema = Schema::parse(&inlined)?;
        assert!(matches!(schema, Schema::Record(_)));
        assert_eq!(inlined["fields"][1]["type"], "x.Address");
        Ok(())
    }
}
