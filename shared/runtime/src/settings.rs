//! Where the broker and the registry are: flags and environment variables
//! (the external contract in docs/operating.md), flattened into every command.

/// Connection settings of a process.
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "MEND_KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,

    /// URL of a Confluent-compatible schema registry.
    #[arg(long, env = "MEND_REGISTRY_URL", default_value = "http://127.0.0.1:18081")]
    pub registry_url: String,

    /// Prefix of mend's consumer groups and transactional ids. Deployments
    /// sharing a Kafka cluster need different prefixes, or they split each
    /// other's partitions.
    #[arg(long, env = "MEND_GROUP_PREFIX", default_value = "mend")]
    pub group_prefix: String,
}

impl Connections {
    /// Settings for `brokers` and `registry_url`, everything else default.
    pub fn new(brokers: &str, registry_url: &str) -> Self {
        Self { brokers: brokers.to_owned(), registry_url: registry_url.to_owned(), group_prefix: "mend".into() }
    }
}
