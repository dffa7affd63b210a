//! The log as it is read: each record of the event topics and the digests
//! with its position, from the live topics (as of a cut of their ends) or
//! from an export.

use std::collections::HashMap;

use mend_avro::Codec;
use mend_avro::codec::CodecError;
use mend_model::audit::AuditEvent;
use mend_model::digest::AuditDigest;
use mend_model::topics;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{keys, verify};

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

/// Where each event partition that holds records ended at one moment:
/// its next offset.
pub type Cut = HashMap<(String, i32), i64>;

/// The end of every event partition that holds records, now.
pub async fn cut(brokers: &str) -> Result<Cut, AuditError> {
    let ends = mend_runtime::kafka::topic_ends(brokers, &topics::EVENT_TOPICS).await?;
    Ok(ends.into_iter().filter(|e| e.holds_records()).map(|e| ((e.topic.to_owned(), e.partition), e.high)).collect())
}

/// The digests of `chain` among `entries`.
pub(crate) fn digests_of<'e>(entries: &'e [Entry], chain: &str) -> Vec<&'e AuditDigest> {
    entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Digest(d) if d.chain == chain => Some(&**d),
            _ => None,
        })
        .collect()
}

/// How many partitions of `cut` hold events before it that no digest of
/// `chain` among `digests` seals yet (0: the sealer has sealed the cut).
pub fn unsealed_partitions(digests: &[Entry], chain: &str, cut: &Cut) -> usize {
    let chain_digests = digests_of(digests, chain);
    let sealed = verify::SealedIndex::new(&chain_digests);
    cut.iter().filter(|((topic, partition), end)| sealed.last(topic, *partition).is_none_or(|l| l < **end - 1)).count()
}

/// `entries` (read after `cut` was taken) as of the cut, for `chain`: the
/// digests, the events written before the cut, and the later ones a digest
/// already seals. Later events no digest seals are left for a later export.
pub fn as_of(mut entries: Vec<Entry>, chain: &str, cut: &Cut) -> Vec<Entry> {
    let digests = digests_of(&entries, chain);
    let sealed = verify::SealedIndex::new(&digests);
    let keep: Vec<bool> = entries
        .iter()
        .map(|entry| {
            let p = &entry.position;
            matches!(entry.record, Record::Digest(_))
                || sealed.covering(&p.topic, p.partition, p.offset).is_some()
                || cut.get(&(p.topic.clone(), p.partition)).is_some_and(|end| p.offset < *end)
        })
        .collect();
    let mut keep = keep.into_iter();
    entries.retain(|_| keep.next().unwrap_or(true));
    entries
}

/// What waiting for the sealer came to, for a reader to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    /// Events of this many partitions wait for the sealer.
    Waiting { unsealed: usize },
    /// The wait is over and events of this many partitions are not sealed:
    /// they are left as they are (verify reports them).
    GaveUp { unsealed: usize },
}

/// The live log as of the call, once every event written before it is
/// sealed by `chain`'s sealer (or `wait` has passed: then as it is, after
/// telling `progress`). Events written since and not sealed yet are left
/// out: an export holds what its digests seal. While it waits it reads
/// only the digests, twice a second.
pub async fn sealed_log(
    brokers: &str,
    codec: &Codec,
    chain: &str,
    wait: std::time::Duration,
    mut progress: impl FnMut(Sealing),
) -> Result<Vec<Entry>, AuditError> {
    let deadline = tokio::time::Instant::now() + wait;
    let cut = cut(brokers).await?;
    let mut announced = false;
    loop {
        let unsealed = unsealed_partitions(&read_digests(brokers, codec).await?, chain, &cut);
        if unsealed == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            progress(Sealing::GaveUp { unsealed });
            break;
        }
        if !announced {
            progress(Sealing::Waiting { unsealed });
            announced = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(as_of(read_topics(brokers, codec).await?, chain, &cut))
}
