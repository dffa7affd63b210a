//! `mend audit verify`: every check of the log, each finding located.
//!
//! Per event: it decodes; its hash matches its content; the event it
//! answers exists, belongs to its incident, and its `prev_hash` is that
//! event's hash; no other copy of its id has other content; in an export,
//! it is what the header selects. Per partition: offsets come in order.
//! Per digest of the chain: its hash matches its content, its signature
//! holds for the public key (one that does not, beside a signed digest of
//! its sequence, is a forgery left out of the chain), its sequence and
//! `prev_hash` follow the previous digest. Per
//! sealed range: every event the digest sealed is there and they hash to
//! what it sealed (an event removed, replaced or reordered shows here even
//! when every event's own hash holds). And every event is sealed: one in a
//! gap between sealed ranges means a digest was removed; one after the
//! last digest is waiting for the sealer (live: a finding once older than
//! [`UNSEALED_GRACE_MS`]; an export is made sealed, so there it is always
//! a finding).

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;
use mend_model::digest::AuditDigest;
use mend_model::topics;
use serde::Serialize;

use crate::{Entry, ExportHeader, LogPosition, Record};

mod chain;

pub(crate) use chain::{SealedIndex, selected_times};
use chain::{check_digests, check_range};

/// How long the sealer may take before an unsealed event of the live log
/// is a finding.
pub const UNSEALED_GRACE_MS: i64 = 60_000;

/// What the log is.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The live topics, read at `now` (ms since the epoch).
    Live { now: i64 },
    /// An export, with what its header says it selected.
    Export(ExportHeader),
}

/// What to check the log with.
#[derive(Debug, Clone)]
pub struct Options {
    pub scope: Scope,
    /// The digests' chain to check; None: the export's, or the only chain
    /// in the log.
    pub chain: Option<String>,
    /// The sealer's public key; without it signatures are not checked
    /// (and the report says so).
    pub public_key: Option<VerifyingKey>,
}

/// Something wrong with the log, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub position: LogPosition,
    pub problem: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub events: usize,
    pub digests: usize,
    pub findings: Vec<Finding>,
    /// What a reader should know that is not wrong (unsigned digests, no
    /// key given, events waiting for the sealer, redactions).
    pub notes: Vec<String>,
    /// Per service, events that repeat the answer of an earlier event of
    /// that service and kind (see [`crate::AuditEvent::answer_of`]): a
    /// stage that handled its input twice. Not a finding (a stage that is
    /// at least once may); the exactly-once stages write none.
    pub retried: BTreeMap<String, usize>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

type Partition<'a> = (&'a str, i32);

/// An event's position, hash and (unless redacted) content, by event id.
type EventAt<'a> = (&'a LogPosition, &'a str, Option<&'a crate::AuditEvent>);

/// Checks `entries` (in log order) under `options`.
pub fn verify(entries: &[Entry], options: &Options) -> Report {
    let mut report = Report::default();
    let mut found = |position: &LogPosition, problem: String| {
        report.findings.push(Finding { position: position.clone(), problem });
    };

    // Events by id (readable and redacted), and each partition's records.
    let mut hash_of: HashMap<&str, EventAt<'_>> = HashMap::with_capacity(entries.len());
    let mut partitions: BTreeMap<Partition<'_>, Vec<(i64, &Entry)>> = BTreeMap::new();
    let mut digests: Vec<(&LogPosition, &AuditDigest)> = Vec::new();
    let mut written_twice = 0usize;
    for entry in entries {
        let position = &entry.position;
        let keyed: Option<(&str, EventAt<'_>)> = match &entry.record {
            Record::Event(event) => {
                let envelope = event.envelope();
                Some((&envelope.event_id, (position, &envelope.hash, Some(&**event))))
            }
            Record::Redacted { event_id, hash } => Some((event_id, (position, hash, None))),
            Record::Digest(digest) => {
                digests.push((position, &**digest));
                None
            }
            Record::Unreadable { .. } => None,
        };
        if let Some((event_id, at)) = keyed {
            // A producer's retry may write an event twice, the same bytes;
            // a second copy with other content is a forgery.
            match hash_of.entry(event_id) {
                Slot::Vacant(slot) => {
                    slot.insert(at);
                }
                Slot::Occupied(first) if first.get().1 == at.1 => written_twice += 1,
                Slot::Occupied(first) => found(
                    position,
                    format!(
                        "event {event_id} is also at {}, with other content: a second, different copy (forged?)",
                        first.get().0
                    ),
                ),
            }
        }
        if position.topic != topics::DIGESTS {
            partitions.entry((&position.topic, position.partition)).or_default().push((position.offset, entry));
        }
    }

    if written_twice > 0 {
        report.notes.push(format!("{written_twice} events are written twice, the same (a producer's retry)"));
    }
    report.retried = retried_copies(entries);
    if !report.retried.is_empty() {
        let by: Vec<String> = report.retried.iter().map(|(service, n)| format!("{service} {n}")).collect();
        report.notes.push(format!(
            "retried copies (an event answering what an earlier one of its service and kind answered): {}",
            by.join(", ")
        ));
    }

    // Each partition's records by offset (a log keeps them so already; a
    // duplicated offset stays, and is reported out of order below).
    for records in partitions.values_mut() {
        records.sort_by_key(|(offset, _)| *offset);
    }

    // Offsets in order, per partition (digests included).
    let mut last: HashMap<Partition<'_>, i64> = HashMap::new();
    for entry in entries {
        let p = &entry.position;
        if let Some(previous) = last.insert((&p.topic, p.partition), p.offset)
            && p.offset <= previous
        {
            found(p, format!("out of order: offset {} comes after {previous}", p.offset));
        }
    }

    // Each event on its own and against the event it answers.
    let header = match &options.scope {
        Scope::Export(header) => Some(header),
        Scope::Live { .. } => None,
    };
    if let Some(header) = header {
        report.notes.push(header.describe());
    }
    let window_starts = header.is_some_and(|h| h.from.is_some());
    // An export without a time window gives every event of its dataset (of
    // every dataset, without one) in full: a hash-only line then hides one.
    let unwindowed = header.filter(|h| h.from.is_none() && h.to.is_none());
    let mut answers_before_window = 0usize;
    let own = own_checks(entries);
    for (entry, own) in entries.iter().zip(own) {
        let position = &entry.position;
        let event = match &entry.record {
            Record::Event(event) => event,
            Record::Unreadable { reason, .. } => {
                found(position, reason.clone());
                continue;
            }
            Record::Redacted { event_id, .. } => {
                if unwindowed.is_some_and(|h| h.dataset.is_none()) {
                    found(
                        position,
                        format!(
                            "event {event_id} is given as a hash only, but the export selects every event: \
                             its content was removed"
                        ),
                    );
                }
                continue;
            }
            Record::Digest(_) => continue,
        };
        report.events += 1;
        if let Some(header) = header {
            for problem in header.refuses(event.envelope()) {
                found(position, problem);
            }
        }
        if !own.hash_holds {
            found(position, "edited: its hash does not match its content".to_owned());
        }
        if !own.plan_holds {
            found(position, own_plan_problem(event));
        }
        for problem in plan_problems(event, &hash_of) {
            found(position, problem);
        }
        let envelope = event.envelope();
        match (&envelope.causation_id, &envelope.prev_hash) {
            (Some(cause), prev) => match hash_of.get(cause.as_str()) {
                None if window_starts => answers_before_window += 1,
                None => found(position, format!("the event it answers ({cause}) is not in the log (removed?)")),
                Some((_, hash, _)) if prev.as_deref() != Some(*hash) => found(
                    position,
                    format!("its prev_hash is not the hash of the event it answers ({cause}): the chain was rewritten"),
                ),
                Some((cause_position, _, None)) if unwindowed.is_some() => found(
                    position,
                    format!(
                        "it answers {cause} at {cause_position}, which the export gives as a hash only, though it \
                         gives every event of this dataset in full: an event of the incident hidden"
                    ),
                ),
                Some((cause_position, _, Some(caused_by)))
                    if caused_by.envelope().incident_id != envelope.incident_id =>
                {
                    found(
                        position,
                        format!("it answers {cause} at {cause_position}, which belongs to another incident"),
                    )
                }
                Some(_) => {}
            },
            (None, Some(_)) => found(position, "it has a prev_hash but answers no event".to_owned()),
            (None, None) => {}
        }
    }
    if answers_before_window > 0 {
        report.notes.push(format!(
            "{answers_before_window} events answer events from before the export's window (not checked)"
        ));
    }

    // The chain of digests.
    let digests = chain::the_chain(digests, options, &mut found, &mut report.notes);
    report.digests = digests.len();
    check_digests(&digests, options, &mut found, &mut report.notes);

    // The sealed ranges, and every event sealed.
    let chain_digests: Vec<&AuditDigest> = digests.iter().map(|(_, d)| *d).collect();
    let (from, to) = match &options.scope {
        Scope::Export(header) => (header.from, header.to),
        Scope::Live { .. } => (None, None),
    };
    let selected = selected_times(&chain_digests, from, to);
    for ((position, digest), chosen) in digests.iter().zip(&selected) {
        if *chosen {
            for range in &digest.ranges {
                let records = partitions.get(&(range.topic.as_str(), range.partition));
                check_range(range, digest.sequence, position, records, &mut found);
            }
        }
    }
    let skipped = selected.iter().filter(|s| !**s).count();
    if skipped > 0 {
        report
            .notes
            .push(format!("{skipped} digests seal events outside the export's window (their ranges not checked)"));
    }
    let sealed = SealedIndex::new(&chain_digests);
    sealed.check_overlaps(&chain_digests, &mut found);
    // Events no digest covers, in runs of one verdict per partition.
    let mut waiting = 0usize;
    for (&(topic, partition), records) in &partitions {
        let last_sealed = sealed.last(topic, partition);
        let mut run: Option<(Unsealed, &LogPosition, i64, usize)> = None;
        let mut flush = |run: &mut Option<(Unsealed, &LogPosition, i64, usize)>| {
            if let Some((verdict, first, last, count)) = run.take() {
                let which = if count == 1 {
                    format!("offset {}", first.offset)
                } else {
                    format!("offsets {}..{last} ({count} events)", first.offset)
                };
                found(first, verdict.problem(&which));
            }
        };
        for &(offset, entry) in records {
            let verdict = if sealed.covering(topic, partition, offset).is_some() {
                None
            } else if last_sealed.is_some_and(|l| offset < l) {
                Some(Unsealed::Gap)
            } else {
                match &options.scope {
                    Scope::Live { now }
                        if entry.event().is_some_and(|e| now - e.envelope().time < UNSEALED_GRACE_MS) =>
                    {
                        waiting += 1;
                        None
                    }
                    Scope::Live { .. } => Some(Unsealed::Late),
                    Scope::Export(_) => Some(Unsealed::Export),
                }
            };
            match (&mut run, verdict) {
                (Some((current, _, last, count)), Some(verdict)) if *current == verdict => {
                    *last = offset;
                    *count += 1;
                }
                (_, verdict) => {
                    flush(&mut run);
                    run = verdict.map(|v| (v, &entry.position, offset, 1));
                }
            }
        }
        flush(&mut run);
    }
    if waiting > 0 {
        report.notes.push(format!("{waiting} events written in the last minute are not sealed yet"));
    }

    // Gaps in the offsets of a complete log, outside sealed ranges (inside
    // them the ranges' checks say more).
    let complete = match &options.scope {
        Scope::Live { .. } => true,
        Scope::Export(header) => header.dataset.is_none() && header.from.is_none() && header.to.is_none(),
    };
    if complete {
        for (&(topic, partition), records) in &partitions {
            let inside = |o: i64| sealed.covering(topic, partition, o).is_some();
            let offsets: Vec<i64> = records.iter().map(|(offset, _)| *offset).collect();
            for pair in offsets.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if b > a + 1 && !(inside(a + 1) && inside(b - 1)) {
                    let at = LogPosition { topic: topic.to_owned(), partition, offset: b };
                    found(&at, format!("offsets {}..{} are missing (removed?)", a + 1, b - 1));
                }
            }
        }
    }
    let redacted = entries.iter().filter(|e| matches!(e.record, Record::Redacted { .. })).count();
    if redacted > 0 {
        report.notes.push(format!(
            "{redacted} events of other datasets or outside the window are redacted: checked only within their sealed ranges"
        ));
    }
    report.findings.sort_by(|a, b| a.position.cmp(&b.position));
    report
}

/// Per service, events whose answer an earlier event of that service on
/// the same topic already gave.
fn retried_copies(entries: &[Entry]) -> BTreeMap<String, usize> {
    let mut seen: std::collections::HashSet<(&str, &str, String)> = std::collections::HashSet::new();
    let mut ids: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut retried = BTreeMap::new();
    for entry in entries {
        let Some(event) = entry.event() else { continue };
        let envelope = event.envelope();
        // The same event written twice is a producer's retry, noted above.
        if !ids.insert(&envelope.event_id) {
            continue;
        }
        let Some(answer) = event.answer_of() else { continue };
        if !seen.insert((&entry.position.topic, &envelope.service, answer)) {
            *retried.entry(envelope.service.clone()).or_insert(0) += 1;
        }
    }
    retried
}

/// What is wrong with the plan an event carries against the events it
/// answers, even when its hash was recomputed: a decision naming another
/// plan than the proposal it answers, an application that answers no
/// approval. (A plan that does not hash to its own plan hash is found by
/// [`own_checks`].)
fn plan_problems(event: &crate::AuditEvent, events: &HashMap<&str, EventAt<'_>>) -> Vec<String> {
    use crate::AuditEvent as A;
    let cause = |id: &Option<String>| id.as_deref().and_then(|id| events.get(id)).and_then(|(_, _, e)| *e);
    let mut problems = Vec::new();
    match event {
        A::Decision(d) => {
            if let Some(A::Proposal(p)) = cause(&d.envelope.causation_id)
                && (p.plan_hash != d.plan_hash || p.proposal_id != d.proposal_id)
            {
                problems.push(format!(
                    "it decides plan {} of proposal {}, but the proposal it answers has plan {} ({})",
                    d.plan_hash, d.proposal_id, p.plan_hash, p.proposal_id
                ));
            }
        }
        A::Application(a) => {
            if let Some(A::Decision(d)) = cause(&a.envelope.causation_id) {
                if d.envelope.event_id != a.decision_id || d.proposal_id != a.proposal_id {
                    problems.push("it names another decision or proposal than the decision it answers".to_owned());
                }
                if a.outcome == mend_model::ApplicationOutcome::Applied && d.outcome != mend_model::Verdict::Approved {
                    problems.push(format!("it applied a plan whose decision was {}", d.outcome));
                }
            }
        }
        _ => {}
    }
    problems
}

/// What an event proves on its own (true for what is not an event).
struct OwnCheck {
    /// Its hash is the hash of its content.
    hash_holds: bool,
    /// The plan it carries (a proposal's, a decision's) hashes to its plan hash.
    plan_holds: bool,
}

/// Each entry's own checks, on every core: recomputing hashes is most of
/// the work of a verification.
fn own_checks(entries: &[Entry]) -> Vec<OwnCheck> {
    use crate::AuditEvent as A;
    use mend_model::events::Proposal;
    crate::log::on_every_core(entries, |chunk: &[Entry]| {
        chunk
            .iter()
            .map(|entry| match entry.event() {
                None => OwnCheck { hash_holds: true, plan_holds: true },
                Some(event) => OwnCheck {
                    hash_holds: event.hash_holds(),
                    plan_holds: match event {
                        A::Proposal(p) => Proposal::hash_steps(&p.steps) == p.plan_hash,
                        A::Decision(d) => Proposal::hash_steps(&d.steps) == d.plan_hash,
                        _ => true,
                    },
                },
            })
            .collect()
    })
}

/// Why an event's own plan does not hold.
fn own_plan_problem(event: &crate::AuditEvent) -> String {
    match event {
        crate::AuditEvent::Decision(_) => "the plan it carries does not hash to its plan_hash: the plan was changed",
        _ => "its steps do not hash to its plan_hash: the plan was changed",
    }
    .to_owned()
}

/// Why events are in no digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsealed {
    /// Before the partition's last sealed offset: their digest is gone.
    Gap,
    /// After it, on the live topics, for longer than the grace.
    Late,
    /// After it, in an export (which is made sealed).
    Export,
}

impl Unsealed {
    fn problem(self, which: &str) -> String {
        match self {
            Self::Gap => format!("{which} in no digest, though later events are sealed: a digest removed?"),
            Self::Late => format!(
                "{which} not sealed within {} s of being written: is the sealer of this chain running?",
                UNSEALED_GRACE_MS / 1000
            ),
            Self::Export => format!("{which} not sealed by any digest of the export"),
        }
    }
}
