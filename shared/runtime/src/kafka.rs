//! Kafka clients configured the way mend relies on them, and topic creation.
//! Nothing here depends on a particular broker: only the Kafka protocol.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// Base configuration shared by every client.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("socket.keepalive.enable", "true").set("log_level", "4");
    config
}

/// Base configuration of every consumer: [`client_config`] with a short
/// pause when the local queue is full (librdkafka's default, 1 s, left a
/// loader that drains 100,000 queued records in a third of a second idle
/// for the rest of it: measured 0.4 s gaps in the pipeline bench), and
/// fetches that take any record mend writes. The fetch wait is librdkafka's
/// (500 ms): Kafka answers a fetch as soon as records arrive.
pub fn reader_config(brokers: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("fetch.queue.backoff.ms", "50")
        .set("max.partition.fetch.bytes", MAX_FETCH_BYTES.to_string())
        .set("fetch.max.bytes", MAX_FETCH_BYTES.to_string())
        .set("receive.message.max.bytes", (MAX_FETCH_BYTES + (1 << 20)).to_string())
        // Events written in a transaction are read once it commits, and
        // never when it aborts (see `crate::runner`).
        .set("isolation.level", "read_committed");
    config
}

/// The most a mend reader fetches from a partition at once (Kafka returns
/// a partition's first record even when it is larger).
pub const MAX_FETCH_BYTES: usize = 64 << 20;

/// An acks=all, idempotent producer: a delivered record is durable, and a
/// retried send is neither duplicated nor reordered.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        // A quarantine event carries its record, up to MAX_RECORD_BYTES.
        .set("message.max.bytes", MAX_EVENT_BYTES.to_string());
    config
}

/// The largest record mend writes: a quarantine event with the largest
/// record it copies, and its envelope. Its topics are created to take it.
pub const MAX_EVENT_BYTES: usize = mend_model::MAX_RECORD_BYTES * 2 + (1 << 20);

/// A group consumer that commits automatically only the offsets the
/// application stored: an offset is stored after the record's outputs are
/// delivered, so a crash re-delivers instead of skipping.
pub fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut config = reader_config(brokers);
    config
        .set("group.id", group_id)
        // A member joining or leaving moves only the partitions that must
        // move; the others keep being read through the rebalance.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        // Also the rebalance timeout: how long a rebalance waits for a member
        // that died without leaving (a crash) before going on without it.
        // A batch retrying longer than this rejoins when it is done.
        .set("max.poll.interval.ms", "30000")
        .set("enable.partition.eof", "false")
        // Notice topics created after start-up (datasets, event topics).
        .set("topic.metadata.refresh.interval.ms", "5000");
    config
}

/// A failed produce, classified: what the broker refused for good (a
/// record too large, no authorisation, an invalid topic) is not retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProduceError(pub rdkafka::error::KafkaError);

impl mend_model::Classify for ProduceError {
    fn next(&self) -> mend_model::Next {
        use RDKafkaErrorCode as C;
        let permanent = matches!(
            self.0.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::MessageBatchTooLarge
                    | C::InvalidMessage
                    | C::InvalidMessageSize
                    | C::InvalidRecord
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::InvalidRequiredAcks
                    | C::BadMessage
            )
        );
        if permanent { mend_model::Next::Fatal } else { mend_model::Next::Retry }
    }
}

/// A topic to create at start-up.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Extra topic configs such as `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    pub fn new(name: &str, partitions: i32) -> Self {
        Self { name: name.to_owned(), partitions, configs: Vec::new() }
    }

    pub fn compacted(mut self) -> Self {
        self.configs.push(("cleanup.policy".into(), "compact".into()));
        self
    }

    /// Never deletes a record (no time or size retention): mend's audit
    /// topics are its audit log.
    pub fn kept_forever(mut self) -> Self {
        self.configs.push(("retention.ms".into(), "-1".into()));
        self.configs.push(("retention.bytes".into(), "-1".into()));
        self
    }

    /// Takes records up to [`MAX_EVENT_BYTES`] (Kafka's default is 1 MiB).
    pub fn large_records(mut self) -> Self {
        self.configs.push(("max.message.bytes".into(), MAX_EVENT_BYTES.to_string()));
        self
    }
}

/// mend's event topics, `partitions` each, and the digests' topic (one
/// partition: each chain's digests in one order): the audit log, so kept
/// forever, and taking mend's largest events. Whoever creates them first
/// (`mend up`, `mend run`, a test) creates them this way: a broker that
/// creates a topic on first produce would give it its default retention.
pub fn audit_topics(partitions: i32) -> Vec<TopicSpec> {
    let mut specs: Vec<TopicSpec> = mend_model::topics::EVENT_TOPICS
        .iter()
        .map(|t| TopicSpec::new(t, partitions).kept_forever().large_records())
        .collect();
    specs.push(TopicSpec::new(mend_model::topics::DIGESTS, 1).kept_forever());
    specs
}

/// What in `topic`'s configuration would delete records, said for a
/// person (empty when it keeps them forever). Err when the configuration
/// cannot be read.
pub async fn deletions(brokers: &str, topic: &str) -> Result<Vec<String>, TopicError> {
    use rdkafka::admin::ResourceSpecifier;
    let failed = |e: rdkafka::error::KafkaError| TopicError { topic: topic.to_owned(), reason: e.to_string() };
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create().map_err(failed)?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options).await.map_err(failed)?;
    let mut said = Vec::new();
    for result in results {
        let resource = result.map_err(|code| TopicError { topic: topic.to_owned(), reason: code.to_string() })?;
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone()).unwrap_or_default();
        let policy = value("cleanup.policy");
        if policy.split(',').any(|p| p.trim() == "delete") || policy.is_empty() {
            for (name, unit) in [("retention.ms", "ms"), ("retention.bytes", "bytes")] {
                let setting = value(name);
                if setting.parse::<i64>().is_ok_and(|v| v >= 0) {
                    said.push(format!("{name}={setting}: records older or beyond {setting} {unit} are deleted"));
                }
            }
        }
    }
    Ok(said)
}

/// Why topics could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create topic {topic}: {reason}")]
pub struct TopicError {
    pub topic: String,
    pub reason: String,
}

/// The names of every topic on the cluster (blocking: a metadata request).
pub fn list_topics(brokers: &str) -> Result<Vec<String>, TopicError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let failed = |e: rdkafka::error::KafkaError| TopicError { topic: "*".into(), reason: e.to_string() };
    let consumer: BaseConsumer = client_config(brokers).create().map_err(failed)?;
    let metadata = consumer.fetch_metadata(None, std::time::Duration::from_secs(10)).map_err(failed)?;
    Ok(metadata.topics().iter().map(|t| t.name().to_owned()).collect())
}

/// Creates the topics that do not exist yet, with the cluster's default
/// replication factor (`default.replication.factor`; three on the local
/// three-node cluster). Brokers may not auto-create topics, so every
/// service creates what it needs; an existing topic is fine.
pub async fn ensure_topics(brokers: &str, specs: &[TopicSpec]) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().map_err(|e| TopicError { topic: "*".into(), reason: e.to_string() })?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.configs
                .iter()
                .fold(NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(-1)), |topic, (k, v)| {
                    topic.set(k, v)
                })
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| TopicError { topic: "*".into(), reason: e.to_string() })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError { topic, reason: code.to_string() }),
        }
    }
    Ok(())
}

/// The scan consumer's context: a partition's end is what a scan waits
/// for, not an error to log (librdkafka reports it as one, to every
/// command's stderr).
struct ScanContext;

impl rdkafka::ClientContext for ScanContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if matches!(error, rdkafka::error::KafkaError::PartitionEOF(_)) {
            tracing::trace!(%reason, "a partition's end");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ScanContext {}

type ScanConsumer = rdkafka::consumer::StreamConsumer<ScanContext>;

/// A consumer for reading a topic by assignment: a group id of its own (no
/// group is joined, nothing is committed), shared with blocking calls.
/// With `eof`, it says when it reaches a partition's end: the last record
/// of a partition written in transactions is a marker no reader is given,
/// so a reader cannot wait for the record before the high watermark.
fn scan_consumer(brokers: &str, eof: bool) -> Result<std::sync::Arc<ScanConsumer>, rdkafka::error::KafkaError> {
    let consumer: ScanConsumer = reader_config(brokers)
        // Short: a scan that reaches a partition's end returns at once.
        .set("fetch.wait.max.ms", "25")
        .set("group.id", format!("mend-scan-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", eof.to_string())
        .create_with_context(ScanContext)?;
    Ok(std::sync::Arc::new(consumer))
}

/// Every partition of `topic` with its low and high watermarks.
pub async fn watermarks(brokers: &str, topic: &str) -> Result<Vec<(i32, i64, i64)>, TopicError> {
    let consumer =
        scan_consumer(brokers, false).map_err(|e| TopicError { topic: topic.to_owned(), reason: e.to_string() })?;
    partition_ends(&consumer, topic).await
}

/// Where one partition's records begin and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionEnds {
    pub topic: &'static str,
    pub partition: i32,
    /// The first offset held.
    pub low: i64,
    /// The next offset to be written.
    pub high: i64,
}

impl PartitionEnds {
    /// Whether it holds records.
    pub fn holds_records(&self) -> bool {
        self.high > self.low
    }
}

/// Every partition of `topics` (mend's event topics, say) with where its
/// records begin and end, now: the one loop over the topics' ends that the
/// sealer, the audit log's cut and the read model's warm-up share.
pub async fn topic_ends(brokers: &str, topics: &[&'static str]) -> Result<Vec<PartitionEnds>, TopicError> {
    let mut ends = Vec::new();
    for &topic in topics {
        for (partition, low, high) in watermarks(brokers, topic).await? {
            ends.push(PartitionEnds { topic, partition, low, high });
        }
    }
    Ok(ends)
}

/// (partition, low, high) of every partition of `topic` (blocking calls, on
/// a blocking thread).
async fn partition_ends(
    consumer: &std::sync::Arc<ScanConsumer>,
    topic: &str,
) -> Result<Vec<(i32, i64, i64)>, TopicError> {
    use rdkafka::consumer::Consumer;
    let failed = |e: rdkafka::error::KafkaError| TopicError { topic: topic.to_owned(), reason: e.to_string() };
    let (name, probe) = (topic.to_owned(), consumer.clone());
    tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64, i64)>, rdkafka::error::KafkaError> {
        let metadata = probe.fetch_metadata(Some(&name), Duration::from_secs(10))?;
        let partitions: Vec<i32> =
            metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
        partitions
            .into_iter()
            .map(|p| probe.fetch_watermarks(&name, p, Duration::from_secs(10)).map(|(low, high)| (p, low, high)))
            .collect()
    })
    .await
    .map_err(|e| TopicError { topic: topic.to_owned(), reason: e.to_string() })?
    .map_err(failed)
}

/// How far `group` is behind on each partition of `topics`: (topic,
/// partition, records between its committed offset and the end). A
/// partition it has committed nothing on counts from the beginning.
pub async fn lag(brokers: &str, group: &str, topics: &[String]) -> Result<Vec<(String, i32, i64)>, TopicError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let failed = |e: rdkafka::error::KafkaError| TopicError { topic: topics.join(","), reason: e.to_string() };
    // Reads the group's committed offsets without joining it.
    let consumer: BaseConsumer =
        client_config(brokers).set("group.id", group).set("enable.auto.commit", "false").create().map_err(failed)?;
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || -> Result<Vec<(String, i32, i64)>, rdkafka::error::KafkaError> {
        let timeout = Duration::from_secs(5);
        let mut list = rdkafka::TopicPartitionList::new();
        let mut ends = std::collections::HashMap::new();
        for topic in &topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                let (low, high) = consumer.fetch_watermarks(topic, partition.id(), timeout)?;
                ends.insert((topic.clone(), partition.id()), (low, high));
                list.add_partition(topic, partition.id());
            }
        }
        let committed = consumer.committed_offsets(list, timeout)?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| {
                let (low, high) = ends.get(&(e.topic().to_owned(), e.partition()))?;
                let at = match e.offset() {
                    rdkafka::Offset::Offset(o) => o,
                    _ => *low,
                };
                Some((e.topic().to_owned(), e.partition(), (high - at).max(0)))
            })
            .collect())
    })
    .await
    .map_err(|e| TopicError { topic: "*".into(), reason: e.to_string() })?
    .map_err(|e| TopicError { topic: "*".into(), reason: e.to_string() })
}

/// Reads every record of `topic` written before the call (all partitions,
/// from the beginning to the current end; of transactions, those committed
/// by then), without a consumer group. For read models and replays; not for
/// hot paths.
pub async fn read_to_end(brokers: &str, topic: &str) -> Result<Vec<rdkafka::message::OwnedMessage>, TopicError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let failed = |e: rdkafka::error::KafkaError| TopicError { topic: topic.to_owned(), reason: e.to_string() };
    let consumer = scan_consumer(brokers, true).map_err(failed)?;
    let ends = partition_ends(&consumer, topic).await?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for (partition, low, high) in ends {
        if high > low {
            assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(low)).map_err(failed)?;
            remaining.insert(partition, high);
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment).map_err(failed)?;
    while !remaining.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| TopicError { topic: topic.to_owned(), reason: "timed out reading to the end".into() })?;
        let message = match message {
            Ok(message) => message,
            // At the end: what remains before the high watermark are markers
            // (or a transaction still open, not committed before the call).
            Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                remaining.remove(&partition);
                continue;
            }
            Err(error) => return Err(failed(error)),
        };
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(end) = remaining.get(&partition).copied() {
            if offset < end {
                records.push(message.detach());
            }
            if offset + 1 >= end {
                remaining.remove(&partition);
            }
        }
    }
    Ok(records)
}

/// Reads up to `max` records of one partition from `from`, stopping at the
/// partition's end (high watermark at the call) or after `timeout`. For
/// evidence samples; not for hot paths. No consumer group.
pub async fn read_range(
    brokers: &str,
    topic: &str,
    partition: i32,
    from: i64,
    max: usize,
    timeout: Duration,
) -> Result<Vec<rdkafka::message::OwnedMessage>, TopicError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let failed = |e: rdkafka::error::KafkaError| TopicError { topic: topic.to_owned(), reason: e.to_string() };
    let consumer = scan_consumer(brokers, true).map_err(failed)?;
    let (name, probe) = (topic.to_owned(), consumer.clone());
    let (_, high) =
        tokio::task::spawn_blocking(move || probe.fetch_watermarks(&name, partition, Duration::from_secs(10)))
            .await
            .map_err(|e| TopicError { topic: topic.to_owned(), reason: e.to_string() })?
            .map_err(failed)?;
    let end = high.min(from.saturating_add(i64::try_from(max).unwrap_or(i64::MAX)));
    let mut records = Vec::new();
    if from >= end {
        return Ok(records);
    }
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, rdkafka::Offset::Offset(from)).map_err(failed)?;
    consumer.assign(&assignment).map_err(failed)?;
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(message) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        let message = match message {
            Ok(message) => message,
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
            Err(error) => return Err(failed(error)),
        };
        let offset = message.offset();
        if offset < end {
            records.push(message.detach());
        }
        if offset + 1 >= end {
            break;
        }
    }
    Ok(records)
}

/// The shared producer of a process.
pub fn producer(brokers: &str) -> Result<rdkafka::producer::FutureProducer, rdkafka::error::KafkaError> {
    producer_config(brokers).create()
}
