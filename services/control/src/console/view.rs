//! What the pages print, computed from the typed incident: words for
//! states, times, change classes and what a decision will do. Templates
//! only lay it out.

use mend_model::api::Incident;
use mend_model::events::{FieldChange, PlanStep};
use mend_model::{ChangeKind, Channel, IncidentStatus, StepKind, Verdict};

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `2026-12-04 16:20:03 UTC`.
pub(crate) fn utc(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(time).to_string();
    format!("{} UTC", text.trim_end_matches('Z').replace('T', " "))
}

/// `16:27:59.123` (UTC), for events a few milliseconds apart.
pub(crate) fn clock(ms: i64) -> String {
    let day = ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}", day / 3_600_000, day / 60_000 % 60, day / 1000 % 60, day % 1000)
}

/// A duration for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub(crate) fn span(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// How long ago `ms` was.
pub(crate) fn ago(ms: i64, now: i64) -> String {
    format!("{} ago", span((now - ms).max(0) as f64 / 1000.0))
}

/// `1,204`.
pub(crate) fn count(n: impl Into<i128>) -> String {
    let digits = n.into().unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The CSS class of a change kind: what a person must think about.
pub(crate) fn change_class(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::FieldAdded | ChangeKind::EnumSymbolsAdded => "added",
        ChangeKind::FieldRemoved | ChangeKind::EnumSymbolsRemoved => "removed",
        ChangeKind::TypeWidened => "widened",
        ChangeKind::FieldRenamed => "renamed",
        ChangeKind::TypeChanged | ChangeKind::Incompatible => "changed",
        ChangeKind::NullabilityChanged | ChangeKind::DefaultChanged => "other",
    }
}

/// A change kind in words.
pub(crate) fn change_words(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::FieldAdded => "added",
        ChangeKind::FieldRemoved => "removed",
        ChangeKind::FieldRenamed => "renamed",
        ChangeKind::TypeWidened => "widened",
        ChangeKind::TypeChanged => "type changed",
        ChangeKind::NullabilityChanged => "nullability changed",
        ChangeKind::EnumSymbolsAdded => "symbols added",
        ChangeKind::EnumSymbolsRemoved => "symbols removed",
        ChangeKind::DefaultChanged => "default changed",
        ChangeKind::Incompatible => "incompatible",
    }
}

/// A change as a chip in a list: class, words, field.
pub(crate) struct Chip {
    pub class: &'static str,
    pub words: &'static str,
    pub field: String,
}

pub(crate) fn chips(changes: &[FieldChange]) -> Vec<Chip> {
    changes
        .iter()
        .map(|c| Chip { class: change_class(c.kind), words: change_words(c.kind), field: c.field.clone() })
        .collect()
}

/// The status of an incident in a word, its CSS class, and in a sentence
/// what it is waiting for, saying so when it resolves on its own.
pub(crate) struct State {
    pub word: &'static str,
    pub class: &'static str,
    pub sentence: String,
}

pub(crate) fn state(incident: &Incident, now: i64) -> State {
    let heal = incident.time_to_heal_seconds.map(span);
    match incident.status {
        IncidentStatus::Open => State {
            word: "open",
            class: "busy",
            sentence: "detected; mend is diagnosing and planning (resolves on its own)".into(),
        },
        IncidentStatus::AwaitingApproval => {
            let since = incident.proposed_at.map_or_else(String::new, |at| format!(" for {}", span_since(at, now)));
            let escalated = match incident.escalations {
                0 => String::new(),
                n => format!(", escalated {n}×"),
            };
            State { word: "waiting", class: "waiting", sentence: format!("waiting for a person{since}{escalated}") }
        }
        IncidentStatus::Blocked => State { word: "blocked", class: "blocked", sentence: blocked_sentence(incident) },
        IncidentStatus::Healed => {
            let how = match &incident.decision {
                Some(d) if d.channel == Channel::Policy => "applied by policy".to_owned(),
                Some(d) => format!("approved by {} ({})", d.by, d.channel),
                None => "applied".to_owned(),
            };
            let heal = heal.map_or_else(String::new, |h| format!(", healed in {h}"));
            State { word: "healed", class: "healed", sentence: format!("{how}{heal}") }
        }
        IncidentStatus::Held => {
            let held = incident.application.as_ref().map_or(0, |a| a.still_quarantined);
            State {
                word: "held",
                class: "blocked",
                sentence: format!("applied, but {} records could not be replayed: a person must look", count(held)),
            }
        }
        IncidentStatus::Failed => {
            let error = incident.application.as_ref().and_then(|a| a.error.clone()).unwrap_or_default();
            State { word: "failed", class: "blocked", sentence: format!("applying the plan failed: {error}") }
        }
    }
    .applying(incident)
}

impl State {
    /// Approved and not applied yet: applying and replaying, on its own.
    fn applying(self, incident: &Incident) -> Self {
        match (&incident.decision, &incident.application) {
            (Some(d), None) if d.outcome == Verdict::Approved && incident.status != IncidentStatus::Healed => Self {
                word: "applying",
                class: "busy",
                sentence: format!(
                    "approved by {}; applying and replaying {} records (resolves on its own)",
                    d.by,
                    count(incident.quarantined)
                ),
            },
            _ => self,
        }
    }
}

fn span_since(ms: i64, now: i64) -> String {
    span((now - ms).max(0) as f64 / 1000.0)
}

fn blocked_sentence(incident: &Incident) -> String {
    if let Some(d) = incident.decision.as_ref().filter(|d| d.outcome == Verdict::Rejected) {
        let reason = d.reason.as_deref().map_or_else(String::new, |r| format!(": {r}"));
        return format!("rejected by {} ({}){reason}", d.by, d.channel);
    }
    if let Some(run) = &incident.supervisor
        && let Some(reason) = &run.reason
    {
        return format!("blocked by policy; the supervisor gave up: {reason}");
    }
    match incident.rules.first() {
        Some(rule) => format!("blocked by policy: {rule}"),
        None => "blocked by policy: a person must act".into(),
    }
}

/// What approving will do, in one line: "runs 2 statements on orders,
/// replays 1,204 records, opens a dbt pull request".
pub(crate) fn approve_summary(steps: &[PlanStep], table: &str, quarantined: u64, pull_request: bool) -> String {
    let ddl = steps.iter().filter(|s| s.kind == StepKind::Ddl).count();
    let mapping = steps.iter().filter(|s| s.kind == StepKind::Mapping).count();
    let dbt = steps.iter().any(|s| s.kind == StepKind::DbtPatch);
    let mut parts = Vec::new();
    match ddl {
        0 => {}
        1 => parts.push(format!("runs 1 statement on {table}")),
        n => parts.push(format!("runs {n} statements on {table}")),
    }
    match mapping {
        0 => {}
        1 => parts.push("maps 1 field to a column".to_owned()),
        n => parts.push(format!("maps {n} fields to columns")),
    }
    parts.push(match quarantined {
        1 => "replays 1 record".to_owned(),
        n => format!("replays {} records", count(n)),
    });
    if dbt {
        parts.push(if pull_request { "opens a dbt pull request".into() } else { "patches the dbt model".into() });
    }
    parts.join(", ")
}

/// Why a person may reject: the codes the console offers.
pub(crate) const REJECT_REASONS: [(&str, &str); 4] = [
    ("wrong_producer", "wrong producer: the change should not have been made"),
    ("expected", "expected: nothing to fix"),
    ("duplicate", "duplicate of another incident"),
    ("needs_backfill", "needs a backfill a person will do"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_as_people_write_them() {
        assert_eq!(count(1_204u64), "1,204");
        assert_eq!(count(0u64), "0");
        assert_eq!(count(1_000_000i64), "1,000,000");
        assert_eq!(span(0.52), "0.5 s");
        assert_eq!(span(720.0), "12 min");
        assert_eq!(span(3.0 * 3600.0 + 300.0), "3 h 5 min");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(clock(1_764_865_679_123), "16:27:59.123");
        assert_eq!(span(-0.0001), "0.0 s");
    }

    #[test]
    fn approving_says_what_it_will_do() {
        let step = |kind| PlanStep {
            kind,
            description: String::new(),
            sql: None,
            field: None,
            column: None,
            patch: None,
            cost: None,
        };
        let steps = [step(StepKind::Ddl), step(StepKind::Ddl), step(StepKind::DbtPatch), step(StepKind::Replay)];
        assert_eq!(
            approve_summary(&steps, "orders", 1204, true),
            "runs 2 statements on orders, replays 1,204 records, opens a dbt pull request"
        );
        assert_eq!(
            approve_summary(&[step(StepKind::Mapping)], "t", 1, false),
            "maps 1 field to a column, replays 1 record"
        );
    }

    #[test]
    fn a_state_that_resolves_on_its_own_says_so() {
        let mut incident = Incident { status: IncidentStatus::Open, ..Incident::default() };
        assert!(state(&incident, 0).sentence.contains("resolves on its own"));
        incident.status = IncidentStatus::AwaitingApproval;
        incident.proposed_at = Some(0);
        assert_eq!(state(&incident, 720_000).sentence, "waiting for a person for 12 min");
    }
}
