//! `verify` on a log: every kind of tampering found and located, retries
//! told apart from forgeries, transaction markers not taken for gaps.

use super::*;

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
