//! Configuration: connection settings from flags and environment variables
//! (the external contract in DESIGN.md), datasets and policy from `mend.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the broker and the registry are. Flattened into every command.
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "MEND_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,

    /// URL of a Confluent-compatible schema registry.
    #[arg(long, env = "MEND_REGISTRY_URL", default_value = "http://127.0.0.1:18081")]
    pub registry_url: String,

    /// Prefix of mend's consumer groups. Deployments sharing a Kafka cluster
    /// need different prefixes, or they split each other's partitions.
    #[arg(long, env = "MEND_GROUP_PREFIX", default_value = "mend")]
    pub group_prefix: String,
}

/// Why the configuration cannot be used. Always fatal: fix and restart.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The contents of `mend.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The datasets mend loads and heals.
    #[serde(default, rename = "dataset")]
    pub datasets: Vec<Dataset>,
}

/// One dataset: a source topic loaded into a table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Dataset id; the key of all its events.
    pub name: String,
    /// Source topic (Avro in the Confluent wire format).
    pub topic: String,
    /// Destination table.
    pub table: String,
    /// Key columns: later records replace earlier ones with the same key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Registry subject (default `<topic>-value`).
    pub subject: Option<String>,
    /// Warehouse URL (default `MEND_WAREHOUSE_URL`).
    pub warehouse: Option<String>,
}

impl Dataset {
    /// The registry subject of the dataset's records.
    pub fn subject(&self) -> String {
        self.subject.clone().unwrap_or_else(|| crate::topics::value_subject(&self.topic))
    }
}

impl FileConfig {
    /// Reads `path`. A missing file is an empty configuration only when
    /// `required` is false (the default path may be absent).
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Self::default()),
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        Self::parse(path, &text)
    }

    /// Parses and validates the text of a configuration file.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        let mut names = std::collections::HashSet::new();
        for dataset in &self.datasets {
            if dataset.name.is_empty() || dataset.topic.is_empty() || dataset.table.is_empty() {
                return Err(invalid("every [[dataset]] needs a non-empty name, topic and table".into()));
            }
            if !names.insert(dataset.name.as_str()) {
                return Err(invalid(format!("dataset {:?} is declared twice", dataset.name)));
            }
        }
        Ok(())
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.datasets.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_datasets_with_defaults() -> anyhow::Result<()> {
        let config = FileConfig::parse(
            Path::new("mend.toml"),
            r#"
            [[dataset]]
            name = "orders"
            topic = "shop.orders"
            table = "orders"
            key = ["id"]
            "#,
        )?;
        let orders = config.dataset("orders").ok_or_else(|| anyhow::anyhow!("missing"))?;
        assert_eq!(orders.key, vec!["id".to_owned()]);
        assert_eq!(orders.subject(), "shop.orders-value");
        Ok(())
    }

    #[test]
    fn rejects_unknown_fields_and_duplicates() {
        let unknown =
            FileConfig::parse(Path::new("m.toml"), "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\ntabel='x'\n");
        assert!(matches!(unknown, Err(ConfigError::Parse { .. })));
        let twice = FileConfig::parse(
            Path::new("m.toml"),
            "[[dataset]]\nname='a'\ntopic='t'\ntable='t'\n[[dataset]]\nname='a'\ntopic='u'\ntable='u'\n",
        );
        assert!(matches!(twice, Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn a_missing_optional_file_is_empty() -> anyhow::Result<()> {
        let config = FileConfig::load(Path::new("/nonexistent/mend.toml"), false)?;
        assert!(config.datasets.is_empty());
        assert!(FileConfig::load(Path::new("/nonexistent/mend.toml"), true).is_err());
        Ok(())
    }
}
