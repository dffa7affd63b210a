//! The audit log checked. mend's event topics are its audit log: every
//! event carries a hash over its content chained to the event it answers,
//! and the sealer ([`seal`]) writes signed digests over ranges of them to
//! `mend.audit.digests`. Here the log is read (from the live topics, or
//! from an export an auditor was handed, [`export`]) and checked
//! ([`verify`]); each finding names the topic, partition and offset and
//! what is wrong.

pub mod export;
pub mod keys;
pub mod rebuild;
pub mod seal;
pub mod timeline;
pub mod verify;

use std::collections::HashMap;

use mend_avro::Codec;
use mend_avro::codec::CodecError;
use mend_model::digest::AuditDigest;
use mend_model::events::{
    AgentRun, Application, Decision, Detection, Diagnosis, Envelope, Event, Proposal, Quarantined,
};
use mend_model::topics;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub use export::{Selection, export_csv, export_lines, read_export};
pub use verify::{Finding, Options, Report, verify};

/// One audit event, typed by its topic.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEvent {
    Quarantined(Quarantined),
    Detection(Detection),
    Diagnosis(Diagnosis),
    Proposal(Proposal),
    Decision(Decision),
    Application(Application),
    AgentRun(AgentRun),
}

macro_rules! each {
    ($event:expr, $e:ident => $body:expr) => {
        match $event {
            AuditEvent::Quarantined($e) => $body,
            AuditEvent::Detection($e) => $body,
            AuditEvent::Diagnosis($e) => $body,
            AuditEvent::Proposal($e) => $body,
            AuditEvent::Decision($e) => $body,
            AuditEvent::Application($e) => $body,
            AuditEvent::AgentRun($e) => $body,
        }
    };
}

impl AuditEvent {
    pub fn envelope(&self) -> &Envelope {
        each!(self, e => e.envelope())
    }

    /// What the event is the one answer of, for its service and kind: the
    /// record a quarantine event holds, the incident a detection opens, the
    /// event a diagnosis, a proposal or a supervisor's run answers. Two
    /// events of one service with the same answer are a retried copy (a
    /// stage that handled its input twice). None for decisions and
    /// applications: people decide again, and the applier records each try.
    pub fn answer_of(&self) -> Option<String> {
        match self {
            Self::Quarantined(q) => Some(format!("{}:{}@{}", q.topic, q.partition, q.offset)),
            Self::Detection(d) => Some(d.envelope.incident_id.0.clone()),
            Self::Diagnosis(_) | Self::Proposal(_) | Self::AgentRun(_) => self.envelope().causation_id.clone(),
            Self::Decision(_) | Self::Application(_) => None,
        }
    }

    /// Whether its stored hash is the hash of its content.
    pub fn hash_holds(&self) -> bool {
        each!(self, e => e.verify_hash())
    }

    /// The event as JSON (what an export holds).
    pub fn to_json(&self) -> Value {
        each!(self, e => serde_json::to_value(e).unwrap_or_default())
    }

    /// The event of `topic` in `json` (an export's line), parsed straight
    /// into its type.
    pub fn from_json(topic: &str, json: &str) -> Result<Self, String> {
        fn parse<E: serde::de::DeserializeOwned>(topic: &str, json: &str) -> Result<E, String> {
            serde_json::from_str(json).map_err(|e| format!("not a {topic} event: {e}"))
        }
        Ok(match topic {
            topics::QUARANTINE => Self::Quarantined(parse(topic, json)?),
            topics::DETECTIONS => Self::Detection(parse(topic, json)?),
            topics::DIAGNOSES => Self::Diagnosis(parse(topic, json)?),
            topics::PROPOSALS => Self::Proposal(parse(topic, json)?),
            topics::DECISIONS => Self::Decision(parse(topic, json)?),
            topics::APPLICATIONS => Self::Application(parse(topic, json)?),
            topics::AGENT_RUNS => Self::AgentRun(parse(topic, json)?),
            other => return Err(format!("{other} is not an audit topic")),
        })
    }

    /// Decodes the wire-format payload of a record of `topic`.
    pub async fn decode(codec: &Codec, topic: &str, payload: &[u8]) -> Result<Self, CodecError> {
        Ok(match topic {
            topics::QUARANTINE => Self::Quarantined(codec.decode_event(payload).await?),
            topics::DETECTIONS => Self::Detection(codec.decode_event(payload).await?),
            topics::DIAGNOSES => Self::Diagnosis(codec.decode_event(payload).await?),
            topics::PROPOSALS => Self::Proposal(codec.decode_event(payload).await?),
            topics::DECISIONS => Self::Decision(codec.decode_event(payload).await?),
            topics::APPLICATIONS => Self::Application(codec.decode_event(payload).await?),
            topics::AGENT_RUNS => Self::AgentRun(codec.decode_event(payload).await?),
            other => return Err(CodecError::Invalid(format!("{other} is not an audit topic"))),
        })
    }
}

/// Where an event is in the log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Position {
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
    pub position: Position,
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

/// `ms` since the epoch as RFC 3339, to the millisecond.
pub fn format_time(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

/// What an export holds, written as its first line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportHeader {
    /// The digests' chain it carries.
    pub chain: Option<String>,
    /// Only this dataset's events in full.
    pub dataset: Option<String>,
    /// Only events from this time (ms since the epoch) in full.
    pub from: Option<i64>,
    /// Only events up to this time in full.
    pub to: Option<i64>,
    /// When it was made.
    pub time: i64,
}

impl ExportHeader {
    /// What the export selects, for a reader of a verification.
    pub fn describe(&self) -> String {
        format!(
            "the export (made {}) holds chain {}, {}, {} to {}",
            format_time(self.time),
            self.chain.as_deref().unwrap_or("(any)"),
            self.dataset.as_deref().map_or_else(|| "every dataset".to_owned(), |d| format!("dataset {d}")),
            self.from.map_or_else(|| "the beginning".to_owned(), format_time),
            self.to.map_or_else(|| "the end".to_owned(), format_time),
        )
    }

    /// Why an event given in full is not one this export selects: its
    /// header or the event was edited.
    pub fn refuses(&self, envelope: &mend_model::events::Envelope) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(dataset) = self.dataset.as_ref().filter(|d| **d != envelope.dataset) {
            problems.push(format!(
                "it is an event of dataset {}, but the export's header selects dataset {dataset}: the header or \
                 the event was edited",
                envelope.dataset
            ));
        }
        if self.from.is_some_and(|from| envelope.time < from) || self.to.is_some_and(|to| envelope.time > to) {
            problems.push(format!(
                "its time {} is outside the export's window: the header or the event was edited",
                envelope.time
            ));
        }
        problems
    }
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
        AuditEvent::decode(codec, topic, payload).await.map(|e| Record::Event(Box::new(e)))
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
        let position = Position { topic: topic.to_owned(), partition: message.partition(), offset: message.offset() };
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
    let mut cut = Cut::new();
    for topic in topics::EVENT_TOPICS {
        for (partition, low, high) in mend_runtime::kafka::watermarks(brokers, topic).await? {
            if high > low {
                cut.insert((topic.to_owned(), partition), high);
            }
        }
    }
    Ok(cut)
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

#[cfg(test)]
mod tests;
