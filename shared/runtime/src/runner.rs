//! The one consumer loop every service runs:
//! consume a batch → handle it → produce the outputs → wait until every
//! output is delivered → store the batch's offsets (committed automatically).
//!
//! Guarantee: at least once by default. An offset is stored only after
//! everything its record caused is durable on the broker, so a crash
//! anywhere re-delivers the batch rather than skipping it; handlers make
//! that harmless by being idempotent (the loader and the applier, whose
//! effects are in the warehouse, keep their offsets there). Exactly once
//! for a stage whose only effects are events ([`RunnerConfig::exactly_once`]):
//! a batch's outputs and its offsets are one Kafka transaction (see
//! [`crate::exactly`]). A record the handler cannot use is not an error: it
//! is published to `mend.quarantine` with its original bytes and the
//! reason, with the batch's other outputs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use mend_avro::codec::{Codec, CodecError, schema_id};
use mend_model::Classify as _;
use mend_model::events::{Envelope, Event, IncidentId, Quarantined};
use mend_model::topics;

use crate::collect::{Batch, Collector};
use crate::error::HandleError;
use crate::exactly::Transactions;
use crate::handler::{Disposition, Handler, INCIDENT_HEADER, Inbound, Outbound, QuarantineReason, SOURCE_HEADER};
use crate::kafka;
use crate::status::Ownership;
pub use crate::status::{RunnerContext, RunnerError, RunnerStatus};

pub(crate) mod config;
pub(crate) use config::offset_list;
pub use config::{RunnerConfig, retry_backoff, sleep_unless_cancelled};

/// Runs one consumer loop.
pub struct Runner<H> {
    config: RunnerConfig,
    consumer: Arc<StreamConsumer<RunnerContext>>,
    producer: FutureProducer,
    codec: Arc<Codec>,
    handler: H,
    status: Arc<RunnerStatus>,
    ownership: Arc<Ownership>,
}

impl<H: Handler> Runner<H> {
    /// Creates the consumer and joins the stage's group, which shares the
    /// topics' partitions among every process running the stage (run more
    /// processes to scale it out; cooperative rebalancing moves only what
    /// must move). Outputs go through `producer`
    /// (shared by every runner of a process).
    pub fn new(
        config: RunnerConfig,
        producer: FutureProducer,
        codec: Arc<Codec>,
        handler: H,
    ) -> Result<Self, RunnerError> {
        let status = Arc::new(RunnerStatus {
            group: config.group_id.clone(),
            topics: config.topics.clone(),
            ..RunnerStatus::default()
        });
        let ownership = Arc::new(Ownership::default());
        let context = RunnerContext {
            status: status.clone(),
            at_end: config.new_group_starts_at_end.clone(),
            ownership: ownership.clone(),
        };
        let mut consumer_config = kafka::consumer_config(&config.brokers, &config.group_id);
        consumer_config.set("max.poll.interval.ms", config.max_poll_interval.as_millis().to_string());
        if config.exactly_once {
            // Offsets go in the transactions (and, for batches that write
            // nothing, in commits of the runner's own, in order with them).
            consumer_config.set("enable.auto.commit", "false");
        }
        let consumer: StreamConsumer<RunnerContext> = consumer_config.create_with_context(context)?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self { config, consumer: Arc::new(consumer), producer, codec, handler, status, ownership })
    }

    /// The runner's counters.
    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in
    /// hand, stores its offsets and commits them before returning.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let mut transactions = self
            .config
            .exactly_once
            .then(|| Transactions::new(&self.config, self.consumer.clone(), self.ownership.clone()));
        let result = self.consume(&shutdown, transactions.as_mut()).await;
        if let Some(transactions) = transactions {
            transactions.finish().await;
            return result;
        }
        // Commit what was stored, also after a fatal error: those offsets
        // belong to batches whose outputs were delivered.
        if let Err(error) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            // Nothing stored since the last commit is not a failure.
            if !matches!(error, rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset))
            {
                tracing::warn!(service = %self.config.service, %error, "final offset commit failed; the last batches will be re-delivered");
            }
        }
        result
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        mut transactions: Option<&mut Transactions>,
    ) -> Result<(), RunnerError> {
        // Batches are collected on a task of their own, so the next batch is
        // read (on another core) while this one is handled. They are still
        // handled one at a time, in order, and a batch's offsets are stored
        // only after its outputs are delivered; records collected for a
        // batch that is never handled (shutdown, fatal error) are read again.
        let stop = shutdown.child_token();
        let _stop_collecting = stop.clone().drop_guard();
        let (batches, mut collected) = tokio::sync::mpsc::channel(1);
        let collector = Collector {
            consumer: self.consumer.clone(),
            ownership: self.ownership.clone(),
            max_batch: self.config.max_batch,
            max_bytes: self.config.max_batch_bytes,
            linger: self.config.linger,
            carried: None,
        };
        tokio::spawn(collector.run(batches, stop));
        loop {
            // Offsets of batches that wrote nothing are committed within
            // a second, also when no batch follows them.
            let wait = transactions.as_deref().and_then(Transactions::quiet_due);
            let next = match wait {
                Some(wait) => match tokio::time::timeout(wait, collected.recv()).await {
                    Ok(next) => next,
                    Err(_idle) => {
                        if let Some(transactions) = transactions.as_deref_mut() {
                            transactions.commit_quiet().await;
                        }
                        continue;
                    }
                },
                None => collected.recv().await,
            };
            let Some(batch) = next else { break };
            if shutdown.is_cancelled() {
                return Ok(()); // a batch collected before the request is read again later
            }
            let batch = batch?;
            if !self.process(&batch, shutdown, transactions.as_deref_mut()).await? {
                return Ok(());
            }
            // Freeing a large batch takes milliseconds (two allocations per
            // record, measured 3–6 ms for 50,000): not on the handling path.
            if batch.len() >= 10_000 {
                tokio::task::spawn_blocking(move || drop(batch));
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        Err(RunnerError::Handler(HandleError::Fatal("the consumer stopped delivering records".into())))
    }

    /// Handles, delivers and stores one batch. Returns false when shutdown
    /// interrupted a retry (the batch's offsets are then not stored).
    async fn process(
        &self,
        whole: &Batch,
        shutdown: &CancellationToken,
        transactions: Option<&mut Transactions>,
    ) -> Result<bool, RunnerError> {
        let batch = &whole.records[..];
        // One span per batch, continuing the trace the first record carries
        // (W3C traceparent header): an incident's stages form one trace.
        let span = tracing::info_span!("batch", service = %self.config.service, records = batch.len());
        if let Some(first) = batch.first() {
            crate::telemetry::continue_trace(&span, &first.headers);
        }
        let mut backoff = retry_backoff();
        let dispositions = loop {
            match tracing::Instrument::instrument(self.handler.handle(batch), span.clone()).await {
                Ok(dispositions) if dispositions.len() == batch.len() => break dispositions,
                Ok(dispositions) => {
                    return Err(RunnerError::Handler(HandleError::Fatal(
                        format!("handler returned {} dispositions for {} records", dispositions.len(), batch.len())
                            .into(),
                    )));
                }
                Err(HandleError::Retry(reason)) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(service = %self.config.service, %reason, ?delay, "batch failed; retrying");
                    if !sleep_unless_cancelled(delay, shutdown).await {
                        return Ok(false);
                    }
                }
                Err(fatal) => return Err(RunnerError::Handler(fatal)),
            }
        };

        // Each record's outputs, in the batch's order.
        let mut outputs = Vec::with_capacity(batch.len());
        let mut quarantined = 0;
        for (record, disposition) in batch.iter().zip(dispositions) {
            match disposition {
                Disposition::Emit(records) => outputs.push(records),
                Disposition::Quarantine(reason) => {
                    let Some(output) = self.quarantine_record(record, reason, shutdown).await? else {
                        return Ok(false); // shut down while the registry was away
                    };
                    outputs.push(vec![output]);
                    quarantined += 1;
                }
            }
        }
        let fault = format!("runner.after_deliver.{}", self.config.service);
        let done = match transactions {
            Some(transactions) => transactions.commit(whole, outputs, &fault, shutdown).await?,
            None => {
                let outputs: Vec<Outbound> = outputs.into_iter().flatten().collect();
                let produced = !outputs.is_empty();
                if !self.deliver(outputs, shutdown).await? {
                    return Ok(false);
                }
                if produced {
                    crate::fault::point(&fault);
                }
                self.store_offsets(whole)?;
                true
            }
        };
        if done {
            let mut handled = self.status.handled_to.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for ((topic, partition), next) in whole.next_offsets(&vec![true; batch.len()]) {
                handled.insert((topic.to_string(), partition), next);
            }
            drop(handled);
            self.status.quarantined.fetch_add(quarantined, Ordering::Relaxed);
            self.status.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// The quarantine event of a record; None when shutdown interrupted a
    /// registry outage (the batch is then not stored, so nothing is skipped).
    async fn quarantine_record(
        &self,
        record: &Inbound,
        reason: QuarantineReason,
        shutdown: &CancellationToken,
    ) -> Result<Option<Outbound>, RunnerError> {
        let dataset = reason.dataset.unwrap_or_else(|| record.topic.to_string());
        let writer = record.payload.as_deref().and_then(schema_id);
        let mut event = Quarantined {
            envelope: Envelope::new(
                &self.config.service,
                &dataset,
                IncidentId::for_drift(&dataset, writer.unwrap_or(0)),
            ),
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
            // A record too large to decode is not copied either: the event
            // names where it is, and its source topic keeps it.
            key: record.key.clone().filter(|k| k.len() <= mend_model::MAX_RECORD_BYTES),
            value: record.payload.clone().filter(|p| p.len() <= mend_model::MAX_RECORD_BYTES),
            writer_schema_id: writer.and_then(|id| i32::try_from(id).ok()),
            reason_kind: reason.kind,
            reason: reason.reason,
        };
        event.seal();
        tracing::debug!(
            service = %self.config.service, topic = %record.topic, partition = record.partition,
            offset = record.offset, reason = %event.reason, "record quarantined"
        );
        let Some(payload) = self.encode_with_retry(&event, shutdown).await? else { return Ok(None) };
        // Readable without decoding: lets a replay know what it has found.
        // The record's own headers go along, but not ones that would pass
        // for mend's.
        let mut headers = record.headers.clone();
        headers.retain(|(key, _)| key != crate::telemetry::TRACEPARENT && !key.starts_with("mend-"));
        headers.extend(crate::telemetry::event_headers(&event.envelope, topics::QUARANTINE));
        headers.push((INCIDENT_HEADER.to_owned(), event.envelope.incident_id.0.clone().into_bytes()));
        headers.push((SOURCE_HEADER.to_owned(), format!("{}:{}", record.partition, record.offset).into_bytes()));
        Ok(Some(Outbound { topic: topics::QUARANTINE.to_owned(), key: dataset.into_bytes(), payload, headers }))
    }

    async fn encode_with_retry<E: Event>(
        &self,
        event: &E,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<u8>>, RunnerError> {
        let mut backoff = retry_backoff();
        loop {
            match self.codec.encode_event(event).await {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(CodecError::Unavailable(reason)) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(%reason, ?delay, "registry unavailable; retrying");
                    if !sleep_unless_cancelled(delay, shutdown).await {
                        return Ok(None);
                    }
                }
                Err(invalid) => return Err(RunnerError::Handler(HandleError::fatal("encoding an event", invalid))),
            }
        }
    }

    /// Produces every output and waits for each delivery report; resends the
    /// failed ones with backoff while the failure is temporary. Returns
    /// false when shutdown interrupted it; an error when the broker refused
    /// a record for good (too large, not authorised, …): the batch's offsets
    /// are then not stored and the stage stops, so nothing is skipped.
    async fn deliver(&self, outputs: Vec<Outbound>, shutdown: &CancellationToken) -> Result<bool, RunnerError> {
        let mut pending = outputs;
        let mut backoff = retry_backoff();
        while !pending.is_empty() {
            let sends = pending.iter().map(|out| {
                let headers = out.headers.iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
                    headers.insert(Header { key, value: Some(value) })
                });
                let record = FutureRecord::to(&out.topic).key(&out.key).payload(&out.payload).headers(headers);
                self.producer.send(record, Duration::from_secs(30))
            });
            let results = futures::future::join_all(sends).await;
            let mut failed = Vec::new();
            for (out, result) in pending.into_iter().zip(results) {
                let Err((error, _)) = result else { continue };
                let error = kafka::ProduceError(error);
                if !error.is_retryable() {
                    let context = format!("delivering {} bytes to {}", out.payload.len(), out.topic);
                    return Err(RunnerError::Handler(HandleError::fatal(&context, error)));
                }
                tracing::warn!(topic = %out.topic, %error, "delivery failed; resending");
                failed.push(out);
            }
            pending = failed;
            if !pending.is_empty() {
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                if !sleep_unless_cancelled(delay, shutdown).await {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Stores the offsets after `batch` of the partitions this process
    /// still holds (auto-committed within a second).
    fn store_offsets(&self, batch: &Batch) -> Result<(), RunnerError> {
        let keep = batch.held(&self.ownership.hold());
        let list = offset_list(&batch.next_offsets(&keep))?;
        if list.count() == 0 {
            return Ok(());
        }
        match self.consumer.store_offsets(&list) {
            Ok(()) => Ok(()),
            // The partition was revoked while the batch was in flight: its new
            // owner re-reads from the last commit, which is at-least-once.
            Err(error) => {
                tracing::info!(%error, "offsets not stored (partition revoked); the batch will be re-delivered");
                Ok(())
            }
        }
    }
}
