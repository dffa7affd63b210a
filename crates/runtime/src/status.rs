//! What a runner reports: why it stopped ([`RunnerError`]) and its counters
//! ([`RunnerStatus`]), which the consumer's context marks as consuming.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::HandleError;

/// Why a runner stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("handler: {0}")]
    Handler(HandleError),
}

/// Counters a runner keeps; read by health and metrics endpoints.
#[derive(Debug, Default)]
pub struct RunnerStatus {
    /// Its consumer group and input topics (empty for a stage that keeps
    /// its position elsewhere, such as the sealer).
    pub group: String,
    pub topics: Vec<String>,
    /// Set once the consumer has partitions assigned or has fetched a record.
    pub consuming: AtomicBool,
    pub records: std::sync::atomic::AtomicU64,
    pub quarantined: std::sync::atomic::AtomicU64,
}

/// Marks the runner as consuming once the group has answered with an
/// assignment (possibly empty: more members than partitions is a valid,
/// idle scale-out).
pub struct RunnerContext {
    pub(crate) status: Arc<RunnerStatus>,
}

impl rdkafka::ClientContext for RunnerContext {}

impl rdkafka::consumer::ConsumerContext for RunnerContext {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(_) = rebalance {
            self.status.consuming.store(true, Ordering::Relaxed);
        }
    }
}
