//! How a runner consumes ([`RunnerConfig`]), and the pacing every loop
//! shares: the retry delays and a sleep that a shutdown cuts short.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::status::RunnerError;

/// How a runner consumes.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The producing service's name, in quarantine events and logs.
    pub service: String,
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// Largest batch handed to the handler, in records.
    pub max_batch: usize,
    /// Most bytes of keys and values in a batch (a larger record is a batch
    /// of its own), so large records do not make a batch of `max_batch`
    /// records huge: up to three batches are in memory (one handled, one
    /// ready, one being collected).
    pub max_batch_bytes: usize,
    /// How long to wait for more records once a batch has its first one.
    pub linger: Duration,
    /// Topics a group without committed offsets starts reading at their end
    /// rather than their beginning: for a stage that only needs what
    /// arrives after it first started.
    pub new_group_starts_at_end: Vec<String>,
    /// Longest a batch may be handled before the consumer group takes its
    /// partitions away: longer than the slowest handling (the supervisor's
    /// model calls).
    pub max_poll_interval: Duration,
    /// Writes each batch's outputs and input offsets in one Kafka
    /// transaction, for a stage whose only effects are its events: a
    /// crash or a retry then writes none of them twice.
    pub exactly_once: bool,
}

impl RunnerConfig {
    /// Records per batch unless a service asks for more.
    pub const DEFAULT_BATCH: usize = 500;
    /// Bytes of keys and values per batch, at most (see `max_batch_bytes`).
    pub const DEFAULT_BATCH_BYTES: usize = 64 << 20;

    pub fn new(service: &str, brokers: &str, group_id: &str, topics: Vec<String>) -> Self {
        Self {
            service: service.to_owned(),
            brokers: brokers.to_owned(),
            group_id: group_id.to_owned(),
            topics,
            max_batch: Self::DEFAULT_BATCH,
            max_batch_bytes: Self::DEFAULT_BATCH_BYTES,
            linger: Duration::from_millis(50),
            new_group_starts_at_end: Vec::new(),
            max_poll_interval: Duration::from_secs(30),
            exactly_once: false,
        }
    }
}

/// `offsets` as a list for the consumer.
pub(crate) fn offset_list(offsets: &HashMap<(Arc<str>, i32), i64>) -> Result<TopicPartitionList, RunnerError> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(list)
}

/// The delays between retries of a stage: exponential from 100 ms to
/// 10 s, with jitter, without end.
pub fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps `delay`; false (at once) when `shutdown` comes first.
pub async fn sleep_unless_cancelled(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}
