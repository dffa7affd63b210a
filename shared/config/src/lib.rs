//! `mend.toml`: the datasets mend loads and heals, their policy (keyed by
//! change kind), API tokens and roles, Slack approvers; and the secret type
//! that never prints itself. Connection settings (brokers, registry, consumer
//! mode) are flags and environment variables, in `mend-runtime`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mend_model::Secret;
use mend_model::{ChangeKind, Policy};
use serde::Deserialize;

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
    /// The datasets mend loads and heals (those of a `topic_pattern` once
    /// [`FileConfig::expand`] has found their topics).
    #[serde(default, rename = "dataset")]
    pub datasets: Vec<Dataset>,
    /// `[[dataset]]` tables with a `topic_pattern`: templates of a dataset
    /// per matching topic.
    #[serde(skip)]
    pub patterns: Vec<Dataset>,
    /// The control API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Slack approvals.
    #[serde(default)]
    pub slack: SlackConfig,
    /// The supervisor's budgets per run.
    #[serde(default)]
    pub supervisor: SupervisorConfig,
}

/// `[supervisor]` in mend.toml: what one supervisor run may spend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// Tool calls before the run gives up.
    pub max_tool_calls: usize,
    /// `max_tokens` of each model turn (doubled once when an answer is cut).
    pub max_tokens: u64,
    /// How long a run may take in all (`2m`, `90s`).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self { max_tool_calls: 20, max_tokens: 4096, deadline: Duration::from_secs(180) }
    }
}

/// `[slack]` in mend.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Slack user id → approver name (`approvers = { U012AB3CD = "alice" }`):
    /// only these users' button presses count, recorded under these names.
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
}

/// `[api]` in mend.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `[[api.token]]`: who may call the API. The file holds each token's
    /// SHA-256, never the token.
    #[serde(default)]
    pub token: Vec<ApiToken>,
}

/// One API caller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who this is (recorded as the approver of their decisions).
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
}

/// What an API caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read incidents, proposals and evidence.
    Viewer,
    /// Also approve and reject proposals.
    Approver,
    /// Also operate mend (replays).
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?} (viewer, approver or admin)")),
        }
    }
}

/// Who is calling the API (or an MCP tool over HTTP), once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: recorded as the author of their decisions.
    pub name: String,
    pub role: Role,
}

impl ApiToken {
    /// Parses `MEND_API_TOKENS`: comma-separated `name:role:token`.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let mut parts = entry.splitn(3, ':');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(role), Some(token)) if !name.is_empty() && !token.is_empty() => {
                        Ok(Self { name: name.to_owned(), role: role.parse()?, sha256: sha256_hex(token) })
                    }
                    _ => Err("MEND_API_TOKENS entries are name:role:token, comma-separated".to_owned()),
                }
            })
            .collect()
    }
}

/// SHA-256 of `text`, hex.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// One dataset: a source topic loaded into a table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Dataset id; the key of all its events.
    #[serde(default)]
    pub name: String,
    /// Source topic (Avro in the Confluent wire format).
    #[serde(default)]
    pub topic: String,
    /// Instead of `name`, `topic` and `table`: a regular expression matched
    /// against whole topic names (`shop\\..*`), one dataset per matching
    /// topic, named after it, its table the topic with every character
    /// other than a letter, digit or `_` made `_` (as Kafka Connect's
    /// `topics.regex`). The other settings apply to each. Topics created
    /// later are picked up while running. mend's own topics never match.
    pub topic_pattern: Option<String>,
    /// Destination table.
    #[serde(default)]
    pub table: String,
    /// Key columns: later records replace earlier ones with the same key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Registry subject (default `<topic>-value`).
    pub subject: Option<String>,
    /// Warehouse URL (default `MEND_WAREHOUSE_URL`).
    pub warehouse: Option<String>,
    /// Warehouse URL the applier uses (its DDL, contract moves and replays),
    /// so it can run as a database role of its own (default: `warehouse`,
    /// or `MEND_APPLIER_WAREHOUSE_URL` for datasets on the default warehouse).
    pub applier_warehouse: Option<String>,
    /// What policy decides per change kind (`field_added = "auto"`, …);
    /// kinds not named here get mend's safe defaults.
    #[serde(default)]
    pub policy: BTreeMap<ChangeKind, Policy>,
    /// Where nested records go: one JSON column per record field (`json`,
    /// the default) or one `parent__child` column per nested field (`flatten`).
    #[serde(default)]
    pub nested: Nested,
    /// The dbt model documenting the table, patched when columns change.
    pub dbt: Option<Dbt>,
    /// The GitHub repository holding the dbt project: plans with a dbt
    /// patch open a pull request there, and merging it approves the plan.
    pub github: Option<GitHub>,
    /// How long a proposal may wait for a decision before it is escalated
    /// (notified again; it stays open): `30m`, `2h`, `1d`.
    #[serde(default, with = "humantime_serde")]
    pub approval_timeout: Option<Duration>,
    /// Other names OpenLineage events use for this dataset's table or topic
    /// (`analytics.public.orders`, a dbt model's name): a FAIL event naming
    /// one opens an incident here.
    #[serde(default)]
    pub openlineage: Vec<String>,
    /// Whether the supervisor (Claude) drafts fixes for this dataset's
    /// incidents the rules block (default: yes, when a key is configured).
    pub supervisor: Option<bool>,
    /// What DDL may cost the table without a person, and how long it may
    /// wait for its lock.
    #[serde(default)]
    pub ddl: Ddl,
    /// The compiled manifest of the dbt project downstream of the table
    /// (`target/manifest.json` after `dbt compile`): every plan shows its
    /// blast radius there, model by model.
    pub dbt_manifest: Option<PathBuf>,
    /// What a plan that breaks something in that project needs, whatever
    /// its changes' policy (default `approve`; `auto` only reports it).
    pub downstream_breaking: Option<Policy>,
}

/// A dataset's limits on the DDL mend runs on its table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ddl {
    /// How long a statement may wait for its lock on the table before it
    /// gives up and is tried again (PostgreSQL's `lock_timeout`): every
    /// query queued behind a waiting statement waits at most this long.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// How many times a plan is tried when its lock is not free, with
    /// backoff and jitter between attempts, before it fails (nothing of it
    /// applied; its records stay quarantined).
    pub lock_attempts: u32,
    /// `statement_timeout` of a statement that changes the catalog only.
    #[serde(with = "humantime_serde")]
    pub metadata_timeout: Duration,
    /// `statement_timeout` of a statement that scans or rewrites the table.
    #[serde(with = "humantime_serde")]
    pub rewrite_timeout: Duration,
    /// A rewrite of a table larger than this (MiB, indexes and TOAST
    /// included) needs a person, whatever the change's policy.
    pub rewrite_gate_mib: u64,
    /// A scan of a table with more rows than this (or never analysed and
    /// larger than `rewrite_gate_mib`) needs a person, whatever the
    /// change's policy.
    pub scan_gate_rows: u64,
    /// A widening that would rewrite a table above `rewrite_gate_mib`
    /// (PostgreSQL) is planned as expand/contract instead: a wider column
    /// beside the old one, both written meanwhile, a backfill in batches,
    /// and a swap by renames under a short lock. False: the plan keeps
    /// the ALTER (and the gate asks a person).
    pub expand_contract: bool,
}

impl Default for Ddl {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            lock_attempts: 8,
            metadata_timeout: Duration::from_secs(10),
            rewrite_timeout: Duration::from_secs(3600),
            rewrite_gate_mib: 64,
            scan_gate_rows: 1_000_000,
            expand_contract: true,
        }
    }
}

/// How nested records become columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nested {
    /// One JSON column holds the whole record (JSONB on PostgreSQL).
    #[default]
    Json,
    /// One `parent__child` column per nested field.
    Flatten,
}

/// A dataset's dbt model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dbt {
    /// The dbt project's directory (default: the working directory).
    #[serde(default = "current_dir")]
    pub project: PathBuf,
    /// The properties file describing the model (`models/schema.yml`),
    /// relative to the project: patches name it so, for `git apply`.
    pub schema: PathBuf,
    /// The model's name in that file (default: the dataset's table).
    pub model: Option<String>,
}

/// A dataset's GitHub repository.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHub {
    /// `owner/name`.
    pub repo: String,
    /// The branch pull requests target.
    #[serde(default = "main_branch")]
    pub base: String,
    /// Where the dbt project is inside the repository (default: its root);
    /// the patched file is `<directory>/<dbt.schema>`.
    #[serde(default)]
    pub directory: String,
}

fn main_branch() -> String {
    "main".into()
}

fn current_dir() -> PathBuf {
    PathBuf::from(".")
}

impl Dataset {
    /// The registry subject of the dataset's records.
    pub fn subject(&self) -> String {
        self.subject.clone().unwrap_or_else(|| mend_model::topics::value_subject(&self.topic))
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
        let mut config = config;
        config.validate(path)?;
        let (patterns, datasets) = config.datasets.into_iter().partition(|d| d.topic_pattern.is_some());
        config.patterns = patterns;
        config.datasets = datasets;
        Ok(config)
    }

    /// Adds a dataset for every topic of `topics` a `topic_pattern` matches
    /// and no dataset reads yet (a dataset declared by name wins; the first
    /// matching pattern otherwise). Returns the names of the added datasets
    /// and the topics that matched but cannot name a table (too long).
    pub fn expand(&mut self, topics: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut added, mut refused) = (Vec::new(), Vec::new());
        let mut topics: Vec<&String> =
            topics.iter().filter(|t| !t.starts_with("mend.") && !t.starts_with('_')).collect();
        topics.sort();
        for pattern in &self.patterns {
            let Some(regex) = pattern.topic_pattern.as_deref().and_then(|p| whole(p).ok()) else { continue };
            for topic in topics.iter().filter(|t| regex.is_match(t)) {
                if self.datasets.iter().any(|d| d.topic == **topic || d.name == **topic) {
                    continue;
                }
                let table = table_of(topic);
                if table.len() > 63 {
                    refused.push((*topic).clone());
                    continue;
                }
                self.datasets.push(Dataset {
                    name: (*topic).clone(),
                    topic: (*topic).clone(),
                    table,
                    topic_pattern: None,
                    ..pattern.clone()
                });
                added.push((*topic).clone());
            }
        }
        (added, refused)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        for token in &self.api.token {
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "[[api.token]] {:?}: sha256 must be the token's SHA-256 in hex (64 characters), e.g. \
                     `printf %s TOKEN | sha256sum`",
                    token.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for dataset in &self.datasets {
            if let Some(pattern) = &dataset.topic_pattern {
                if !dataset.name.is_empty() || !dataset.topic.is_empty() || !dataset.table.is_empty() {
                    return Err(invalid(format!(
                        "the [[dataset]] with topic_pattern {pattern:?} takes its name, topic and table from each \
                         matching topic: remove name, topic and table"
                    )));
                }
                if let Err(error) = whole(pattern) {
                    return Err(invalid(format!("topic_pattern {pattern:?} is not a regular expression: {error}")));
                }
                continue;
            }
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

/// `pattern` matched against whole names.
fn whole(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// The table of a topic: lower case, every character other than a letter,
/// digit or `_` made `_`, and `t_` before a leading digit.
pub fn table_of(topic: &str) -> String {
    let table: String = topic
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if table.starts_with(|c: char| c.is_ascii_digit()) { format!("t_{table}") } else { table }
}

#[cfg(test)]
mod tests;
