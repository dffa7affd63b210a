//! Tampering with a sealed log, each kind found and located: a log of
//! incidents chained as the stages chain them, sealed as the sealer seals
//! it, exported and read back as an auditor would.

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

#[test]
fn a_clean_sealed_log_verifies_with_and_without_the_key() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let log = sealed_log(10, 7, Some(&key));
    let report = verify(&log, &options(Some(&key)));
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!((report.events, report.digests), (50, 8));
    let report = verify(&log, &options(None));
    assert!(report.is_clean() && report.notes.iter().any(|n| n.contains("signatures not checked")), "{report:?}");
    let unsigned = sealed_log(10, 7, None);
    let report = verify(&unsigned, &options(None));
    assert!(report.is_clean() && report.notes.iter().any(|n| n.contains("unsigned")), "{report:?}");
    assert!(any(&problems(&unsigned, Some(&key)), "is not signed, but a public key was given"));
    Ok(())
}

#[test]
fn an_event_edited_and_rehashed_is_located_by_its_chain_and_its_sealed_range() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let mut log = sealed_log(10, 7, Some(&key));
    let at = find(&log, topics::PROPOSALS, 3);
    if let AuditEvent::Proposal(p) = event_mut(&mut log[at]) {
        p.rules.push("nothing to see here".into());
        p.seal();
    }
    let found = problems(&log, Some(&key));
    assert!(any(&found, "mend.decisions/0@3: its prev_hash is not the hash"), "{found:?}");
    assert!(any(&found, "do not hash to what digest"), "{found:?}");
    assert!(!any(&found, "mend.proposals/0@3: edited"), "{found:?}");
    Ok(())
}

#[test]
fn a_decision_whose_plan_hash_changed_is_edited() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let mut log = sealed_log(4, 7, Some(&key));
    let at = find(&log, topics::DECISIONS, 2);
    if let AuditEvent::Decision(d) = event_mut(&mut log[at]) {
        d.plan_hash = "0".repeat(64);
    }
    let found = problems(&log, Some(&key));
    assert!(any(&found, "mend.decisions/0@2: edited"), "{found:?}");
    // Re-hashed, and the application re-chained to it: the plan it carries
    // no longer hashes to it, nor is it the proposal's.
    let mut rehashed = sealed_log(4, 7, None);
    let at = find(&rehashed, topics::DECISIONS, 2);
    let mut decided = None;
    if let AuditEvent::Decision(d) = event_mut(&mut rehashed[at]) {
        d.plan_hash = "0".repeat(64);
        d.seal();
        decided = Some(d.envelope.hash.clone());
    }
    let next = find(&rehashed, topics::APPLICATIONS, 2);
    if let AuditEvent::Application(a) = event_mut(&mut rehashed[next]) {
        a.envelope.prev_hash = decided;
        a.seal();
    }
    let found = problems(&rehashed, None);
    assert!(any(&found, "mend.decisions/0@2: the plan it carries does not hash to its plan_hash"), "{found:?}");
    assert!(any(&found, "mend.decisions/0@2: it decides plan 0000"), "{found:?}");
    assert!(!any(&found, "mend.applications/0@2: its prev_hash"), "{found:?}");
    Ok(())
}

#[test]
fn an_event_removed_is_named_by_the_digest_that_sealed_it() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let mut log = sealed_log(10, 7, Some(&key));
    // The last application: nothing answers it, so only the seal knows.
    let at = find(&log, topics::APPLICATIONS, 9);
    log.remove(at);
    let found = problems(&log, Some(&key));
    assert!(any(&found, "mend.applications/0@9: removed: offset 9 sealed by digest"), "{found:?}");
    Ok(())
}

#[test]
fn two_events_swapped_are_found_as_lines_or_as_contents() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let log = sealed_log(10, 7, Some(&key));
    let (a, b) = (find(&log, topics::DETECTIONS, 1), find(&log, topics::DETECTIONS, 2));
    let mut lines = log.clone();
    lines.swap(a, b);
    assert!(any(&problems(&lines, Some(&key)), "out of order"));
    // Contents swapped, positions kept: every event's own hash and chain hold.
    let mut contents = log.clone();
    let (first, second) = (contents[a].record.clone(), contents[b].record.clone());
    (contents[a].record, contents[b].record) = (second, first);
    let found = problems(&contents, Some(&key));
    assert!(any(&found, "do not hash to what digest"), "{found:?}");
    assert!(!any(&found, ": edited:") && !any(&found, "prev_hash"), "{found:?}");
    Ok(())
}

#[test]
fn a_chain_rebuilt_without_the_key_fails_only_the_signatures() -> Result<(), keys::KeyError> {
    let (key, forger) = (keys::generate()?, keys::generate()?);
    let log = sealed_log(6, 7, Some(&key));
    // Mallory rewrites a decision, re-hashes it and what answers it, and
    // reseals every digest consistently, with a key of her own.
    let (mut events, _) = split(&log);
    let decision = find(&events, topics::DECISIONS, 2);
    let mut decided = None;
    if let AuditEvent::Decision(d) = event_mut(&mut events[decision]) {
        d.by = "mallory".into();
        d.seal();
        decided = Some(d.envelope.clone());
    }
    let application = find(&events, topics::APPLICATIONS, 2);
    if let (AuditEvent::Application(a), Some(decided)) = (event_mut(&mut events[application]), &decided) {
        a.envelope.prev_hash = Some(decided.hash.clone());
        a.seal();
    }
    let mut forged = events.clone();
    forged.extend(digests_of(&events, 7, Some(&forger)));
    assert!(problems(&forged, None).is_empty(), "without the public key it cannot be told");
    let found = problems(&forged, Some(&key));
    assert_eq!(found.iter().filter(|p| p.contains("signature does not hold")).count(), 5, "{found:?}");
    Ok(())
}

#[test]
fn a_second_copy_of_an_event_is_a_retry_when_the_same_and_a_forgery_when_not() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let log = sealed_log(6, 7, Some(&key));
    let (events, _) = split(&log);
    let decision = find(&events, topics::DECISIONS, 2);
    let next = events.iter().filter(|e| e.position.topic == topics::DECISIONS).count();
    // Someone who may write to the topic, but has no signing key, writes a
    // decision again; the sealer seals what is in the topic.
    let with_copy = |edit: bool| {
        let mut copy = events[decision].clone();
        copy.position.offset = i64::try_from(next).unwrap_or_default();
        if let AuditEvent::Decision(d) = event_mut(&mut copy)
            && edit
        {
            d.by = "mallory".into();
            d.seal();
        }
        let mut written = events.clone();
        written.push(copy);
        let mut log = written.clone();
        log.extend(digests_of(&written, 7, Some(&key)));
        log
    };
    let retried = with_copy(false);
    let report = verify(&retried, &options(Some(&key)));
    assert!(report.is_clean() && report.notes.iter().any(|n| n.contains("1 events are written twice")), "{report:?}");
    let found = problems(&with_copy(true), Some(&key));
    assert!(any(&found, "is also at mend.decisions/0@2, with other content"), "{found:?}");
    // A digest whose delivery was retried: the same digest twice.
    let mut resent = log.clone();
    let Some(mut copy) = resent.last().cloned() else { unreachable!("a sealed log ends with a digest") };
    copy.position.offset += 1;
    resent.push(copy);
    let report = verify(&resent, &options(Some(&key)));
    assert!(report.is_clean() && report.notes.iter().any(|n| n.contains("1 digests are written twice")), "{report:?}");
    Ok(())
}

#[test]
fn the_sealer_goes_on_from_its_own_chain_and_not_from_a_forged_digest() -> Result<(), keys::KeyError> {
    use crate::seal::Chain;
    use mend_model::digest::AuditDigest;
    let (key, forger, next_key) = (keys::generate()?, keys::generate()?, keys::generate()?);
    let id = |k: &SigningKey| keys::key_id(&k.verifying_key());
    let log = sealed_log(6, 7, Some(&key));
    let written: Vec<AuditDigest> = log
        .iter()
        .filter_map(|e| match &e.record {
            Record::Digest(d) => Some((**d).clone()),
            _ => None,
        })
        .collect();
    let mut chain = Chain::default();
    for digest in &written {
        assert_eq!(chain.refuses(digest, Some(&id(&key))), None);
        chain.follow(digest.clone());
    }
    // What someone who may write to the topic could put after it: a digest
    // that seals offsets far ahead, signed with another key, unsigned, or
    // naming the sealer's key without its signature; and a retried copy.
    let ahead = |signer: Option<&SigningKey>| {
        let mut pending = Pending::default();
        pending.push(topics::DECISIONS, 0, 1_000_000, b"x");
        next_digest(CHAIN, chain.last.as_ref(), &pending, signer)
    };
    let own = Some(id(&key));
    let refused = |digest: &AuditDigest| chain.refuses(digest, own.as_deref()).unwrap_or_default();
    assert!(refused(&ahead(Some(&forger))).contains("neither the chain's key nor this sealer's"));
    assert!(refused(&ahead(None)).contains("unsigned, after signed digests"));
    let mut claimed = ahead(Some(&forger));
    claimed.key_id = own.clone();
    claimed.hash = claimed.compute_hash();
    assert!(refused(&claimed).contains("signature does not hold"));
    assert!(written.last().is_some_and(|last| refused(last).contains("is not #5")));
    assert_eq!(chain.refuses(&ahead(Some(&key)), own.as_deref()), None);
    // A sealer given a new key goes on from the chain the old one signed.
    let mut rotated = Chain::default();
    for digest in &written {
        assert_eq!(rotated.refuses(digest, Some(&id(&next_key))), None);
        rotated.follow(digest.clone());
    }
    assert_eq!(rotated.refuses(&ahead(Some(&next_key)), Some(&id(&next_key))), None);
    Ok(())
}

#[test]
fn an_export_is_cut_where_the_log_ended_when_it_was_asked_for() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let log = sealed_log(6, 7, Some(&key));
    let (events, digests) = split(&log);
    let ends = |entries: &[Entry]| {
        let mut cut = crate::Cut::new();
        for e in entries {
            let end = cut.entry((e.position.topic.clone(), e.position.partition)).or_insert(0);
            *end = (*end).max(e.position.offset + 1);
        }
        cut
    };
    // Everything sealed: all of it, whatever came after the cut.
    assert_eq!(crate::unsealed_partitions(&digests, CHAIN, &ends(&events)), 0);
    assert_eq!(crate::as_of(log.clone(), CHAIN, &ends(&events[..10])).len(), log.len());
    // Written after the last digest: after the cut, left for a later
    // export; before it, waited for (and kept, if the wait ends first).
    let mut late = events[0].clone();
    late.position.offset = 1_000;
    let mut with_late = log.clone();
    with_late.push(late.clone());
    assert_eq!(crate::as_of(with_late.clone(), CHAIN, &ends(&events)).len(), log.len());
    let mut cut = ends(&events);
    cut.insert((late.position.topic.clone(), 0), 1_001);
    assert_eq!(crate::unsealed_partitions(&digests, CHAIN, &cut), 1);
    assert_eq!(crate::as_of(with_late, CHAIN, &cut).len(), log.len() + 1);
    Ok(())
}

#[test]
fn a_digest_removed_is_found_in_the_middle_and_at_the_end() -> Result<(), keys::KeyError> {
    let key = keys::generate()?;
    let log = sealed_log(10, 7, Some(&key));
    let mut middle = log.clone();
    middle.remove(find(&log, topics::DIGESTS, 3));
    let found = problems(&middle, Some(&key));
    assert!(any(&found, "digests #3..#3 are missing"), "{found:?}");
    assert!(any(&found, "in no digest, though later events are sealed: a digest removed?"), "{found:?}");
    // The last one: its events are sealed by nothing in the export.
    let mut end = log.clone();
    end.remove(find(&log, topics::DIGESTS, 7));
    let found = problems(&end, Some(&key));
    assert!(any(&found, "not sealed by any digest of the export"), "{found:?}");
    // Live, an event the sealer has not reached yet is not a finding for a minute.
    let now = mend_model::events::now_millis();
    let live = |now: i64| Options {
        scope: Scope::Live { now },
        chain: Some(CHAIN.into()),
        public_key: Some(key.verifying_key()),
    };
    let report = verify(&end, &live(now));
    assert!(report.is_clean() && report.notes.iter().any(|n| n.contains("not sealed yet")), "{report:?}");
    let report = verify(&end, &live(now + 120_000));
    assert!(report.findings.iter().any(|f| f.problem.contains("is the sealer of this chain running?")), "{report:?}");
    Ok(())
}

#[test]
fn an_export_of_one_dataset_keeps_the_others_as_hashes_and_still_verifies() -> Result<(), Box<dyn std::error::Error>> {
    let key = keys::generate()?;
    let log = sealed_log(10, 7, Some(&key));
    let selection = Selection { chain: CHAIN.into(), dataset: Some("orders".into()), from: None, to: None };
    let (header, entries) = select(&log, &selection);
    let text = export_lines(&header, &entries);
    let (header, read) = read_export(&text)?;
    assert_eq!(header.dataset.as_deref(), Some("orders"));
    let options = Options { scope: Scope::Export(header), chain: None, public_key: Some(key.verifying_key()) };
    let report = verify(&read, &options);
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.events, 25, "only the orders events in full");
    assert!(text.lines().all(|l| !l.contains("\"payments\"")), "no other dataset's content");
    // One of its events removed from the file.
    let at = read.iter().position(|e| e.event().is_some_and(|e| matches!(e, AuditEvent::Decision(_)))).unwrap_or(0);
    let mut removed = read.clone();
    let gone = removed.remove(at).position;
    let found: Vec<String> =
        verify(&removed, &options).findings.iter().map(|f| format!("{}: {}", f.position, f.problem)).collect();
    assert!(any(&found, &format!("{gone}: removed")), "{found:?}");
    Ok(())
}

#[test]
fn an_export_whose_header_or_redactions_were_edited_is_found() -> Result<(), Box<dyn std::error::Error>> {
    let key = keys::generate()?;
    let log = sealed_log(10, 7, Some(&key));
    let selection = Selection { chain: CHAIN.into(), dataset: Some("orders".into()), from: None, to: None };
    let (header, entries) = select(&log, &selection);
    let text = export_lines(&header, &entries);
    let (header, read) = read_export(&text)?;
    let check = |header: &ExportHeader, entries: &[Entry]| -> Vec<String> {
        let options =
            Options { scope: Scope::Export(header.clone()), chain: None, public_key: Some(key.verifying_key()) };
        verify(entries, &options).findings.iter().map(|f| format!("{}: {}", f.position, f.problem)).collect()
    };
    assert!(check(&header, &read).is_empty());
    // The header names another dataset: every event in full is refused.
    let other = ExportHeader { dataset: Some("payments".into()), ..header.clone() };
    let found = check(&other, &read);
    assert_eq!(found.iter().filter(|f| f.contains("the export's header selects dataset payments")).count(), 25);
    // A time window added to the header: the events outside it are refused.
    let times: Vec<i64> = read.iter().filter_map(|e| e.event().map(|e| e.envelope().time)).collect();
    let last = times.iter().max().ok_or("no events")?;
    let windowed = ExportHeader { from: Some(last + 1), ..header.clone() };
    assert!(any(&check(&windowed, &read), "outside the export's window"));
    // A decision given as a hash only, as another dataset's would be: the
    // application answering it says an event of its incident is hidden.
    let at = read
        .iter()
        .position(|e| e.event().is_some_and(|e| matches!(e, AuditEvent::Decision(_))))
        .ok_or("no decision")?;
    let mut hidden = read.clone();
    let envelope = hidden[at].event().ok_or("no event")?.envelope().clone();
    hidden[at].record = Record::Redacted { event_id: envelope.event_id.clone(), hash: envelope.hash.clone() };
    assert!(any(&check(&header, &hidden), "which the export gives as a hash only"), "{:?}", check(&header, &hidden));
    // The header removed: a whole export has no hash-only lines.
    let headless = text.split_once('\n').map(|(_, rest)| rest).unwrap_or_default();
    let (whole, read) = read_export(headless)?;
    assert_eq!(whole, ExportHeader::default());
    assert!(any(&check(&whole, &read), "its content was removed"));
    // Nothing at all is not an export that verifies.
    assert!(matches!(read_export(" \n"), Err(crate::AuditError::Export { line: 1, .. })));
    Ok(())
}

#[test]
fn an_export_of_a_time_window_verifies_and_its_removals_are_found() -> Result<(), Box<dyn std::error::Error>> {
    let key = keys::generate()?;
    let log = sealed_log(10, 7, Some(&key));
    let times: Vec<i64> = log.iter().filter_map(|e| e.event().map(|e| e.envelope().time)).collect();
    let (from, to) = (times[20], times[30]);
    let selection = Selection { chain: CHAIN.into(), dataset: None, from: Some(from), to: Some(to) };
    let (header, entries) = select(&log, &selection);
    let (header, read) = read_export(&export_lines(&header, &entries))?;
    let options = Options { scope: Scope::Export(header), chain: None, public_key: Some(key.verifying_key()) };
    let report = verify(&read, &options);
    assert!(report.is_clean(), "{:?}", report.findings);
    let mut removed = read.clone();
    let at = removed.iter().position(|e| e.event().is_some()).unwrap_or(0);
    let gone = removed.remove(at).position;
    let found: Vec<String> =
        verify(&removed, &options).findings.iter().map(|f| format!("{}: {}", f.position, f.problem)).collect();
    assert!(any(&found, &format!("{gone}: removed")), "{found:?}");
    Ok(())
}

#[test]
fn a_log_large_enough_to_be_read_and_checked_on_every_core_is_checked_whole() -> Result<(), Box<dyn std::error::Error>>
{
    let key = keys::generate()?;
    let log = sealed_log(2_100, 500, Some(&key));
    let selection = Selection { chain: CHAIN.into(), ..Selection::default() };
    let (header, entries) = select(&log, &selection);
    let mut lines: Vec<String> = export_lines(&header, &entries).lines().map(str::to_owned).collect();
    let (header, read) = read_export(&lines.join("\n"))?;
    let options = Options { scope: Scope::Export(header), chain: None, public_key: Some(key.verifying_key()) };
    let report = verify(&read, &options);
    assert!(report.is_clean() && report.events == 10_500, "{:?}", &report.findings[..report.findings.len().min(3)]);
    // An event edited in the last chunk, and a broken line, are found.
    let at = lines.iter().rposition(|l| l.contains("\"by\":\"alice\"")).unwrap_or(0);
    lines[at] = lines[at].replace("\"by\":\"alice\"", "\"by\":\"mallory\"");
    let (header, read) = read_export(&lines.join("\n"))?;
    let options = Options { scope: Scope::Export(header), ..options };
    let found: Vec<String> = verify(&read, &options).findings.iter().map(|f| f.problem.clone()).collect();
    assert!(found.iter().any(|f| f.starts_with("edited")), "{found:?}");
    lines[at].truncate(20);
    assert!(matches!(read_export(&lines.join("\n")), Err(crate::AuditError::Export { line, .. }) if line == at + 1));
    Ok(())
}

/// The datum of `event` as its schema encodes it.
fn datum<E: Event + serde::Serialize>(event: &E) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let schema = apache_avro::Schema::parse_str(E::SCHEMA)?;
    #[allow(deprecated)]
    let datum = apache_avro::to_avro_datum(&schema, apache_avro::to_value(event)?.resolve(&schema)?)?;
    Ok(datum)
}

#[test]
fn the_sealer_reads_every_event_schemas_hash_from_its_envelope_alone() -> Result<(), Box<dyn std::error::Error>> {
    use crate::seal::envelope_hash_field;
    use mend_model::events::{AgentRun, Quarantined};
    for schema in [
        Quarantined::SCHEMA,
        Detection::SCHEMA,
        Diagnosis::SCHEMA,
        Proposal::SCHEMA,
        Decision::SCHEMA,
        Application::SCHEMA,
        AgentRun::SCHEMA,
    ] {
        let parsed = apache_avro::Schema::parse_str(schema)?;
        assert!(envelope_hash_field(&parsed).is_some(), "{schema}");
    }
    for event in incident("orders", 7) {
        let (schema, datum, hash) = match &event {
            AuditEvent::Detection(e) => (Detection::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Diagnosis(e) => (Diagnosis::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Proposal(e) => (Proposal::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Decision(e) => (Decision::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Application(e) => (Application::SCHEMA, datum(e)?, &e.envelope.hash),
            other => unreachable!("{other:?}"),
        };
        let field = envelope_hash_field(&apache_avro::Schema::parse_str(schema)?).ok_or("no envelope")?;
        assert!(!hash.is_empty());
        assert_eq!(field.read(&datum), Some(hash.as_str()));
    }
    Ok(())
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

#[test]
fn the_offsets_of_transaction_markers_are_sealed_and_not_missing() {
    let log = transactional_log(6, 4);
    let report = verify(&log, &options(None));
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // An event removed from the middle is still found.
    let at = find(&log, topics::DIAGNOSES, 2);
    let mut removed = log.clone();
    removed.remove(at);
    let found = problems(&removed, None);
    assert!(any(&found, "1 of the 4 events digest #5 sealed here are not in the log"), "{found:?}");
}

#[test]
fn a_stage_that_answers_an_event_twice_is_counted_by_service() {
    let mut log = sealed_log(4, 1000, None);
    assert!(verify(&log, &options(None)).retried.is_empty(), "one answer per cause");
    // The diagnoser handled a detection again: a second diagnosis of it,
    // a new event (its own id and hash) answering the same detection.
    let (mut events, _) = split(&log);
    let at = find(&events, topics::DIAGNOSES, 1);
    let mut again = events[at].clone();
    if let AuditEvent::Diagnosis(d) = event_mut(&mut again) {
        d.envelope.event_id = uuid::Uuid::now_v7().to_string();
        d.seal();
    }
    again.position.offset = 1_000;
    events.push(again);
    log = events;
    let report = verify(&log, &options(None));
    assert_eq!(report.retried.get("diagnoser"), Some(&1), "{:?}", report.retried);
    assert_eq!(report.retried.len(), 1, "{:?}", report.retried);
    assert!(
        report.notes.iter().any(|n| n.contains("retried copies") && n.contains("diagnoser 1")),
        "{:?}",
        report.notes
    );
}
