//! Exactly once for a stage whose only effects are events: each batch's
//! outputs and the group's offsets after it are one Kafka transaction
//! (`send_offsets_to_transaction` with the consumer's group metadata, so a
//! member the group has moved on from cannot commit). Readers of the event
//! topics read committed records only: a crash before the commit leaves an
//! open transaction that the broker aborts after [`TRANSACTION_TIMEOUT`],
//! and the batch is read again, by this process or the partition's next
//! owner; a retry aborts and writes again. Either way each output is
//! visible once.
//!
//! A batch that writes nothing commits its offsets with the next
//! transaction, or on its own within [`QUIET_COMMIT`] (in order with the
//! transactions: the runner's loop does both). Records of a partition
//! revoked since they were read are not committed, nor are their outputs
//! written: the partition's new owner reads them again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::collect::Batch;
use crate::handler::Outbound;
use crate::kafka;
use crate::runner::config::{RunnerConfig, offset_list, retry_backoff, sleep_unless_cancelled};
use crate::status::{Ownership, RunnerContext, RunnerError};

/// How long an open transaction of a process that died stays open before
/// the broker aborts it; readers of the partitions it wrote wait that long
/// (plus the broker's abort check, 10 s by default).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long offsets of batches that wrote nothing wait for a transaction.
pub const QUIET_COMMIT: Duration = Duration::from_secs(1);

/// How long a transactional call may take before it is tried again.
const CALL_TIMEOUT: Duration = TRANSACTION_TIMEOUT;

/// Offsets by (topic, partition).
type Offsets = HashMap<(Arc<str>, i32), i64>;

/// A runner's transactions.
pub(crate) struct Transactions {
    brokers: String,
    group: String,
    service: String,
    consumer: Arc<StreamConsumer<RunnerContext>>,
    ownership: Arc<Ownership>,
    /// Created (and its transactions initialised) on first use, and again
    /// after a fatal error.
    producer: Option<FutureProducer>,
    /// Offsets after batches that wrote nothing, not committed yet.
    quiet: Offsets,
    last_commit: Instant,
}

/// Why a transaction did not commit.
enum Failed {
    /// A partition of the batch was revoked meanwhile: aborted, written
    /// again without what is no longer this process's.
    Revoked,
    /// Aborted; tried again after a pause.
    Aborted(KafkaError),
    /// The producer cannot go on: a new one (a new transactional id).
    Fatal(KafkaError),
    /// No producer can be made with this configuration: the stage stops.
    Config(String),
}

impl Transactions {
    pub(crate) fn new(
        config: &RunnerConfig,
        consumer: Arc<StreamConsumer<RunnerContext>>,
        ownership: Arc<Ownership>,
    ) -> Self {
        Self {
            brokers: config.brokers.clone(),
            group: config.group_id.clone(),
            service: config.service.clone(),
            consumer,
            ownership,
            producer: None,
            quiet: Offsets::new(),
            last_commit: Instant::now(),
        }
    }

    /// Writes `outputs` (one list per record of `batch`) and the offsets
    /// after `batch` in one transaction. False when shutdown interrupted
    /// it (nothing of the batch is then committed).
    pub(crate) async fn commit(
        &mut self,
        batch: &Batch,
        outputs: Vec<Vec<Outbound>>,
        fault: &str,
        shutdown: &CancellationToken,
    ) -> Result<bool, RunnerError> {
        let mut backoff = retry_backoff();
        loop {
            let keep = batch.held(&self.ownership.hold());
            for (partition, offset) in batch.next_offsets(&keep) {
                self.quiet.insert(partition, offset);
            }
            let writes: Vec<&Outbound> = outputs.iter().zip(&keep).filter(|(_, k)| **k).flat_map(|(o, _)| o).collect();
            if writes.is_empty() {
                if self.last_commit.elapsed() >= QUIET_COMMIT {
                    self.commit_quiet().await;
                }
                return Ok(true);
            }
            let failed = match self.transaction(batch, &keep, &writes, fault).await {
                Ok(()) => return Ok(true),
                Err(failed) => failed,
            };
            match failed {
                Failed::Revoked => {
                    tracing::info!(service = %self.service, "a partition was revoked during the transaction; writing again without it");
                    continue;
                }
                Failed::Aborted(error) => {
                    tracing::warn!(service = %self.service, %error, "transaction aborted; writing it again");
                }
                Failed::Fatal(error) => {
                    tracing::warn!(service = %self.service, %error, "transactional producer failed; starting a new one");
                    self.producer = None;
                }
                Failed::Config(reason) => {
                    return Err(RunnerError::Handler(crate::error::HandleError::Fatal(
                        format!("cannot create a transactional producer: {reason}").into(),
                    )));
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            if !sleep_unless_cancelled(delay, shutdown).await {
                return Ok(false);
            }
        }
    }

    /// One try: begin, write, check the partitions are still held, send
    /// the offsets, commit; aborted on any failure.
    async fn transaction(
        &mut self,
        batch: &Batch,
        keep: &[bool],
        writes: &[&Outbound],
        fault: &str,
    ) -> Result<(), Failed> {
        let producer = self.producer().await?;
        blocking(&producer, |p| p.begin_transaction()).await.map_err(|e| self.failed(e))?;
        let sends = writes.iter().map(|out| {
            let headers = out
                .headers
                .iter()
                .fold(OwnedHeaders::new(), |headers, (key, value)| headers.insert(Header { key, value: Some(value) }));
            producer
                .send(FutureRecord::to(&out.topic).key(&out.key).payload(&out.payload).headers(headers), CALL_TIMEOUT)
        });
        for result in futures::future::join_all(sends).await {
            if let Err((error, _)) = result {
                return Err(self.abort(&producer, Failed::Aborted(error)).await);
            }
        }
        crate::fault::point(fault);
        let (consumer, ownership, quiet) = (self.consumer.clone(), self.ownership.clone(), self.quiet.clone());
        let (kept, committer) = (batch.kept_since(keep), producer.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            // Held from the check to the commit: no rebalance in between.
            let held = ownership.hold();
            if !kept.iter().all(|(partition, stamp)| held.get(partition).is_some_and(|since| since <= stamp)) {
                return Err(None);
            }
            let offsets = offset_list(&quiet).map_err(|_| None)?;
            let metadata = consumer.group_metadata().ok_or(None)?;
            committer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT).map_err(Some)?;
            commit_retrying(&committer).map_err(Some)
        })
        .await
        .unwrap_or(Err(None));
        match outcome {
            Ok(()) => {
                self.quiet.clear();
                self.last_commit = Instant::now();
                Ok(())
            }
            Err(None) => Err(self.abort(&producer, Failed::Revoked).await),
            Err(Some(error)) => {
                let failed = self.failed(error);
                Err(self.abort(&producer, failed).await)
            }
        }
    }

    /// Aborts the transaction in progress; a producer that cannot is
    /// replaced.
    async fn abort(&mut self, producer: &FutureProducer, failed: Failed) -> Failed {
        if matches!(failed, Failed::Fatal(_) | Failed::Config(_)) {
            return failed;
        }
        match blocking(producer, |p| p.abort_transaction(CALL_TIMEOUT)).await {
            Ok(()) => failed,
            Err(error) => Failed::Fatal(error),
        }
    }

    fn failed(&self, error: KafkaError) -> Failed {
        match &error {
            KafkaError::Transaction(e) if e.is_fatal() => Failed::Fatal(error),
            KafkaError::Transaction(e) if e.txn_requires_abort() => Failed::Aborted(error),
            _ => Failed::Fatal(error),
        }
    }

    /// The transactional producer, created and initialised when needed.
    async fn producer(&mut self) -> Result<FutureProducer, Failed> {
        if let Some(producer) = &self.producer {
            return Ok(producer.clone());
        }
        // A new id per producer: the group's generation, not the id, fences
        // a member that lost its partitions (KIP-447).
        let producer: FutureProducer = kafka::producer_config(&self.brokers)
            .set("transactional.id", format!("{}-{}", self.group, uuid::Uuid::now_v7()))
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT.as_millis().to_string())
            // A record not delivered within its transaction's time fails
            // the transaction (librdkafka requires it).
            .set("message.timeout.ms", TRANSACTION_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| Failed::Config(e.to_string()))?;
        blocking(&producer, |p| p.init_transactions(CALL_TIMEOUT)).await.map_err(Failed::Fatal)?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }

    /// How long until offsets of batches that wrote nothing are due to be
    /// committed (None: there are none).
    pub(crate) fn quiet_due(&self) -> Option<Duration> {
        (!self.quiet.is_empty()).then(|| QUIET_COMMIT.saturating_sub(self.last_commit.elapsed()))
    }

    /// Commits the offsets of batches that wrote nothing, for partitions
    /// still held; on failure they wait for the next commit.
    pub(crate) async fn commit_quiet(&mut self) {
        if self.quiet.is_empty() {
            return;
        }
        let (consumer, ownership, quiet) = (self.consumer.clone(), self.ownership.clone(), self.quiet.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let held = ownership.hold();
            let mut still: Offsets = quiet;
            still.retain(|(topic, partition), _| held.contains_key(&(topic.to_string(), *partition)));
            if still.is_empty() {
                return Ok(());
            }
            consumer
                .commit(&offset_list(&still).map_err(|e| e.to_string())?, CommitMode::Sync)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match outcome {
            Ok(()) => {
                self.quiet.clear();
                self.last_commit = Instant::now();
            }
            Err(error) => {
                tracing::info!(service = %self.service, %error, "offsets not committed yet; with the next batch")
            }
        }
    }

    /// Commits what batches that wrote nothing left, at shutdown.
    pub(crate) async fn finish(mut self) {
        self.commit_quiet().await;
        if let Some(producer) = self.producer.take() {
            let _ = blocking(&producer, |p| p.flush(Duration::from_secs(5))).await;
        }
    }
}

/// Commits the transaction, again while the failure is retriable (the
/// commit may have reached the broker: only a commit may follow it).
fn commit_retrying(producer: &FutureProducer) -> Result<(), KafkaError> {
    let mut tries = 0;
    loop {
        match producer.commit_transaction(CALL_TIMEOUT) {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

/// Runs a blocking transactional call off the async threads.
async fn blocking<T: Send + 'static>(
    producer: &FutureProducer,
    call: impl FnOnce(&FutureProducer) -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || call(&producer)).await.unwrap_or(Err(KafkaError::Canceled))
}
