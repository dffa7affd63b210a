//! An incident's timeline from the audit log alone: each event with its
//! time, service, who, what it says, and the time to heal split into its
//! phases (detect → diagnose → propose → wait for a person → apply).

use serde::Serialize;
use serde_json::{Value, json};

use mend_model::{ApplicationOutcome, Channel};

use crate::{AuditEvent, Entry, LogPosition};

/// One event of an incident.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub time: i64,
    pub position: LogPosition,
    pub service: String,
    /// What kind of event: detection, diagnosis, proposal, decision, application, agent_run, quarantined.
    pub what: &'static str,
    /// Who, for decisions and drafts.
    pub who: Option<String>,
    /// What it says, in short.
    pub summary: Value,
    pub hash: String,
}

/// An incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub incident: String,
    pub steps: Vec<Step>,
    /// Seconds per phase, when both ends are in the log.
    pub phases: Vec<(String, f64)>,
    /// From the first detection to the healing application.
    pub time_to_heal_seconds: Option<f64>,
}

pub(crate) fn summary(event: &AuditEvent) -> (&'static str, Option<String>, Value) {
    match event {
        AuditEvent::Quarantined(e) => {
            ("quarantined", None, json!({"offset": e.offset, "reason_kind": e.reason_kind, "reason": e.reason}))
        }
        AuditEvent::Detection(e) => (
            "detection",
            None,
            json!({"source": e.source, "writer_schema_id": e.writer_schema_id,
            "changes": e.changes.iter().map(|c| format!("{} {}", c.kind, c.field)).collect::<Vec<_>>(), "evidence": e.evidence}),
        ),
        AuditEvent::Diagnosis(e) => ("diagnosis", None, json!({"changes": e.changes, "evidence": e.evidence})),
        AuditEvent::Proposal(e) => (
            "proposal",
            e.origin.as_ref().and_then(|o| o.by.clone()),
            json!({"proposal_id": e.proposal_id, "policy": e.policy, "plan_hash": e.plan_hash, "steps": e.steps,
                   "rules": e.rules, "origin": e.origin, "refused": e.refused}),
        ),
        AuditEvent::Decision(e) => (
            "decision",
            Some(e.by.clone()),
            json!({"proposal_id": e.proposal_id, "outcome": e.outcome, "channel": e.channel, "plan_hash": e.plan_hash, "reason": e.reason}),
        ),
        AuditEvent::Application(e) => (
            "application",
            None,
            json!({"outcome": e.outcome, "statements": e.statements, "applied_at": e.applied_at,
            "replayed": e.replayed, "loaded": e.loaded, "still_quarantined": e.still_quarantined, "error": e.error}),
        ),
        AuditEvent::AgentRun(e) => (
            "agent_run",
            Some(e.model.clone()),
            json!({"outcome": e.outcome, "reason": e.reason,
            "proposal_id": e.proposal_id, "tools": e.tool_calls.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "reasoning": e.text, "plan": e.plan, "tokens": [e.input_tokens, e.output_tokens]}),
        ),
    }
}

/// The timeline of `incident` in `entries` (None when no event has it).
pub fn timeline(entries: &[Entry], incident: &str) -> Option<Timeline> {
    let mut steps: Vec<(Step, &AuditEvent)> = entries
        .iter()
        .filter_map(|entry| {
            let event = entry.event()?;
            let envelope = event.envelope();
            (envelope.incident_id.0 == incident).then(|| {
                let (what, who, summary) = summary(event);
                let step = Step {
                    time: envelope.time,
                    position: entry.position.clone(),
                    service: envelope.service.clone(),
                    what,
                    who,
                    summary,
                    hash: envelope.hash.clone(),
                };
                (step, event)
            })
        })
        .collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_by_key(|(s, _)| (s.time, s.position.clone()));
    let first = |what: &str| steps.iter().find(|(s, _)| s.what == what).map(|(s, _)| s.time);
    let healing = steps.iter().find_map(|(s, event)| match event {
        AuditEvent::Application(a) if a.outcome == ApplicationOutcome::Applied => Some((s.time, a.applied_at)),
        _ => None,
    });
    let healed = healing.map(|(time, _)| time);
    let applied = healing.and_then(|(_, applied_at)| applied_at).or(healed);
    // A decision by policy waits for nobody.
    let by_person = steps.iter().find_map(|(_, event)| match event {
        AuditEvent::Decision(d) => Some(d.channel != Channel::Policy),
        _ => None,
    });
    let by_person = by_person.unwrap_or(false);
    let waited = if by_person { "wait for a person" } else { "decide (by policy)" };
    let marks = [
        ("detect", first("quarantined").or(first("detection")), first("detection")),
        ("diagnose", first("detection"), first("diagnosis")),
        ("propose", first("diagnosis"), first("proposal")),
        (waited, first("proposal"), first("decision")),
        ("apply", first("decision"), applied),
        ("replay", applied, healed),
    ];
    let phases = marks
        .iter()
        .filter_map(|(name, from, to)| Some(((*name).to_owned(), (to.as_ref()? - from.as_ref()?) as f64 / 1000.0)))
        .collect();
    let time_to_heal_seconds = healed.zip(first("detection")).map(|(h, d)| (h - d) as f64 / 1000.0);
    let steps = steps.into_iter().map(|(step, _)| step).collect();
    Some(Timeline { incident: incident.to_owned(), steps, phases, time_to_heal_seconds })
}
