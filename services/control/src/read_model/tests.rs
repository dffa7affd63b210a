//! The projection alone: audit events in, incidents out, no broker.

use std::collections::BTreeMap;

use mend_model::events::{FieldChange, Held, IncidentId, ProposalOrigin, Quarantined};
use mend_model::{ChangeKind, DetectionSource, QuarantineKind};

use super::*;

const DATASET: &str = "orders";

fn incident_id() -> IncidentId {
    IncidentId::for_drift(DATASET, 7)
}

/// An envelope of the incident at `time` (milliseconds).
fn at(time: i64) -> Envelope {
    let mut envelope = Envelope::new("test", DATASET, incident_id());
    envelope.time = time;
    envelope
}

fn detection(time: i64) -> AuditEvent {
    AuditEvent::Detection(Detection {
        envelope: at(time),
        source: DetectionSource::SchemaId,
        topic: "shop.orders".into(),
        partition: 0,
        offset: 10,
        subject: "shop.orders-value".into(),
        writer_schema_id: Some(7),
        contract_schema_id: Some(6),
        changes: vec![FieldChange::new(ChangeKind::FieldRenamed, "customer_id")],
        evidence: BTreeMap::new(),
    })
}

fn proposal(time: i64, id: &str, policy: Policy, origin: ProposalOrigin) -> AuditEvent {
    AuditEvent::Proposal(Proposal {
        envelope: at(time),
        proposal_id: id.into(),
        writer_schema_id: Some(7),
        changes: Vec::new(),
        steps: Vec::new(),
        plan_hash: Proposal::hash_steps(&[]),
        policy,
        rules: vec![format!("field_renamed => {policy}")],
        origin: Some(origin),
        refused: Vec::new(),
        blast_radius: None,
    })
}

fn rules_proposal(time: i64, policy: Policy) -> AuditEvent {
    proposal(time, &Proposal::rules_id(&incident_id()), policy, ProposalOrigin::rules())
}

fn decision(time: i64, proposal_id: &str, outcome: Verdict, channel: Channel) -> AuditEvent {
    AuditEvent::Decision(Decision {
        envelope: at(time),
        proposal_id: proposal_id.into(),
        plan_hash: Proposal::hash_steps(&[]),
        writer_schema_id: Some(7),
        steps: Vec::new(),
        outcome,
        by: "alice".into(),
        channel,
        reason: (outcome == Verdict::Rejected).then(|| "wrong producer".into()),
    })
}

fn application(time: i64, replayed: i64, still_quarantined: i64) -> AuditEvent {
    AuditEvent::Application(Application {
        envelope: at(time),
        proposal_id: Proposal::rules_id(&incident_id()),
        decision_id: "d".into(),
        outcome: ApplicationOutcome::Applied,
        contract_schema_id: Some(7),
        statements: 1,
        replayed,
        loaded: replayed - still_quarantined,
        still_quarantined,
        held: (0..still_quarantined).map(|offset| Held { partition: 0, offset, reason: "a string".into() }).collect(),
        applied_at: Some(time),
        error: None,
        lock_waits: Vec::new(),
        contract_before: None,
    })
}

fn project(events: impl IntoIterator<Item = AuditEvent>) -> Incident {
    let mut model = ReadModel::default();
    for event in events {
        model.apply(event);
    }
    let mut incidents = model.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    incidents.remove(0)
}

#[test]
fn an_approved_rename_heals_with_its_times() {
    let rules = Proposal::rules_id(&incident_id());
    let waiting = project([detection(1_000), rules_proposal(1_500, Policy::Approve)]);
    assert_eq!(waiting.status, IncidentStatus::AwaitingApproval);
    assert_eq!(waiting.proposal_id.as_deref(), Some(rules.as_str()));
    assert_eq!((waiting.writer_schema_id, waiting.contract_schema_id), (Some(7), Some(6)));

    let healed = project([
        detection(1_000),
        rules_proposal(1_500, Policy::Approve),
        decision(3_500, &rules, Verdict::Approved, Channel::Cli),
        application(4_000, 12, 0),
    ]);
    assert_eq!(healed.status, IncidentStatus::Healed);
    assert_eq!(healed.waiting_for_person_seconds, Some(2.0));
    assert_eq!(healed.time_to_heal_seconds, Some(3.0));
    assert_eq!(healed.healed_at, Some(4_000));
    let applied = healed.application.as_ref().map(|a| (a.replayed, a.loaded));
    assert_eq!(applied, Some((12, 12)));
}

#[test]
fn a_policy_decision_is_no_wait_for_a_person() {
    let rules = Proposal::rules_id(&incident_id());
    let healed = project([
        detection(1_000),
        rules_proposal(1_100, Policy::Auto),
        decision(1_200, &rules, Verdict::Approved, Channel::Policy),
        application(1_300, 0, 0),
    ]);
    assert_eq!(healed.status, IncidentStatus::Healed);
    assert_eq!(healed.waiting_for_person_seconds, None);
}

#[test]
fn records_a_replay_could_not_load_keep_the_incident_held() {
    let rules = Proposal::rules_id(&incident_id());
    let held = project([
        detection(1_000),
        rules_proposal(1_100, Policy::Auto),
        decision(1_200, &rules, Verdict::Approved, Channel::Policy),
        application(1_300, 10, 2),
    ]);
    assert_eq!(held.status, IncidentStatus::Held);
    assert_eq!(held.healed_at, None);
    assert_eq!(held.application.map(|a| a.held.len()), Some(2));
}

#[test]
fn the_first_decision_stands() {
    let rules = Proposal::rules_id(&incident_id());
    let rejected = project([
        detection(1_000),
        rules_proposal(1_100, Policy::Approve),
        decision(2_000, &rules, Verdict::Rejected, Channel::Slack),
        decision(3_000, &rules, Verdict::Approved, Channel::Cli),
    ]);
    assert_eq!(rejected.status, IncidentStatus::Blocked);
    let decision = rejected.decision.as_ref().map(|d| (d.outcome, d.channel, d.reason.as_deref()));
    assert_eq!(decision, Some((Verdict::Rejected, Channel::Slack, Some("wrong producer"))));
}

#[test]
fn an_accepted_draft_replaces_the_blocked_rules_proposal_and_a_refused_one_does_not() {
    let refused = proposal(2_500, "draft-refused", Policy::Block, ProposalOrigin::draft("claude", "cast it"));
    let accepted = proposal(3_000, "draft-ok", Policy::Approve, ProposalOrigin::draft("claude", "a new column"));
    let incident = project([
        detection(1_000),
        rules_proposal(1_100, Policy::Block),
        refused,
        accepted,
        // The rules' proposal read again (a redelivery) does not take the
        // incident back from the draft that waits.
        rules_proposal(3_500, Policy::Block),
    ]);
    assert_eq!(incident.status, IncidentStatus::AwaitingApproval);
    assert_eq!(incident.proposal_id.as_deref(), Some("draft-ok"));
    let drafts: Vec<(&str, bool, Option<&str>)> =
        incident.drafts.iter().map(|d| (d.proposal_id.as_str(), d.accepted, d.by.as_deref())).collect();
    assert_eq!(drafts, [("draft-refused", false, Some("claude")), ("draft-ok", true, Some("claude"))]);
}

#[test]
fn a_draft_after_the_decision_is_listed_but_changes_nothing() {
    let rules = Proposal::rules_id(&incident_id());
    let incident = project([
        detection(1_000),
        rules_proposal(1_100, Policy::Approve),
        decision(1_500, &rules, Verdict::Approved, Channel::Api),
        proposal(2_000, "late", Policy::Approve, ProposalOrigin::draft("claude", "late")),
    ]);
    assert_eq!(incident.proposal_id.as_deref(), Some(rules.as_str()));
    assert_eq!(incident.drafts.len(), 1);
}

#[test]
fn events_of_an_incident_never_detected_are_not_listed_and_quarantine_is_not_projected() {
    let mut model = ReadModel::default();
    model.apply(decision(1_000, "p", Verdict::Approved, Channel::Cli));
    model.apply(AuditEvent::Quarantined(Quarantined {
        envelope: at(1_000),
        reason_kind: QuarantineKind::SchemaMismatch,
        reason: "r".into(),
        topic: "shop.orders".into(),
        partition: 0,
        offset: 1,
        key: None,
        value: None,
        writer_schema_id: Some(7),
    }));
    assert!(model.incidents().is_empty());
}
