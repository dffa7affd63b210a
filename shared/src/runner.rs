//! The one consumer loop every service runs:
//! consume a batch → handle it → produce the outputs → wait until every
//! output is delivered → store the batch's offsets (committed automatically).
//!
//! Guarantee: at least once. An offset is stored only after everything its
//! record caused is durable on the broker, so a crash anywhere re-delivers the
//! batch rather than skipping it; handlers make that harmless by being
//! idempotent. A record the handler cannot use is not an error: it is
//! published to `mend.quarantine` with its original bytes and the reason, and
//! only then is its offset stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, schema_id};
use crate::error::HandleError;
use crate::events::{Envelope, Event, IncidentId, Quarantined};
use crate::kafka;
use crate::topics;

/// Header of a quarantine record naming its incident.
pub const INCIDENT_HEADER: &str = "mend-incident";
/// Header of a quarantine record naming its source `partition:offset`.
pub const SOURCE_HEADER: &str = "mend-source";

/// A consumed record, detached from the consumer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Shared by the records of a batch from one topic.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Inbound {
    /// Copies what the handler needs out of the consumer's buffer (once);
    /// `topic` is the name of the previous record's topic, reused when the
    /// same.
    fn from_message<M: Message>(message: &M, topic: &mut Option<Arc<str>>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
            })
            .unwrap_or_default();
        let topic = match topic {
            Some(same) if **same == *message.topic() => same.clone(),
            _ => topic.insert(Arc::from(message.topic())).clone(),
        };
        Self {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

impl Inbound {
    /// Bytes of its key and value.
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// A record to produce.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What became of one inbound record.
#[derive(Debug, Clone)]
pub enum Disposition {
    /// Handled; these records are its outputs (possibly none).
    Emit(Vec<Outbound>),
    /// Bad input: publish it to `mend.quarantine` with this reason.
    Quarantine(QuarantineReason),
}

/// Why a record goes to quarantine, and for which dataset.
#[derive(Debug, Clone)]
pub struct QuarantineReason {
    /// The dataset the record belongs to, when known (it keys the event).
    pub dataset: Option<String>,
    /// A short machine-readable class: `undecodable`, `schema_mismatch`, …
    pub kind: String,
    /// The explanation a person reads.
    pub reason: String,
}

/// A service's logic. The runner owns the loop; handlers only decide.
pub trait Handler: Send + Sync {
    /// Handles a batch; returns one disposition per record, in order. May be
    /// called again with the same batch after a retryable error or a crash,
    /// so its effects must be idempotent.
    fn handle(
        &self,
        batch: &[Inbound],
    ) -> impl std::future::Future<Output = Result<Vec<Disposition>, HandleError>> + Send;
}

/// Decodes one of mend's own events from a consumed record. `Ok(Err(_))` is
/// bad input, already turned into its quarantine disposition; `Err` is a
/// registry outage (retry).
pub async fn decode_event<E: Event>(codec: &Codec, record: &Inbound) -> Result<Result<E, Disposition>, HandleError> {
    match codec.decode_event(record.payload.as_deref().unwrap_or_default()).await {
        Ok(event) => Ok(Ok(event)),
        Err(crate::codec::CodecError::Invalid(reason)) => Ok(Err(Disposition::Quarantine(QuarantineReason {
            dataset: None,
            kind: "undecodable".into(),
            reason: format!("not a valid {} event: {reason}", E::TOPIC),
        }))),
        Err(unavailable) => Err(unavailable.into()),
    }
}

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
    /// How partitions are shared out.
    pub mode: ConsumerMode,
    /// Longest a fetch waits for records (ms); see `MEND_FETCH_WAIT_MS`.
    pub fetch_wait_ms: u32,
    /// Topics a group without committed offsets starts reading at their end
    /// rather than their beginning (assign mode): for a stage that only
    /// needs what arrives after it first started.
    pub new_group_starts_at_end: Vec<String>,
}

/// How a runner gets its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumerMode {
    /// Joins its consumer group, which shares the partitions among every
    /// process running the stage (scale a stage by running more of it).
    Group,
    /// Reads every partition of its topics itself, from its consumer group's
    /// committed offsets, without joining the group: one process per stage.
    /// The default, because Tansu 0.6's group coordinator can leave a group
    /// without a consumer after a crash (see the README); offsets, delivery
    /// and exactly-once effects are the same in both modes.
    #[default]
    Assign,
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
            mode: ConsumerMode::default(),
            fetch_wait_ms: kafka::DEFAULT_FETCH_WAIT_MS,
            new_group_starts_at_end: Vec::new(),
        }
    }
}

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
    /// Set once the consumer has partitions assigned or has fetched a record.
    pub consuming: AtomicBool,
    pub records: std::sync::atomic::AtomicU64,
    pub quarantined: std::sync::atomic::AtomicU64,
}

/// Marks the runner as consuming once the group has answered with an
/// assignment (possibly empty: more members than partitions is a valid,
/// idle scale-out).
pub struct RunnerContext {
    status: Arc<RunnerStatus>,
}

impl rdkafka::ClientContext for RunnerContext {}

impl rdkafka::consumer::ConsumerContext for RunnerContext {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Assign(_) = rebalance {
            self.status.consuming.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs one consumer loop.
pub struct Runner<H> {
    config: RunnerConfig,
    consumer: Arc<StreamConsumer<RunnerContext>>,
    producer: FutureProducer,
    codec: Arc<Codec>,
    handler: H,
    status: Arc<RunnerStatus>,
}

impl<H: Handler> Runner<H> {
    /// Creates the clients and subscribes. Outputs go through `producer`
    /// (shared by every runner of a process).
    pub fn new(
        config: RunnerConfig,
        producer: FutureProducer,
        codec: Arc<Codec>,
        handler: H,
    ) -> Result<Self, RunnerError> {
        let status = Arc::<RunnerStatus>::default();
        let consumer: StreamConsumer<RunnerContext> =
            kafka::consumer_config(&config.brokers, &config.group_id, config.fetch_wait_ms)
                .create_with_context(RunnerContext { status: status.clone() })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        // In assign mode the partitions are assigned when `run` starts
        // (metadata requests, retried while the broker is slow).
        if config.mode == ConsumerMode::Group {
            consumer.subscribe(&topics)?;
        }
        Ok(Self { config, consumer: Arc::new(consumer), producer, codec, handler, status })
    }

    /// The runner's counters.
    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    /// Consumes until `shutdown` is cancelled, then finishes the batch in
    /// hand, stores its offsets and commits them before returning.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let result = self.consume(&shutdown).await;
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

    /// Assign mode: takes every partition of the topics, from the group's
    /// committed offsets (the earliest when nothing is committed yet).
    /// Retries while the broker does not answer; false when shut down first.
    async fn assign_all(&self, shutdown: &CancellationToken) -> Result<bool, RunnerError> {
        let mut backoff = retry_backoff();
        loop {
            let (consumer, topics) = (self.consumer.clone(), self.config.topics.clone());
            let at_end = self.config.new_group_starts_at_end.clone();
            let listed =
                tokio::task::spawn_blocking(move || list_partitions(consumer.as_ref(), &topics, &at_end)).await;
            match listed {
                Ok(Ok(list)) => {
                    self.consumer.assign(&list)?;
                    self.status.consuming.store(true, Ordering::Relaxed);
                    return Ok(true);
                }
                Ok(Err(error)) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(service = %self.config.service, %error, ?delay, "cannot list the partitions to consume; retrying");
                    if !sleep_unless_cancelled(delay, shutdown).await {
                        return Ok(false);
                    }
                }
                Err(join) => {
                    return Err(RunnerError::Handler(HandleError::Fatal(format!("listing partitions: {join}"))));
                }
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), RunnerError> {
        if self.config.mode == ConsumerMode::Assign && !self.assign_all(shutdown).await? {
            return Ok(());
        }
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
            max_batch: self.config.max_batch,
            max_bytes: self.config.max_batch_bytes,
            linger: self.config.linger,
            carried: None,
        };
        tokio::spawn(collector.run(batches, stop));
        while let Some(batch) = collected.recv().await {
            if shutdown.is_cancelled() {
                return Ok(()); // a batch collected before the request is read again later
            }
            let batch = batch?;
            if !self.process(&batch, shutdown).await? {
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
    async fn process(&self, batch: &[Inbound], shutdown: &CancellationToken) -> Result<bool, RunnerError> {
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
                    return Err(RunnerError::Handler(HandleError::Fatal(format!(
                        "handler returned {} dispositions for {} records",
                        dispositions.len(),
                        batch.len()
                    ))));
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

        let mut outputs = Vec::new();
        for (record, disposition) in batch.iter().zip(dispositions) {
            match disposition {
                Disposition::Emit(records) => outputs.extend(records),
                Disposition::Quarantine(reason) => {
                    let Some(output) = self.quarantine_record(record, reason, shutdown).await? else {
                        return Ok(false); // shut down while the registry was away
                    };
                    outputs.push(output);
                    self.status.quarantined.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let produced = !outputs.is_empty();
        if !self.deliver(outputs, shutdown).await {
            return Ok(false);
        }
        if produced {
            crate::fault::point(&format!("runner.after_deliver.{}", self.config.service));
        }
        self.store_offsets(batch)?;
        self.status.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(true)
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
            key: record.key.clone(),
            value: record.payload.clone(),
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
        let mut headers = record.headers.clone();
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
                Err(crate::codec::CodecError::Unavailable(reason)) => {
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
    /// failed ones with backoff. Returns false when shutdown interrupted it.
    async fn deliver(&self, outputs: Vec<Outbound>, shutdown: &CancellationToken) -> bool {
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
            let failed: Vec<Outbound> = pending
                .into_iter()
                .zip(results)
                .filter_map(|(out, result)| match result {
                    Ok(_) => None,
                    Err((error, _)) => {
                        tracing::warn!(topic = %out.topic, %error, "delivery failed; resending");
                        Some(out)
                    }
                })
                .collect();
            pending = failed;
            if !pending.is_empty() {
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                if !sleep_unless_cancelled(delay, shutdown).await {
                    return false;
                }
            }
        }
        true
    }

    fn store_offsets(&self, batch: &[Inbound]) -> Result<(), RunnerError> {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        // Records come in runs of one partition: one map update per run.
        for run in batch.chunk_by(|a, b| a.partition == b.partition && Arc::ptr_eq(&a.topic, &b.topic)) {
            let last = run.iter().map(|r| r.offset).max().unwrap_or_default();
            let entry = next.entry((&run[0].topic, run[0].partition)).or_insert(0);
            *entry = (*entry).max(last + 1);
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
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

/// Reads records into batches for a runner.
struct Collector {
    consumer: Arc<StreamConsumer<RunnerContext>>,
    max_batch: usize,
    max_bytes: usize,
    linger: Duration,
    /// A record taken from the consumer that did not fit the last batch.
    carried: Option<Inbound>,
}

impl Collector {
    /// Sends batches until `stop` is cancelled or the runner stops taking them.
    async fn run(
        mut self,
        batches: tokio::sync::mpsc::Sender<Result<Vec<Inbound>, RunnerError>>,
        stop: CancellationToken,
    ) {
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                batch = self.collect() => batch,
            };
            if batch.as_ref().is_ok_and(Vec::is_empty) {
                return; // the consumer's stream ended (it does not while the consumer lives)
            }
            let failed = batch.is_err();
            if batches.send(batch).await.is_err() || failed {
                return;
            }
        }
    }

    /// Waits for a record, then takes up to `max_batch` records holding at
    /// most `max_bytes` (a larger record is a batch of its own), lingering at
    /// most `linger` for more once the first has arrived.
    async fn collect(&mut self) -> Result<Vec<Inbound>, RunnerError> {
        use futures::StreamExt as _;
        // One stream per batch: each `recv()` would register and unregister
        // a waker with the consumer, twice a lock per record.
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        let mut topic = None;
        let first = match self.carried.take() {
            Some(record) => record,
            None => match stream.next().await {
                Some(message) => Inbound::from_message(&message?, &mut topic),
                None => return Ok(Vec::new()),
            },
        };
        let mut bytes = first.size();
        let mut batch = Vec::with_capacity(self.max_batch.min(4096));
        batch.push(first);
        let deadline = tokio::time::Instant::now() + self.linger;
        while batch.len() < self.max_batch {
            // Take what is already fetched without arming a timer per
            // record; wait (up to the linger) only when the queue is empty.
            let message = match futures::FutureExt::now_or_never(stream.next()) {
                Some(message) => message,
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(message) => message,
                    Err(_elapsed) => break,
                },
            };
            let Some(message) = message else { break };
            let record = Inbound::from_message(&message?, &mut topic);
            if bytes + record.size() > self.max_bytes {
                self.carried = Some(record); // it starts the next batch
                break;
            }
            bytes += record.size();
            batch.push(record);
        }
        Ok(batch)
    }
}

/// Every partition of `topics`, from the group's committed offset; for the
/// topics in `at_end`, from their end when the group has committed nothing
/// there (blocking: metadata and offset requests).
fn list_partitions<C: Consumer<RunnerContext>>(
    consumer: &C,
    topics: &[String],
    at_end: &[String],
) -> Result<TopicPartitionList, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(10);
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())) {
            list.add_partition(topic, partition);
        }
    }
    // Explicit offsets: the committed one, else the start (or the end). A
    // start below the log's retention is reset to its earliest record
    // (`auto.offset.reset`). Measured on Tansu: the first record of a new
    // group arrives after 68 ms this way, after 550 ms with `Offset::Stored`
    // (librdkafka's own look-up and reset).
    let committed = consumer.committed_offsets(list, timeout)?;
    let mut list = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            _ if at_end.iter().any(|t| t == element.topic()) => Offset::End,
            _ => Offset::Offset(0),
        };
        list.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    Ok(list)
}

fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn sleep_unless_cancelled(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// The shared producer of a process.
pub fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    kafka::producer_config(brokers).create()
}
