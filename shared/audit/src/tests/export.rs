//! Exports: cut where the log ended, one dataset's or one window's, and
//! edits to their headers or redactions found.

use super::*;

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

/// The demo's exports waited 30 s for the sealer and gave up: a partition
/// written in transactions ends with a commit marker no digest seals, and
/// the wait took the partition's end for its last event.
#[test]
fn a_partition_that_ends_with_a_commit_marker_is_sealed_when_its_events_are() {
    let log = transactional_log(3, 4);
    let (_, digests) = split(&log);
    // The brokers' ends: one past each partition's last marker.
    let mut cut = crate::Cut::new();
    for entry in log.iter().filter(|e| e.position.topic != topics::DIGESTS) {
        let end = cut.entry((entry.position.topic.clone(), entry.position.partition)).or_insert(0);
        *end = (*end).max(entry.position.offset + 2);
    }
    assert!(crate::unsealed_partitions(&digests, CHAIN, &cut) > 0, "the markers themselves are never sealed");
    assert_eq!(crate::unsealed_partitions(&digests, CHAIN, &crate::event_ends(&log, &cut)), 0);
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
