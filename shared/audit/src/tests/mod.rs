//! Tampering with a sealed log, each kind found and located: a log of
//! incidents chained as the stages chain them, sealed as the sealer seals
//! it, exported and read back as an auditor would. The fixtures are here;
//! the tests, by what they check, in the modules below.

mod export;
mod seal;
mod verify;

use ed25519_dalek::SigningKey;
use mend_model::events::{
    Application, Decision, Detection, Diagnosis, Envelope, Event, FieldChange, IncidentId, PlanStep, Proposal,
};
use mend_model::{ApplicationOutcome, ChangeKind, Channel, DetectionSource, Policy, StepKind, Verdict, topics};

use crate::export::{ExportHeader, Selection, export_lines, read_export, select};
use crate::seal::{Pending, next_digest};
use crate::verify::{Options, Scope, verify};
use crate::{AuditEvent, Entry, LogPosition, Record, keys};

const CHAIN: &str = "mend";

fn incident(dataset: &str, n: u32) -> Vec<AuditEvent> {
    let id = IncidentId::for_drift(dataset, n);
    let changes = vec![FieldChange::new(ChangeKind::FieldAdded, "coupon")];
    let mut detection = Detection {
        envelope: Envelope::new("detector", dataset, id),
        source: DetectionSource::SchemaId,
        topic: format!("{dataset}.orders"),
        partition: 0,
        offset: 1,
        subject: format!("{dataset}.orders-value"),
        writer_schema_id: Some(2),
        contract_schema_id: Some(1),
        changes: changes.clone(),
        evidence: Default::default(),
    };
    detection.seal();
    let mut diagnosis = Diagnosis {
        envelope: Envelope::answering("diagnoser", &detection.envelope),
        writer_schema_id: Some(2),
        contract_schema_id: Some(1),
        changes: changes.clone(),
        evidence: Default::default(),
    };
    diagnosis.seal();
    let steps = vec![PlanStep {
        kind: StepKind::Ddl,
        description: "add coupon".into(),
        sql: Some("ALTER TABLE t ADD COLUMN coupon TEXT".into()),
        field: None,
        column: None,
        patch: None,
        cost: None,
    }];
    let mut proposal = Proposal {
        envelope: Envelope::answering("proposer", &diagnosis.envelope),
        proposal_id: Proposal::rules_id(&diagnosis.envelope.incident_id),
        writer_schema_id: Some(2),
        changes,
        plan_hash: Proposal::hash_steps(&steps),
        steps,
        policy: Policy::Approve,
        rules: vec!["field_added(coupon) => approve".into()],
        origin: None,
        refused: Vec::new(),
        blast_radius: None,
    };
    proposal.seal();
    let decision = Decision::on(&proposal, "control", Verdict::Approved, "alice".into(), Channel::Cli, None);
    let mut application = Application {
        envelope: Envelope::answering("applier", &decision.envelope),
        proposal_id: proposal.proposal_id.clone(),
        decision_id: decision.envelope.event_id.clone(),
        outcome: ApplicationOutcome::Applied,
        contract_schema_id: Some(2),
        statements: 1,
        replayed: 3,
        loaded: 3,
        still_quarantined: 0,
        held: Vec::new(),
        applied_at: None,
        error: None,
        lock_waits: Vec::new(),
        contract_before: None,
    };
    application.seal();
    vec![
        AuditEvent::Detection(detection),
        AuditEvent::Diagnosis(diagnosis),
        AuditEvent::Proposal(proposal),
        AuditEvent::Decision(decision),
        AuditEvent::Application(application),
    ]
}

fn topic_of(event: &AuditEvent) -> &'static str {
    match event {
        AuditEvent::Quarantined(_) => topics::QUARANTINE,
        AuditEvent::Detection(_) => topics::DETECTIONS,
        AuditEvent::Diagnosis(_) => topics::DIAGNOSES,
        AuditEvent::Proposal(_) => topics::PROPOSALS,
        AuditEvent::Decision(_) => topics::DECISIONS,
        AuditEvent::Application(_) => topics::APPLICATIONS,
        AuditEvent::AgentRun(_) => topics::AGENT_RUNS,
    }
}

/// `incidents` incidents over two datasets, sealed every `every` events
/// with `key`, as the live log orders it (events by topic, then digests).
fn sealed_log(incidents: u32, every: usize, key: Option<&SigningKey>) -> Vec<Entry> {
    let mut offsets = std::collections::HashMap::new();
    let mut events = Vec::new();
    for n in 0..incidents {
        let dataset = if n % 2 == 0 { "orders" } else { "payments" };
        for event in incident(dataset, n) {
            let topic = topic_of(&event);
            let offset = offsets.entry(topic).or_insert(0i64);
            events.push(Entry {
                position: LogPosition { topic: topic.into(), partition: 0, offset: *offset },
                record: Record::Event(Box::new(event)),
            });
            *offset += 1;
        }
    }
    let digests = digests_of(&events, every, key);
    events.sort_by(|a, b| a.position.cmp(&b.position));
    events.extend(digests);
    events
}

/// A log's events and its digests.
fn split(log: &[Entry]) -> (Vec<Entry>, Vec<Entry>) {
    log.iter().cloned().partition(|e| e.position.topic != topics::DIGESTS)
}

/// The digests sealing `events` (in the order the sealer read them),
/// every `every` events, with `key`.
fn digests_of(events: &[Entry], every: usize, key: Option<&SigningKey>) -> Vec<Entry> {
    let mut digests = Vec::new();
    let mut last = None;
    for chunk in events.chunks(every) {
        let mut pending = Pending::default();
        for e in chunk {
            let topic = topic_of(e.event().unwrap_or_else(|| unreachable!()));
            pending.push(topic, 0, e.position.offset, e.sealed_hash().unwrap_or_default().as_bytes());
        }
        let digest = next_digest(CHAIN, last.as_ref(), &pending, key);
        last = Some(digest.clone());
        let offset = i64::try_from(digests.len()).unwrap_or_default();
        digests.push(Entry {
            position: LogPosition { topic: topics::DIGESTS.into(), partition: 0, offset },
            record: Record::Digest(Box::new(digest)),
        });
    }
    digests
}

fn options(key: Option<&SigningKey>) -> Options {
    Options {
        scope: Scope::Export(ExportHeader::default()),
        chain: Some(CHAIN.into()),
        public_key: key.map(SigningKey::verifying_key),
    }
}

fn problems(entries: &[Entry], key: Option<&SigningKey>) -> Vec<String> {
    verify(entries, &options(key)).findings.iter().map(|f| format!("{}: {}", f.position, f.problem)).collect()
}

fn find(entries: &[Entry], topic: &str, n: usize) -> usize {
    entries.iter().enumerate().filter(|(_, e)| e.position.topic == topic).nth(n).map(|(i, _)| i).unwrap_or(usize::MAX)
}

fn event_mut(entry: &mut Entry) -> &mut AuditEvent {
    match &mut entry.record {
        Record::Event(event) => event,
        _ => unreachable!("not an event"),
    }
}

fn any(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

/// `incidents` incidents as topics written in transactions hold them:
/// after each event its transaction's commit marker (an offset no reader
/// is given), sealed as the sealer seals, every `every` events, each range
/// starting where the last one ended.
fn transactional_log(incidents: u32, every: usize) -> Vec<Entry> {
    let (mut events, _) = split(&sealed_log(incidents, 1000, None));
    for event in &mut events {
        event.position.offset = event.position.offset * 2 + 1; // a marker at 0, 2, 4, …
    }
    let mut pending = Pending::default();
    for topic in topics::EVENT_TOPICS {
        pending.start(topic, 0, 0);
    }
    let (mut digests, mut last) = (Vec::new(), None);
    for chunk in events.chunks(every) {
        for e in chunk {
            let topic = topic_of(e.event().unwrap_or_else(|| unreachable!()));
            pending.push(topic, 0, e.position.offset, e.sealed_hash().unwrap_or_default().as_bytes());
        }
        let digest = next_digest(CHAIN, last.as_ref(), &pending, None);
        pending.clear();
        last = Some(digest.clone());
        let offset = i64::try_from(digests.len()).unwrap_or_default();
        digests.push(Entry {
            position: LogPosition { topic: topics::DIGESTS.into(), partition: 0, offset },
            record: Record::Digest(Box::new(digest)),
        });
    }
    events.sort_by(|a, b| a.position.cmp(&b.position));
    events.extend(digests);
    events
}
