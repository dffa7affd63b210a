//! Where the broker and the registry are, and how stages consume: flags and
//! environment variables (the external contract in the README), flattened
//! into every command.

use crate::compat::{BrokerProfile, ConsumerMode};

/// Connection settings of a process.
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

    /// Which broker this is: `kafka` (Kafka's defaults: consumer groups, a
    /// 500 ms fetch wait) or `tansu` (the local Tansu 0.6 broker: assign
    /// mode and a 25 ms fetch wait; see the README's Known limitations).
    #[arg(long, env = "MEND_BROKER", value_enum, default_value_t = BrokerProfile::Tansu)]
    pub broker: BrokerProfile,

    /// How stages get their partitions (default: the broker's): `group`
    /// (consumer-group rebalancing: run more processes of a stage to share
    /// its partitions) or `assign` (each process reads every partition of
    /// its topics from its group's committed offsets; one process per stage).
    #[arg(long, env = "MEND_CONSUMER_MODE", value_enum)]
    pub consumer_mode: Option<ConsumerMode>,

    /// Longest a stage's fetch waits for records, in milliseconds (default:
    /// the broker's). Lower is faster healing on Tansu, higher is less
    /// broker work while idle.
    #[arg(long, env = "MEND_FETCH_WAIT_MS")]
    pub fetch_wait_ms: Option<u32>,

    /// Which of a stage's processes this is, as k/N (assign mode): run a
    /// stage N times with 1/N … N/N to share its partitions; one that stops
    /// has its partitions taken over by the others within about 7 s, and
    /// given back when it returns. Default 1/1: one process reads them all.
    #[arg(long, env = "MEND_INSTANCE", default_value = "1/1")]
    pub instance: crate::members::Instance,
}

impl Connections {
    /// Settings for `brokers` and `registry_url`, everything else default.
    pub fn new(brokers: &str, registry_url: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            registry_url: registry_url.to_owned(),
            group_prefix: "mend".into(),
            broker: BrokerProfile::default(),
            consumer_mode: None,
            fetch_wait_ms: None,
            instance: crate::members::Instance::default(),
        }
    }

    /// How stages get their partitions.
    pub fn consumer_mode(&self) -> ConsumerMode {
        self.consumer_mode.unwrap_or_else(|| self.broker.consumer_mode())
    }

    /// Longest a stage's fetch waits, in milliseconds.
    pub fn fetch_wait_ms(&self) -> u32 {
        self.fetch_wait_ms.unwrap_or_else(|| self.broker.fetch_wait_ms())
    }
}
