//! The log as it is read: each record of the event topics and the digests
//! with its position, from the live topics (as of a cut of their ends) or
//! from an export.

use mend_avro::Codec;
use mend_avro::codec::CodecError;
use mend_model::audit::AuditEvent;
use mend_model::digest::AuditDigest;
use mend_model::topics;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::keys;

/// Where an event is in the log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// What is at a position of the log.
#[derive(Debug, Clone)]
pub enum Record {
    Event(Box<AuditEvent>),
    /// An event left out of an export (another dataset's, or outside its
    /// window) but inside a sealed range: its hash is kept so the range
    /// can still be checked.
    Redacted {
        event_id: String,
        hash: String,
    },
    Digest(Box<AuditDigest>),
    /// A record that could not be read as its topic's event, and why; the
    /// hash of its bytes stands in for its event hash.
    Unreadable {
        reason: String,
        hash: String,
    },
}

/// One record of the log with its position.
#[derive(Debug, Clone)]
pub struct Entry {
    pub position: LogPosition,
    pub record: Record,
}

impl Entry {
    /// Its event, when it is a readable event.
    pub fn event(&self) -> Option<&AuditEvent> {
        match &self.record {
            Record::Event(event) => Some(event),
            _ => None,
        }
    }

    /// The hash a digest seals for it (None for a digest).
    pub fn sealed_hash(&self) -> Option<&str> {
        match &self.record {
            Record::Event(event) => Some(&event.envelope().hash),
            Record::Redacted { hash, .. } | Record::Unreadable { hash, .. } => Some(hash),
            Record::Digest(_) => None,
        }
    }
}

/// `work` over `items` in one chunk per core (in order), for the parts of
/// reading and verifying a log that need no order: parsing lines,
/// recomputing hashes.
pub(crate) fn on_every_core<T: Sync, R: Send>(items: &[T], work: impl Fn(&[T]) -> Vec<R> + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cores == 1 || items.len() < 10_000 {
        return work(items);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items.chunks(items.len().div_ceil(cores)).map(|c| scope.spawn(move || work(c))).collect();
        // A panicking part is a bug of this crate's own: pass it on.
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// The stand-in hash of a record that does not decode.
pub fn raw_hash(payload: &[u8]) -> String {
    format!("raw:{}", hex::encode(Sha256::digest(payload)))
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading {0}")]
    Topic(#[from] mend_runtime::kafka::TopicError),
    #[error(transparent)]
    Registry(#[from] CodecError),
    #[error("line {line} of the export: {reason}")]
    Export { line: usize, reason: String },
    #[error("{0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("{0}")]
    Other(String),
}

/// Reads one record of `topic` (an event topic or the digests).
pub async fn read_record(codec: &Codec, topic: &str, payload: &[u8]) -> Result<Record, CodecError> {
    let decoded = if topic == topics::DIGESTS {
        codec.decode_value::<AuditDigest>(topic, payload).await.map(|d| Record::Digest(Box::new(d)))
    } else {
        codec.decode_audit(topic, payload).await.map(|e| Record::Event(Box::new(e)))
    };
    match decoded {
        Ok(record) => Ok(record),
        Err(CodecError::Invalid(reason)) => Ok(Record::Unreadable {
            reason: format!("does not decode with its registered schema: {reason}"),
            hash: raw_hash(payload),
        }),
        Err(unavailable) => Err(unavailable),
    }
}

/// Every record of the live audit topics and the digests, in log order
/// (the events by topic, then the digests). The digests are read first: a
/// digest is written after the events it seals, so every event a digest
/// read seals is among the events read after it (read the other way, a
/// digest written in between seals events the read missed).
pub async fn read_topics(brokers: &str, codec: &Codec) -> Result<Vec<Entry>, AuditError> {
    let digests = read_digests(brokers, codec).await?;
    // The event topics side by side: each read ends with a fetch that
    // finds nothing more.
    let events =
        futures::future::try_join_all(topics::EVENT_TOPICS.iter().map(|topic| read_topic(brokers, codec, topic)))
            .await?;
    let mut entries: Vec<Entry> = events.into_iter().flatten().collect();
    entries.extend(digests);
    Ok(entries)
}

/// The records of the digests topic, in log order.
pub async fn read_digests(brokers: &str, codec: &Codec) -> Result<Vec<Entry>, AuditError> {
    read_topic(brokers, codec, topics::DIGESTS).await
}

async fn read_topic(brokers: &str, codec: &Codec, topic: &str) -> Result<Vec<Entry>, AuditError> {
    use rdkafka::message::Message;
    let mut messages = mend_runtime::kafka::read_to_end(brokers, topic).await?;
    messages.sort_by_key(|m| (m.partition(), m.offset()));
    let mut entries = Vec::with_capacity(messages.len());
    for message in messages {
        let position =
            LogPosition { topic: topic.to_owned(), partition: message.partition(), offset: message.offset() };
        let record = read_record(codec, topic, message.payload().unwrap_or_default()).await?;
        entries.push(Entry { position, record });
    }
    Ok(entries)
}
