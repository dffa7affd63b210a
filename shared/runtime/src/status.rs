//! What a runner reports: why it stopped ([`RunnerError`]) and its counters
//! ([`RunnerStatus`]), which the consumer's context marks as consuming,
//! where a partition the group has never read starts, and which
//! partitions this process holds since when ([`Ownership`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

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
    /// Partitions this process holds now (the group shares them out).
    pub partitions: std::sync::atomic::AtomicUsize,
    pub records: std::sync::atomic::AtomicU64,
    /// Per (topic, partition), the offset after what this runner has
    /// handled: past the transaction markers that follow it, so equal to
    /// the high watermark once it has read everything.
    pub handled_to: Mutex<HashMap<(String, i32), i64>>,
    pub quarantined: std::sync::atomic::AtomicU64,
}

/// Marks the runner as consuming once the group has answered with an
/// assignment (possibly empty: more members than partitions is a valid,
/// idle scale-out), and starts the partitions of `at_end` topics that the
/// group has never committed at their end.
pub struct RunnerContext {
    pub(crate) status: Arc<RunnerStatus>,
    pub(crate) at_end: Vec<String>,
    pub(crate) ownership: Arc<Ownership>,
}

/// The partitions this process holds, each since a tick of a clock that
/// moves at every assignment and revocation. A record is stamped with the
/// clock when it is taken from the consumer: it is still this process's to
/// commit while its partition is held since that tick or earlier (a
/// partition revoked and assigned again is read again from the group's
/// offset, so what was taken before belongs to no one).
#[derive(Debug, Default)]
pub(crate) struct Ownership {
    clock: AtomicU64,
    /// Also the lock a commit holds from its last check to its end: a
    /// rebalance waits for it, so no partition changes hands in between.
    held: Mutex<HashMap<(String, i32), u64>>,
}

impl Ownership {
    /// The clock now, to stamp a record with.
    pub(crate) fn now(&self) -> u64 {
        self.clock.load(Ordering::Acquire)
    }

    /// The partitions held; a rebalance waits while the guard lives.
    pub(crate) fn hold(&self) -> MutexGuard<'_, HashMap<(String, i32), u64>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::AcqRel) + 1
    }
}

impl RunnerStatus {
    /// Where the runner stands on `topic`'s `partition` (see `handled_to`).
    pub fn handled_to(&self, topic: &str, partition: i32) -> Option<i64> {
        self.handled_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(topic.to_owned(), partition))
            .copied()
    }
}

impl rdkafka::ClientContext for RunnerContext {}

impl ConsumerContext for RunnerContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let count = tpl.count();
        // Waits for a commit in progress: it checked what it commits
        // against the partitions held.
        let mut held = self.ownership.hold();
        let tick = self.ownership.tick();
        let done = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for element in tpl.elements() {
                    held.insert((element.topic().to_owned(), element.partition()), tick);
                }
                self.start_at_end(consumer, tpl);
                self.status.consuming.store(true, Ordering::Relaxed);
                self.status.partitions.fetch_add(count, Ordering::Relaxed);
                if cooperative { consumer.incremental_assign(tpl) } else { consumer.assign(tpl) }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for element in tpl.elements() {
                    held.remove(&(element.topic().to_owned(), element.partition()));
                }
                if cooperative {
                    let _ = self
                        .status
                        .partitions
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| Some(held.saturating_sub(count)));
                    consumer.incremental_unassign(tpl)
                } else {
                    held.clear();
                    self.status.partitions.store(0, Ordering::Relaxed);
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(error = ?other, group = %self.status.group, "rebalance failed; the group retries");
                held.clear();
                self.status.partitions.store(0, Ordering::Relaxed);
                consumer.unassign()
            }
        };
        match done {
            Ok(()) => tracing::info!(
                group = %self.status.group, holds = self.status.partitions.load(Ordering::Relaxed),
                "partitions {}", if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS { "assigned" } else { "revoked" }
            ),
            Err(error) => tracing::warn!(%error, group = %self.status.group, "cannot apply the group's assignment"),
        }
    }
}

impl RunnerContext {
    /// Partitions of `at_end` topics without a committed offset start at
    /// their end; the others where the group left off (or the beginning).
    fn start_at_end(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let mut ask = TopicPartitionList::new();
        for element in tpl.elements().iter().filter(|e| self.at_end.iter().any(|t| t == e.topic())) {
            ask.add_partition(element.topic(), element.partition());
        }
        if ask.count() == 0 {
            return;
        }
        match consumer.committed_offsets(ask, Duration::from_secs(10)) {
            Ok(committed) => {
                for element in committed.elements() {
                    if !matches!(element.offset(), Offset::Offset(_)) {
                        let _ = tpl.set_partition_offset(element.topic(), element.partition(), Offset::End);
                    }
                }
            }
            // From the beginning then: more to read, nothing skipped.
            Err(error) => tracing::warn!(%error, "cannot read committed offsets; starting where the group does"),
        }
    }
}
