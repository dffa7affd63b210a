//! The audit log checked. mend's event topics are its audit log: every
//! event carries a hash over its content chained to the event it answers.
//! Here the log is read (from the live topics, or from an export an auditor
//! was handed) and every event is checked: its hash matches its content,
//! the event it answers exists and its `prev_hash` is that event's hash,
//! and within each topic-partition the offsets come in order without gaps
//! (for a complete log). Each finding names the topic, partition and offset
//! and what is wrong. An export is JSON lines, one event per line with its
//! position, so an auditor can check it offline.

pub mod timeline;

use std::collections::{BTreeMap, HashMap};

use mend_avro::Codec;
use mend_avro::codec::CodecError;
use mend_model::events::{
    AgentRun, Application, Decision, Detection, Diagnosis, Envelope, Event, Proposal, Quarantined,
};
use mend_model::topics;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

    /// Whether its stored hash is the hash of its content.
    pub fn hash_holds(&self) -> bool {
        each!(self, e => e.verify_hash())
    }

    /// The event as JSON (what an export holds).
    pub fn to_json(&self) -> Value {
        each!(self, e => serde_json::to_value(e).unwrap_or_default())
    }

    /// The event of `topic` in `json`.
    pub fn from_json(topic: &str, json: Value) -> Result<Self, String> {
        let invalid = |e: serde_json::Error| format!("not a {topic} event: {e}");
        Ok(match topic {
            topics::QUARANTINE => Self::Quarantined(serde_json::from_value(json).map_err(invalid)?),
            topics::DETECTIONS => Self::Detection(serde_json::from_value(json).map_err(invalid)?),
            topics::DIAGNOSES => Self::Diagnosis(serde_json::from_value(json).map_err(invalid)?),
            topics::PROPOSALS => Self::Proposal(serde_json::from_value(json).map_err(invalid)?),
            topics::DECISIONS => Self::Decision(serde_json::from_value(json).map_err(invalid)?),
            topics::APPLICATIONS => Self::Application(serde_json::from_value(json).map_err(invalid)?),
            topics::AGENT_RUNS => Self::AgentRun(serde_json::from_value(json).map_err(invalid)?),
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

/// One event of the log with its position; `event` is None when it could
/// not be read (the reason is a finding).
#[derive(Debug, Clone)]
pub struct Entry {
    pub position: Position,
    pub event: Result<AuditEvent, String>,
}

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    topic: String,
    partition: i32,
    offset: i64,
    event: Value,
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
}

/// Every event of the live audit topics, in log order.
pub async fn read_topics(brokers: &str, codec: &Codec) -> Result<Vec<Entry>, AuditError> {
    use rdkafka::message::Message;
    let mut entries = Vec::new();
    for topic in topics::EVENT_TOPICS {
        let mut messages = mend_runtime::kafka::read_to_end(brokers, topic).await?;
        messages.sort_by_key(|m| (m.partition(), m.offset()));
        for message in messages {
            let position =
                Position { topic: topic.to_owned(), partition: message.partition(), offset: message.offset() };
            let event = match AuditEvent::decode(codec, topic, message.payload().unwrap_or_default()).await {
                Ok(event) => Ok(event),
                Err(CodecError::Invalid(reason)) => {
                    Err(format!("does not decode with its registered schema: {reason}"))
                }
                Err(unavailable) => return Err(unavailable.into()),
            };
            entries.push(Entry { position, event });
        }
    }
    Ok(entries)
}

/// The JSON-lines export of `entries` (readable ones only).
pub fn export_lines(entries: &[Entry]) -> String {
    let mut out = String::new();
    for entry in entries {
        if let Ok(event) = &entry.event {
            let line = Line {
                topic: entry.position.topic.clone(),
                partition: entry.position.partition,
                offset: entry.position.offset,
                event: event.to_json(),
            };
            out.push_str(&serde_json::to_string(&line).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// The entries of a JSON-lines export, in file order.
pub fn read_export(text: &str) -> Result<Vec<Entry>, AuditError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(number, line)| {
            let line: Line = serde_json::from_str(line)
                .map_err(|e| AuditError::Export { line: number + 1, reason: e.to_string() })?;
            let position = Position { topic: line.topic.clone(), partition: line.partition, offset: line.offset };
            Ok(Entry { position, event: AuditEvent::from_json(&line.topic, line.event) })
        })
        .collect()
}

/// Something wrong with the log, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub position: Position,
    pub problem: String,
}

/// Checks every entry. `complete`: the entries are the whole log of their
/// partitions (the live topics, or an unfiltered export), so a gap in the
/// offsets is a removed event.
pub fn verify(entries: &[Entry], complete: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut by_id: HashMap<&str, (&Position, &AuditEvent)> = HashMap::new();
    for entry in entries {
        if let Ok(event) = &entry.event {
            by_id.insert(event.envelope().event_id.as_str(), (&entry.position, event));
        }
    }
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for entry in entries {
        let position = &entry.position;
        let mut found = |problem: String| findings.push(Finding { position: position.clone(), problem });
        if let Some(previous) = last.insert((position.topic.as_str(), position.partition), position.offset) {
            if position.offset <= previous {
                found(format!("out of order: offset {} comes after {previous}", position.offset));
            } else if complete && position.offset > previous + 1 {
                found(format!("offsets {}..{} are missing (removed?)", previous + 1, position.offset - 1));
            }
        }
        let event = match &entry.event {
            Ok(event) => event,
            Err(reason) => {
                found(reason.clone());
                continue;
            }
        };
        if !event.hash_holds() {
            found("edited: its hash does not match its content".to_owned());
        }
        let envelope = event.envelope();
        match (&envelope.causation_id, &envelope.prev_hash) {
            (Some(cause), prev) => match by_id.get(cause.as_str()) {
                None => found(format!("the event it answers ({cause}) is not in the log (removed?)")),
                Some((_, caused_by)) if prev.as_deref() != Some(caused_by.envelope().hash.as_str()) => found(format!(
                    "its prev_hash is not the hash of the event it answers ({cause}): the chain was rewritten"
                )),
                Some((cause_position, caused_by)) if caused_by.envelope().incident_id != envelope.incident_id => {
                    found(format!("it answers {cause} at {cause_position}, which belongs to another incident"))
                }
                Some(_) => {}
            },
            (None, Some(_)) => found("it has a prev_hash but answers no event".to_owned()),
            (None, None) => {}
        }
    }
    findings
}
