//! `verify` throughput: a chained log of 200,000 events (each incident a
//! detection, a diagnosis, a proposal, a decision and an application, hashed
//! and chained as the stages do), sealed as the sealer seals it (a signed
//! digest every 500 events), written as an export, read back and verified
//! with the public key. Prints events per second (goal: at least
//! 100,000/s), and the sealer's own cost per event (hashing its range and
//! signing its digests). No infrastructure needed.

use std::time::Instant;

use mend_audit::export::{ExportHeader, export_lines};
use mend_audit::seal::{Pending, next_digest};
use mend_audit::verify::{Options, Scope};
use mend_audit::{Entry, LogPosition, Record, keys, read_export, verify};
use mend_model::events::{
    Application, Decision, Detection, Diagnosis, Envelope, Event, FieldChange, IncidentId, PlanStep, Proposal,
};
use mend_model::{ApplicationOutcome, ChangeKind, Channel, DetectionSource, Policy, StepKind, Verdict};
use serde_json::json;

const INCIDENTS: usize = 40_000;

fn main() -> anyhow::Result<()> {
    let mut lines = String::new();
    let mut offsets = [0i64; 5];
    let mut reads: Vec<(&'static str, i64, String)> = Vec::new();
    let mut push = |topic: usize, name: &'static str, event: serde_json::Value| {
        let hash = event["envelope"]["hash"].as_str().unwrap_or_default().to_owned();
        reads.push((name, offsets[topic], hash));
        let line = json!({"topic": name, "partition": 0, "offset": offsets[topic], "event": event});
        offsets[topic] += 1;
        lines.push_str(&line.to_string());
        lines.push('\n');
    };
    for n in 0..INCIDENTS {
        let dataset = format!("d{}", n % 50);
        let incident = IncidentId::for_drift(&dataset, u32::try_from(n).unwrap_or_default());
        let changes = vec![FieldChange::new(ChangeKind::FieldAdded, "coupon")];
        let mut detection = Detection {
            envelope: Envelope::new("detector", &dataset, incident),
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
            policy: Policy::Auto,
            rules: vec!["field_added(coupon) => auto".into()],
            origin: None,
            refused: Vec::new(),
            blast_radius: None,
        };
        proposal.seal();
        let decision = Decision::on(&proposal, "proposer", Verdict::Approved, "policy".into(), Channel::Policy, None);
        let mut application = Application {
            envelope: Envelope::answering("applier", &decision.envelope),
            proposal_id: proposal.proposal_id.clone(),
            decision_id: decision.envelope.event_id.clone(),
            outcome: ApplicationOutcome::Applied,
            contract_schema_id: Some(2),
            statements: 1,
            replayed: 10,
            loaded: 10,
            still_quarantined: 0,
            held: Vec::new(),
            applied_at: None,
            error: None,
            lock_waits: Vec::new(),
            contract_before: None,
        };
        application.seal();
        push(0, "mend.detections", serde_json::to_value(&detection)?);
        push(1, "mend.diagnoses", serde_json::to_value(&diagnosis)?);
        push(2, "mend.proposals", serde_json::to_value(&proposal)?);
        push(3, "mend.decisions", serde_json::to_value(&decision)?);
        push(4, "mend.applications", serde_json::to_value(&application)?);
    }
    let events = INCIDENTS * 5;
    // Sealed as the sealer seals: a signed digest every 500 events.
    let key = keys::generate()?;
    let sealing = Instant::now();
    let mut digests = Vec::new();
    let mut last = None;
    for chunk in reads.chunks(500) {
        let mut pending = Pending::default();
        for (topic, offset, hash) in chunk {
            pending.push(topic, 0, *offset, hash.as_bytes());
        }
        let digest = next_digest("bench", last.as_ref(), &pending, Some(&key));
        last = Some(digest.clone());
        let offset = i64::try_from(digests.len())?;
        digests.push(Entry {
            position: LogPosition { topic: "mend.audit.digests".into(), partition: 0, offset },
            record: Record::Digest(Box::new(digest)),
        });
    }
    let sealed = sealing.elapsed();
    let header = ExportHeader { chain: Some("bench".into()), ..ExportHeader::default() };
    let digest_lines = export_lines(&header, &digests);
    let (head, tail) = digest_lines.split_once('\n').unwrap_or_default();
    let text = format!("{head}\n{lines}{tail}");
    let started = Instant::now();
    let (header, entries) = read_export(&text)?;
    let read = started.elapsed();
    let options = Options { scope: Scope::Export(header), chain: None, public_key: Some(key.verifying_key()) };
    let report = verify(&entries, &options);
    let total = started.elapsed();
    anyhow::ensure!(report.is_clean(), "{:?}", &report.findings[..report.findings.len().min(3)]);
    anyhow::ensure!(report.events == events && report.digests == digests.len(), "{report:?}");
    println!("audit bench: {events} events and {} digests ({} MiB of JSON lines)", digests.len(), text.len() >> 20);
    println!("read the export          {:>9.0} events/s", events as f64 / read.as_secs_f64());
    println!("read and verify          {:>9.0} events/s", events as f64 / total.as_secs_f64());
    println!(
        "sealing (range hashes and signatures) {:>9.0} events/s ({:.2} µs per event)",
        events as f64 / sealed.as_secs_f64(),
        sealed.as_secs_f64() * 1e6 / events as f64
    );
    Ok(())
}
