//! Exports for auditors. JSON lines: a header saying what was selected,
//! then one record per line with its topic, partition and offset, then
//! the chain's digests. An export is self-checking: every range a selected
//! digest sealed is in it whole, the selected events in full and the
//! others (other datasets, outside the window) as their hash only, so
//! `mend audit verify --file` checks it offline with the public key. CSV
//! is for reading (one row per selected event), not for verifying.

use mend_model::digest::AuditDigest;
use mend_model::topics;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuditError, AuditEvent, Entry, LogPosition, Record, timeline};

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub chain: String,
    pub dataset: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Selection {
    fn takes(&self, event: &AuditEvent) -> bool {
        let envelope = event.envelope();
        self.dataset.as_ref().is_none_or(|d| *d == envelope.dataset)
            && self.from.is_none_or(|f| envelope.time >= f)
            && self.to.is_none_or(|t| envelope.time <= t)
    }
}

/// One line of an export, as written.
#[derive(Debug, Serialize)]
struct Line {
    topic: String,
    partition: i32,
    offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<Box<AuditDigest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unreadable: Option<String>,
}

/// One line of an export, as read: the event is parsed later, straight
/// into its type.
#[derive(Debug, Deserialize)]
struct ReadLine<'a> {
    topic: String,
    partition: i32,
    offset: i64,
    #[serde(default, borrow)]
    event: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    digest: Option<Box<AuditDigest>>,
    #[serde(default)]
    unreadable: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeaderLine {
    export: ExportHeader,
}

/// The records of `entries` an export of `selection` holds, and its header.
pub fn select(entries: &[Entry], selection: &Selection) -> (ExportHeader, Vec<Entry>) {
    let header = ExportHeader {
        chain: Some(selection.chain.clone()),
        dataset: selection.dataset.clone(),
        from: selection.from,
        to: selection.to,
        time: mend_model::events::now_millis(),
    };
    let digests = crate::sealed::digests_of(entries, &selection.chain);
    let chosen = crate::verify::selected_times(&digests, selection.from, selection.to);
    let sealed = crate::verify::SealedIndex::new(&digests);
    // Some(true): in a range the export holds whole; Some(false): sealed
    // by a digest outside the window; None: not sealed yet.
    let in_range = |p: &LogPosition| sealed.covering(&p.topic, p.partition, p.offset).map(|i| chosen[i]);
    let mut out = Vec::new();
    for entry in entries {
        let position = &entry.position;
        let record = match &entry.record {
            Record::Digest(d) if d.chain == selection.chain => entry.record.clone(),
            Record::Digest(_) => continue,
            Record::Event(event) => match (in_range(position), selection.takes(event)) {
                (Some(true), true) | (None, true) => entry.record.clone(),
                (Some(true), false) => {
                    let envelope = event.envelope();
                    Record::Redacted { event_id: envelope.event_id.clone(), hash: envelope.hash.clone() }
                }
                _ => continue,
            },
            Record::Redacted { .. } | Record::Unreadable { .. } => match in_range(position) {
                Some(true) => entry.record.clone(),
                None if selection.dataset.is_none() => entry.record.clone(),
                _ => continue,
            },
        };
        out.push(Entry { position: position.clone(), record });
    }
    (header, out)
}

/// The JSON-lines export: `header`, then `entries`.
pub fn export_lines(header: &ExportHeader, entries: &[Entry]) -> String {
    let mut out = serde_json::to_string(&HeaderLine { export: header.clone() }).unwrap_or_default();
    out.push('\n');
    for entry in entries {
        let p = &entry.position;
        let mut line = Line {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: p.offset,
            event: None,
            event_id: None,
            hash: None,
            digest: None,
            unreadable: None,
        };
        match &entry.record {
            Record::Event(event) => line.event = Some(event.to_json()),
            Record::Redacted { event_id, hash } => {
                (line.event_id, line.hash) = (Some(event_id.clone()), Some(hash.clone()))
            }
            Record::Digest(digest) => line.digest = Some(digest.clone()),
            Record::Unreadable { reason, hash } => {
                (line.unreadable, line.hash) = (Some(reason.clone()), Some(hash.clone()))
            }
        }
        out.push_str(&serde_json::to_string(&line).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The header and entries of a JSON-lines export, in file order. An export
/// without a header (made before headers existed) is a whole one.
pub fn read_export(text: &str) -> Result<(ExportHeader, Vec<Entry>), AuditError> {
    let mut lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(AuditError::Export { line: 1, reason: "the file is empty: not an export".into() });
    }
    let mut header = None;
    if let Some((_, first)) = lines.first()
        && first.contains("\"export\"")
        && let Ok(h) = serde_json::from_str::<HeaderLine>(first)
    {
        header = Some(h.export);
        lines.remove(0);
    }
    // Parsing is most of the work of reading an export: on every core.
    let parsed = crate::log::on_every_core(&lines, |chunk: &[(usize, &str)]| {
        chunk.iter().map(|(number, line)| read_line(*number, line)).collect()
    });
    Ok((header.unwrap_or_default(), parsed.into_iter().collect::<Result<_, _>>()?))
}

/// One line of an export (`number` counts from 0).
fn read_line(number: usize, line: &str) -> Result<Entry, AuditError> {
    let invalid = |reason: String| AuditError::Export { line: number + 1, reason };
    let line: ReadLine<'_> = serde_json::from_str(line).map_err(|e| invalid(e.to_string()))?;
    let position = LogPosition { topic: line.topic.clone(), partition: line.partition, offset: line.offset };
    let record = match line {
        ReadLine { digest: Some(digest), .. } => Record::Digest(digest),
        ReadLine { event: Some(event), .. } => match AuditEvent::from_json(&line.topic, event.get()) {
            Ok(event) => Record::Event(Box::new(event)),
            Err(reason) => Record::Unreadable { reason, hash: String::new() },
        },
        ReadLine { unreadable: Some(reason), hash, .. } => {
            Record::Unreadable { reason, hash: hash.unwrap_or_default() }
        }
        ReadLine { event_id: Some(event_id), hash: Some(hash), .. } => Record::Redacted { event_id, hash },
        _ => return Err(invalid("neither an event, a digest nor a redacted event".into())),
    };
    if position.topic != topics::DIGESTS && matches!(record, Record::Digest(_)) {
        return Err(invalid(format!("a digest on topic {}", position.topic)));
    }
    Ok(Entry { position, record })
}

/// CSV for reading: one row per event in full (redacted events and
/// digests are left out).
pub fn export_csv(entries: &[Entry]) -> Result<String, AuditError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| AuditError::Other(format!("writing CSV: {e}"));
    writer
        .write_record([
            "time",
            "topic",
            "partition",
            "offset",
            "dataset",
            "incident_id",
            "what",
            "service",
            "who",
            "event_id",
            "causation_id",
            "prev_hash",
            "hash",
            "summary",
        ])
        .map_err(failed)?;
    for entry in entries {
        let Some(event) = entry.event() else { continue };
        let envelope = event.envelope();
        let (what, who, summary) = timeline::summary(event);
        writer
            .write_record([
                crate::format_time(envelope.time),
                entry.position.topic.clone(),
                entry.position.partition.to_string(),
                entry.position.offset.to_string(),
                envelope.dataset.clone(),
                envelope.incident_id.0.clone(),
                what.to_owned(),
                envelope.service.clone(),
                who.unwrap_or_default(),
                envelope.event_id.clone(),
                envelope.causation_id.clone().unwrap_or_default(),
                envelope.prev_hash.clone().unwrap_or_default(),
                envelope.hash.clone(),
                summary.to_string(),
            ])
            .map_err(failed)?;
    }
    let bytes = writer.into_inner().map_err(|e| AuditError::Other(format!("writing CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| AuditError::Other(e.to_string()))
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
