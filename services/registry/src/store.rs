//! The registry's state: a deterministic function of the `_schemas` log.
//!
//! Every instance replays the same log, so every instance reaches the same
//! state. Instances write without a leader: when two of them race for the
//! same subject version or the same schema id, the record that comes first in
//! the log wins and the later one is ignored by every replayer; its writer sees
//! that its record did not take effect, tombstones it and tries again.
//!
//! Records follow Confluent's layout (JSON key and value): `SCHEMA` keys carry
//! the subject and version (plus the writing instance, so a compacted topic
//! keeps a losing record apart from the winning one), a null value is a
//! permanent delete; `CONFIG` keys carry the subject or null for the global
//! level.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::compat::Level;

/// A reference from one schema to a named type registered under a subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A registered schema (content, not position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchema {
    /// Normalised JSON text (whitespace and key order removed).
    pub schema: String,
    pub schema_type: String,
    pub references: Vec<Reference>,
}

impl StoredSchema {
    fn fingerprint(&self) -> (String, String, Vec<Reference>) {
        (self.schema_type.clone(), self.schema.clone(), self.references.clone())
    }
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub id: u32,
    pub deleted: bool,
    /// The log key that created this version; only it may update or delete it.
    key: SchemaKey,
}

/// Key of a `SCHEMA` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaKey {
    pub keytype: String,
    pub subject: String,
    pub version: u32,
    pub magic: u32,
    /// The instance that wrote the record (absent in Confluent's own records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// Value of a `SCHEMA` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    #[serde(rename = "schemaType", default = "avro", skip_serializing_if = "is_avro")]
    pub schema_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(default)]
    pub deleted: bool,
}

fn avro() -> String {
    "AVRO".to_owned()
}

fn is_avro(schema_type: &str) -> bool {
    schema_type == "AVRO"
}

/// Key of a `CONFIG` record; `subject` is None for the global level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigKey {
    pub keytype: String,
    pub subject: Option<String>,
    pub magic: u32,
}

/// Value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: Level,
}

/// Keys this registry writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogKey {
    Schema(SchemaKey),
    Config(ConfigKey),
}

impl LogKey {
    pub fn schema(subject: &str, version: u32, writer: &str) -> Self {
        Self::Schema(SchemaKey {
            keytype: "SCHEMA".into(),
            subject: subject.to_owned(),
            version,
            magic: 1,
            writer: Some(writer.to_owned()),
        })
    }

    pub fn config(subject: Option<&str>) -> Self {
        Self::Config(ConfigKey { keytype: "CONFIG".into(), subject: subject.map(str::to_owned), magic: 0 })
    }
}

/// The in-memory state rebuilt from the log.
#[derive(Debug, Default)]
pub struct Schemas {
    schemas: HashMap<u32, StoredSchema>,
    ids: HashMap<(String, String, Vec<Reference>), u32>,
    subjects: BTreeMap<String, BTreeMap<u32, VersionEntry>>,
    configs: HashMap<String, Level>,
    global: Option<Level>,
    /// Highest id ever used: ids are never reused, even after a hard delete.
    max_id: u32,
}

impl Schemas {
    /// Applies one log record. Unknown key types (Confluent's NOOP, modes, …)
    /// and malformed records are ignored, as other registries do.
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(raw) = serde_json::from_slice::<serde_json::Value>(key) else { return };
        match raw.get("keytype").and_then(|k| k.as_str()) {
            Some("SCHEMA") => {
                let Ok(key) = serde_json::from_value::<SchemaKey>(raw) else { return };
                match value.map(serde_json::from_slice::<SchemaValue>) {
                    None => self.remove_version(&key),
                    Some(Ok(value)) => self.put_version(key, value),
                    Some(Err(error)) => tracing::warn!(%error, "ignoring malformed SCHEMA record"),
                }
            }
            Some("CONFIG") => {
                let Ok(key) = serde_json::from_value::<ConfigKey>(raw) else { return };
                let level =
                    value.and_then(|v| serde_json::from_slice::<ConfigValue>(v).ok()).map(|v| v.compatibility_level);
                match (key.subject, level) {
                    (None, level) => self.global = level,
                    (Some(subject), Some(level)) => {
                        self.configs.insert(subject, level);
                    }
                    (Some(subject), None) => {
                        self.configs.remove(&subject);
                    }
                }
            }
            _ => {}
        }
    }

    fn put_version(&mut self, key: SchemaKey, value: SchemaValue) {
        if key.subject != value.subject || key.version != value.version {
            return;
        }
        if let Some(existing) = self.subjects.get_mut(&key.subject).and_then(|s| s.get_mut(&key.version)) {
            // The writer of a version may soft-delete or restore it; anyone
            // else lost the race for this version number.
            if existing.key == key && existing.id == value.id {
                existing.deleted = value.deleted;
            }
            return;
        }
        let schema =
            StoredSchema { schema: value.schema, schema_type: value.schema_type, references: value.references };
        match self.schemas.get(&value.id) {
            Some(known) if *known != schema => return, // id taken by another schema
            Some(_) => {}
            None => {
                if self.ids.contains_key(&schema.fingerprint()) {
                    return; // the same schema already has another id
                }
                self.ids.insert(schema.fingerprint(), value.id);
                self.schemas.insert(value.id, schema);
            }
        }
        self.max_id = self.max_id.max(value.id);
        self.subjects
            .entry(key.subject.clone())
            .or_default()
            .insert(key.version, VersionEntry { id: value.id, deleted: value.deleted, key });
    }

    fn remove_version(&mut self, key: &SchemaKey) {
        let Some(versions) = self.subjects.get_mut(&key.subject) else { return };
        let Some(entry) = versions.get(&key.version) else { return };
        if entry.key != *key {
            return; // a tombstone of a record that never took effect
        }
        let id = entry.id;
        versions.remove(&key.version);
        if versions.is_empty() {
            self.subjects.remove(&key.subject);
            self.configs.remove(&key.subject);
        }
        let still_used = self.subjects.values().any(|v| v.values().any(|e| e.id == id));
        if !still_used && let Some(schema) = self.schemas.remove(&id) {
            self.ids.remove(&schema.fingerprint());
        }
    }

    // ---- queries -------------------------------------------------------

    pub fn global_level(&self) -> Level {
        self.global.unwrap_or_default()
    }

    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.configs.get(subject).copied()
    }

    /// The level that applies to `subject`.
    pub fn effective_level(&self, subject: &str) -> Level {
        self.subject_level(subject).unwrap_or_else(|| self.global_level())
    }

    pub fn schema(&self, id: u32) -> Option<&StoredSchema> {
        self.schemas.get(&id)
    }

    pub fn id_of(&self, schema: &StoredSchema) -> Option<u32> {
        self.ids.get(&schema.fingerprint()).copied()
    }

    pub fn next_id(&self) -> u32 {
        self.max_id + 1
    }

    /// Subjects with at least one live version (or any version with `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.values().any(|v| !v.deleted))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// All versions of a subject, ascending; None when the subject has none.
    pub fn versions(&self, subject: &str) -> Option<&BTreeMap<u32, VersionEntry>> {
        self.subjects.get(subject)
    }

    /// Versions of a subject that are not soft-deleted, ascending.
    pub fn live_versions(&self, subject: &str) -> Vec<(u32, u32)> {
        self.subjects
            .get(subject)
            .map(|versions| versions.iter().filter(|(_, e)| !e.deleted).map(|(v, e)| (*v, e.id)).collect())
            .unwrap_or_default()
    }

    /// The version number a new registration under `subject` would get.
    pub fn next_version(&self, subject: &str) -> u32 {
        self.subjects.get(subject).and_then(|v| v.keys().next_back()).map_or(1, |v| v + 1)
    }

    /// Whether a version was written by `writer` (i.e. its record won).
    pub fn version_written_by(&self, subject: &str, version: u32, writer: &str) -> bool {
        self.subjects
            .get(subject)
            .and_then(|v| v.get(&version))
            .is_some_and(|e| e.key.writer.as_deref() == Some(writer))
    }

    /// The log key that owns a version, for updates and tombstones.
    pub fn version_key(&self, subject: &str, version: u32) -> Option<SchemaKey> {
        self.subjects.get(subject).and_then(|v| v.get(&version)).map(|e| e.key.clone())
    }

    /// (subject, version) pairs that use schema `id`.
    pub fn usages(&self, id: u32, deleted: bool) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |(_, e)| e.id == id && (deleted || !e.deleted))
                    .map(move |(v, _)| (subject.clone(), *v))
            })
            .collect()
    }

    /// Live (subject, version) pairs whose schema references `subject`/`version`.
    pub fn referenced_by(&self, subject: &str, version: u32) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .subjects
            .values()
            .flat_map(|versions| versions.values().filter(|e| !e.deleted).map(|e| e.id))
            .filter(|id| {
                self.schemas.get(id).is_some_and(|s| {
                    s.references.iter().any(|r| r.subject == subject && u32::try_from(r.version) == Ok(version))
                })
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(subject: &str, version: u32, id: u32, schema: &str, writer: &str) -> (Vec<u8>, Vec<u8>) {
        let key = serde_json::to_vec(&LogKey::schema(subject, version, writer)).unwrap_or_default();
        let value = serde_json::to_vec(&SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema: schema.into(),
            schema_type: "AVRO".into(),
            references: vec![],
            deleted: false,
        })
        .unwrap_or_default();
        (key, value)
    }

    #[test]
    fn the_first_record_for_a_version_wins() {
        let mut store = Schemas::default();
        let (k1, v1) = record("s", 1, 1, "\"int\"", "a");
        let (k2, v2) = record("s", 1, 2, "\"long\"", "b");
        store.apply(&k1, Some(&v1));
        store.apply(&k2, Some(&v2));
        assert!(store.version_written_by("s", 1, "a"));
        assert!(!store.version_written_by("s", 1, "b"));
        assert!(store.schema(2).is_none(), "the loser's schema did not take an id");
        // The loser's tombstone does not remove the winner.
        store.apply(&k2, None);
        assert_eq!(store.live_versions("s"), vec![(1, 1)]);
    }

    #[test]
    fn an_id_belongs_to_the_first_schema_that_claimed_it() {
        let mut store = Schemas::default();
        let (k1, v1) = record("a", 1, 5, "\"int\"", "x");
        let (k2, v2) = record("b", 1, 5, "\"long\"", "y");
        store.apply(&k1, Some(&v1));
        store.apply(&k2, Some(&v2));
        assert!(store.versions("b").is_none());
        assert_eq!(store.schema(5).map(|s| s.schema.as_str()), Some("\"int\""));
        assert_eq!(store.next_id(), 6);
    }

    #[test]
    fn hard_delete_frees_the_schema_but_never_the_id_counter() {
        let mut store = Schemas::default();
        let (k, v) = record("a", 1, 3, "\"int\"", "x");
        store.apply(&k, Some(&v));
        store.apply(&k, None);
        assert!(store.schema(3).is_none());
        assert!(store.versions("a").is_none());
        assert_eq!(store.next_id(), 4);
    }

    #[test]
    fn config_records_set_and_clear_levels() -> anyhow::Result<()> {
        let mut store = Schemas::default();
        let value = serde_json::to_vec(&ConfigValue { compatibility_level: Level::Full })?;
        store.apply(&serde_json::to_vec(&LogKey::config(Some("s")))?, Some(&value));
        assert_eq!(store.effective_level("s"), Level::Full);
        assert_eq!(store.effective_level("t"), Level::Backward);
        store.apply(&serde_json::to_vec(&LogKey::config(Some("s")))?, None);
        assert_eq!(store.subject_level("s"), None);
        Ok(())
    }
}
