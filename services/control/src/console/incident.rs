//! One incident: what changed field by field with the evidence, the plan
//! step by step with its SQL, the drafts and the supervisor's run, who
//! decided and what applying did; and the two decisions. Approve is one
//! action that says what it will do; reject needs a reason code and text.
//! Both are recorded with channel `console` and the person signed in.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use mend_model::api::{DraftView, Incident};
use mend_model::events::{BlastRadius, FieldChange, PlanStep, StatementCost};
use mend_model::{Channel, IncidentStatus, StepKind, Verdict};
use serde::Deserialize;

use super::audit::{Trail, trail};
use super::session::{Session, Signed};
use super::view::{
    REJECT_REASONS, State as Shown, approve_summary, change_class, change_words, count, now_ms, span, state, utc,
};
use super::{Failed, Page, message, not_warm, page};
use crate::Api;
use crate::decisions::record_decision;
use crate::incidents::with_quarantine_counts;

/// One field change with what was found.
struct Change {
    class: &'static str,
    words: &'static str,
    field: String,
    /// `old → new` of a rename, or of a type.
    from_to: Option<String>,
    confidence: Option<String>,
    /// The rename proof, the cast sample, the enum's symbols, Avro's reason.
    proof: Vec<String>,
    evidence: Vec<(String, String)>,
    /// What the table holds for the field now: its column and type, or
    /// that it has none.
    holds: String,
}

/// The column of the table that holds `c`'s field today (by the field's
/// name, or its old name for a rename), in the warehouse's words.
fn holds(c: &FieldChange, columns: &[mend_model::table::Column]) -> String {
    let top = |name: &str| name.split('.').next().unwrap_or(name).to_owned();
    let names = [Some(top(&c.field)), c.from.as_deref().map(top)];
    match columns.iter().find(|col| names.iter().flatten().any(|n| *n == col.name)) {
        Some(col) => format!("{} {}{}", col.name, col.sql_type, if col.nullable { " NULL" } else { " NOT NULL" }),
        None if columns.is_empty() => "no table yet".into(),
        None => "no column".into(),
    }
}

fn change(c: &FieldChange, columns: &[mend_model::table::Column]) -> Change {
    let from_to = match (&c.from, &c.to, &c.old_type, &c.new_type) {
        (Some(from), Some(to), _, _) if from != to => Some(format!("{from} → {to}")),
        (_, _, Some(old), Some(new)) => Some(format!("{old} → {new}")),
        (_, _, None, Some(new)) => Some(new.clone()),
        (_, _, Some(old), None) => Some(format!("was {old}")),
        _ => None,
    };
    let mut proof = Vec::new();
    if let Some(rename) = &c.rename_proof {
        proof.push(format!("rename proven by {rename}"));
    }
    if let Some(cast) = &c.cast {
        proof.push(format!(
            "{} of {} sampled values fit the column ({})",
            count(cast.parsing),
            count(cast.sampled),
            cast.check
        ));
    }
    if !c.all_symbols.is_empty() {
        proof.push(format!("symbols now: {}", c.all_symbols.join(", ")));
    }
    if let Some(error) = &c.avro_error {
        proof.push(format!("Avro's resolution: {error}"));
    }
    Change {
        class: change_class(c.kind),
        words: change_words(c.kind),
        field: c.field.clone(),
        from_to,
        confidence: c.confidence.map(|p| format!("{:.0}%", p * 100.0)),
        proof,
        evidence: c.evidence.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        holds: holds(c, columns),
    }
}

/// One step of the plan.
struct Step {
    kind: &'static str,
    description: String,
    /// The statement, the mapping or the patch, as code.
    code: Option<String>,
    /// Of a statement: what the guardrails say of it now ("" when not asked).
    verdict: String,
    refused: bool,
    /// Of a statement: what it costs the table, as planned.
    cost: Option<StatementCost>,
}

fn step(s: &PlanStep) -> Step {
    let code = match s.kind {
        StepKind::Ddl => s.sql.clone(),
        StepKind::Mapping => match (&s.field, &s.column) {
            (Some(field), Some(column)) => Some(format!("{field} → {column}")),
            (Some(field), None) => Some(format!("{field} → (mapping forgotten)")),
            _ => None,
        },
        StepKind::DbtPatch => s.patch.clone(),
        StepKind::Backfill => s.column.as_deref().map(|c| format!("{c} → {}", mend_store::expand::wide_name(c))),
        StepKind::Replay => None,
    };
    let kind = match s.kind {
        StepKind::Ddl => "SQL",
        StepKind::Mapping => "mapping",
        StepKind::DbtPatch => "dbt patch",
        StepKind::Backfill => "backfill",
        StepKind::Replay => "replay",
    };
    Step {
        kind,
        description: s.description.clone(),
        code,
        verdict: String::new(),
        refused: false,
        cost: s.cost.clone(),
    }
}

/// The guardrails' verdict on each statement of a plan still to decide:
/// the allow-list and a dry run, rolled back, as the applier will run them.
async fn vet(api: &Api, dataset: &mend_config::Dataset, steps: &mut [Step], plan: &[PlanStep]) {
    let statements: Vec<String> =
        plan.iter().filter(|s| s.kind == StepKind::Ddl).filter_map(|s| s.sql.clone()).collect();
    if statements.is_empty() {
        return;
    }
    let vetted = match api.context.applier_warehouse(dataset).await {
        Ok(warehouse) => warehouse.vet(&dataset.table, &statements, dataset.ddl.lock_timeout).await,
        Err(e) => Err(e),
    };
    let ddl = steps.iter_mut().filter(|s| s.kind == "SQL");
    match vetted {
        Ok(vetted) => {
            for (index, step) in ddl.enumerate() {
                let reasons: Vec<&str> = vetted
                    .refused
                    .iter()
                    .filter(|r| r.statement.is_none_or(|at| at == index))
                    .map(|r| r.reason.as_str())
                    .collect();
                step.refused = !reasons.is_empty();
                step.verdict = if reasons.is_empty() {
                    "the guardrails allow it; its dry run (rolled back) passed".into()
                } else {
                    format!("the guardrails refuse it: {}", reasons.join("; "))
                };
            }
        }
        Err(e) => {
            for step in ddl {
                step.verdict = format!("the guardrails could not be asked: {e}");
            }
        }
    }
}

/// A quarantined record of the incident, as written and as the plan's
/// mapping loads it.
struct Record {
    position: String,
    value: String,
    /// Column → value once the plan is applied (fields its mapping does not
    /// name keep their own names).
    after: String,
    reason: String,
}

/// `value` (a record as JSON) with its top-level fields renamed to the
/// columns the plan's mapping steps give them.
fn mapped(value: &serde_json::Value, steps: &[PlanStep]) -> String {
    let Some(fields) = value.as_object() else { return value.to_string() };
    let column = |field: &str| {
        steps
            .iter()
            .filter(|s| s.kind == StepKind::Mapping && s.field.as_deref() == Some(field))
            .find_map(|s| s.column.clone())
            .unwrap_or_else(|| field.to_owned())
    };
    let row: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|(field, v)| (column(field), v.clone())).collect();
    serde_json::Value::Object(row).to_string()
}

/// One tool call of the supervisor's run.
struct Call {
    name: String,
    input: String,
    output: String,
    /// The output was cut: the event keeps its first 4 KiB and its digest.
    cut: Option<String>,
    failed: bool,
    millis: i64,
}

struct Draft {
    by: String,
    at: String,
    accepted: bool,
    rationale: String,
    refused: Vec<String>,
}

fn draft(d: &DraftView) -> Draft {
    Draft {
        by: d.by.clone().unwrap_or_else(|| "someone".into()),
        at: utc(d.at),
        accepted: d.accepted,
        rationale: d.rationale.clone().unwrap_or_default(),
        refused: d.refused.clone(),
    }
}

/// The live part of the page: the state and the decision.
#[derive(Template)]
#[template(path = "incident_status.html")]
struct Status {
    shown: Shown,
    decided: Option<String>,
    applied: Option<String>,
    held: Vec<String>,
}

fn status_of(incident: &Incident, now: i64) -> Status {
    let decided = incident.decision.as_ref().map(|d| {
        let reason = d.reason.as_deref().map_or_else(String::new, |r| format!(": {r}"));
        format!("{} by {} through {} at {}{reason}", d.outcome, d.by, d.channel, utc(d.at))
    });
    let applied = incident.application.as_ref().map(|a| {
        let waits = match a.lock_waits.len() {
            0 => String::new(),
            n => format!("; gave up waiting for the table's lock {n} times and tried again"),
        };
        format!(
            "{}: {} statements, {} replayed, {} loaded, {} still quarantined{waits}{}",
            a.outcome,
            a.statements,
            count(a.replayed),
            count(a.loaded),
            count(a.still_quarantined),
            a.error.as_deref().map_or_else(String::new, |e| format!(" ({e})"))
        )
    });
    let held = incident
        .application
        .iter()
        .flat_map(|a| &a.held)
        .map(|h| format!("partition {} offset {}: {}", h.partition, h.offset, h.reason))
        .collect();
    Status { shown: state(incident, now), decided, applied, held }
}

#[derive(Template)]
#[template(path = "incident.html")]
struct Show<'a> {
    page: Page<'a>,
    id: String,
    dataset: String,
    table: String,
    detected: String,
    healed: Option<String>,
    writer: String,
    contract: String,
    status_html: String,
    changes: Vec<Change>,
    evidence: Vec<(String, String)>,
    policy: String,
    rules: Vec<String>,
    steps: Vec<Step>,
    /// What the plan does downstream in the dataset's dbt project.
    downstream: Option<BlastRadius>,
    drafts: Vec<Draft>,
    supervisor: Option<String>,
    /// What the model said, and each tool call with its input and output.
    reasoning: Vec<String>,
    calls: Vec<Call>,
    /// The proposal a decision here decides (waiting for a person).
    proposal: Option<String>,
    may_decide: bool,
    /// Why the buttons are disabled, when they are.
    why_not: String,
    approve: String,
    reasons: Vec<(&'static str, &'static str)>,
    error: Option<String>,
    /// Its events as of the console's last check of the audit log.
    trail: Option<Trail>,
    /// The first records it holds in quarantine, and where the plan's
    /// mapping puts their fields.
    records: Vec<Record>,
    /// What could not be read for the page, and why.
    unread: Vec<String>,
    mappings: Vec<String>,
}

fn id_text(id: Option<i32>) -> String {
    id.map_or_else(|| "-".into(), |i| i.to_string())
}

fn why_not(incident: &Incident, session: &Session) -> String {
    if incident.status != IncidentStatus::AwaitingApproval || incident.proposal_id.is_none() {
        return format!("Nothing to decide: the incident is {}.", incident.status.as_str().replace('_', " "));
    }
    if !session.may_decide() {
        return format!(
            "You are signed in as {}, a {}: deciding needs the approver role.",
            session.caller.name,
            session.role()
        );
    }
    String::new()
}

async fn render(api: &Api, session: &Session, id: &str, error: Option<String>) -> Response {
    if let Some(busy) = not_warm(api, session).await {
        return busy;
    }
    let incident = api.model().incidents.get(id).filter(|i| i.is_known()).cloned();
    let Some(incident) = incident else {
        return message(
            Some(session),
            StatusCode::NOT_FOUND,
            "No such incident",
            &format!("mend knows no incident {id}."),
        );
    };
    let incident = with_quarantine_counts(api, vec![incident]).await.remove(0);
    let dataset = api.context.dataset(&incident.dataset);
    let table = dataset.map_or_else(|| incident.dataset.clone(), |d| d.table.clone());
    let pull_request = dataset.is_some_and(|d| d.github.is_some());
    let now = now_ms();
    let why_not = why_not(&incident, session);
    // What the table holds now, beside what changed. What could not be
    // read is said on the page, not left out.
    let mut unread = Vec::new();
    let columns = match dataset {
        Some(d) => match api.context.warehouse(d).await {
            Ok(warehouse) => warehouse.columns(&d.table).await.unwrap_or_else(|e| {
                unread.push(format!("the table's columns: {e}"));
                Vec::new()
            }),
            Err(e) => {
                unread.push(format!("the warehouse: {e}"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let mut steps: Vec<Step> = incident.steps.iter().map(step).collect();
    if incident.status == IncidentStatus::AwaitingApproval
        && let Some(dataset) = dataset
    {
        vet(api, dataset, &mut steps, &incident.steps).await;
    }
    let writer = incident.writer_schema_id.and_then(|w| u32::try_from(w).ok());
    let records = match writer {
        Some(writer) if incident.quarantined > 0 => {
            match mend_mcp::read::quarantined_records(&api.context, &incident.dataset, Some(writer), Some(10)).await {
                Ok(q) => q
                    .records
                    .iter()
                    .map(|r| Record {
                        position: format!("{}:{}", r.partition, r.offset),
                        value: r.value.as_ref().map_or_else(|| "(not decodable)".into(), |v| v.to_string()),
                        after: r.value.as_ref().map_or_else(String::new, |v| mapped(v, &incident.steps)),
                        reason: r.reason.clone(),
                    })
                    .collect(),
                Err(e) => {
                    unread.push(format!("the records it holds: {e}"));
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    // The replay names the records it replays.
    if let Some(replay) = steps.iter_mut().find(|s| s.kind == "replay")
        && !records.is_empty()
    {
        let positions: Vec<&str> = records.iter().map(|r| r.position.as_str()).collect();
        replay.code = Some(if positions.len() as u64 >= incident.quarantined {
            format!("{} records at partition:offset {}", positions.len(), positions.join(", "))
        } else {
            format!(
                "{} records, in source order from partition:offset {} (the first {} are listed below)",
                count(incident.quarantined),
                positions[0],
                positions.len()
            )
        });
    }
    let mappings = incident
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Mapping)
        .filter_map(|s| Some(format!("{} → column {}", s.field.as_ref()?, s.column.as_ref()?)))
        .collect();
    let supervisor = incident.supervisor.as_ref().map(|run| {
        let reason = run.reason.as_deref().map_or_else(String::new, |r| format!(": {r}"));
        format!(
            "{} with {} in {}, {} tokens in and {} out{reason}",
            run.outcome,
            run.model,
            span(run.seconds),
            count(run.input_tokens),
            count(run.output_tokens)
        )
    });
    let show = Show {
        page: Page::of("Incident", session),
        id: incident.id.clone(),
        dataset: incident.dataset.clone(),
        detected: utc(incident.detected_at),
        healed: incident.healed_at.map(utc),
        writer: id_text(incident.writer_schema_id),
        contract: id_text(incident.contract_schema_id),
        status_html: match status_of(&incident, now).render() {
            Ok(html) => html,
            Err(e) => return Failed(e).into_response(),
        },
        changes: incident.changes.iter().map(|c| change(c, &columns)).collect(),
        evidence: incident.evidence.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        policy: incident.policy.map_or_else(|| "-".into(), |p| p.to_string()),
        rules: incident.rules.clone(),
        steps,
        downstream: incident.blast_radius.clone(),
        drafts: incident.drafts.iter().map(draft).collect(),
        supervisor,
        reasoning: incident.supervisor.as_ref().map(|r| r.text.clone()).unwrap_or_default(),
        calls: incident
            .supervisor
            .iter()
            .flat_map(|r| &r.calls)
            .map(|c| Call {
                name: c.name.clone(),
                input: c.input.clone(),
                output: c.output.clone(),
                cut: (c.output.len() >= mend_model::events::ToolCall::OUTPUT_KEPT)
                    .then(|| format!("the first 4 KiB; the whole output's SHA-256 is {}", c.output_sha256)),
                failed: c.is_error,
                millis: c.millis,
            })
            .collect(),
        proposal: incident.proposal_id.clone().filter(|_| incident.status == IncidentStatus::AwaitingApproval),
        may_decide: why_not.is_empty(),
        why_not,
        approve: approve_summary(&incident.steps, &table, incident.quarantined, pull_request),
        reasons: REJECT_REASONS.to_vec(),
        error,
        trail: trail(api, &incident.id).await,
        records,
        unread,
        mappings,
        table,
    };
    page(&show)
}

pub(crate) async fn show(State(api): State<Arc<Api>>, Signed(session): Signed, Path(id): Path<String>) -> Response {
    render(&api, &session, &id, None).await
}

/// The state and the decision alone, for the page's live updates.
pub(crate) async fn status(State(api): State<Arc<Api>>, Signed(session): Signed, Path(id): Path<String>) -> Response {
    let incident = api.model().incidents.get(&id).filter(|i| i.is_known()).cloned();
    match incident {
        Some(incident) => page(&status_of(&incident, now_ms())),
        None => {
            message(Some(&session), StatusCode::NOT_FOUND, "No such incident", &format!("mend knows no incident {id}."))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Decide {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    proposal: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    text: String,
}

async fn decide(api: &Api, signed: Signed, headers: &HeaderMap, id: &str, verdict: Verdict, form: Decide) -> Response {
    if let Err(forged) = signed.check(headers, &form.csrf) {
        return forged.into_response();
    }
    let session = signed.0;
    if !session.may_decide() {
        let why = format!(
            "You are signed in as {}, a {}: deciding needs the approver role.",
            session.caller.name,
            session.role()
        );
        return message(Some(&session), StatusCode::FORBIDDEN, "Not yours to decide", &why);
    }
    // The proposal must be this incident's: a form cannot decide another.
    let belongs = api.model().proposals.get(&form.proposal).is_some_and(|p| p.envelope.incident_id.0 == id);
    if !belongs {
        return render(api, &session, id, Some(format!("proposal {} is not this incident's", form.proposal))).await;
    }
    let reason = match verdict {
        Verdict::Approved => None,
        Verdict::Rejected => {
            let text = form.text.trim();
            if !REJECT_REASONS.iter().any(|(code, _)| *code == form.code) || text.is_empty() {
                return render(api, &session, id, Some("a rejection needs a reason code and a few words".into())).await;
            }
            Some(format!("{}: {text}", form.code))
        }
    };
    match record_decision(api, &form.proposal, verdict, session.caller.name.clone(), Channel::Console, reason).await {
        Ok(_) => Redirect::to(&format!("/console/incidents/{id}")).into_response(),
        Err((status, why)) => {
            let mut response = render(api, &session, id, Some(why)).await;
            *response.status_mut() = status;
            response
        }
    }
}

pub(crate) async fn approve(
    State(api): State<Arc<Api>>,
    signed: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Decide>,
) -> Response {
    decide(&api, signed, &headers, &id, Verdict::Approved, form).await
}

pub(crate) async fn reject(
    State(api): State<Arc<Api>>,
    signed: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Decide>,
) -> Response {
    decide(&api, signed, &headers, &id, Verdict::Rejected, form).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_record_after_the_mapping_has_its_fields_under_their_columns() {
        let mapping = PlanStep {
            kind: StepKind::Mapping,
            description: String::new(),
            sql: None,
            field: Some("customer_email".into()),
            column: Some("email".into()),
            patch: None,
            cost: None,
        };
        let record = serde_json::json!({"id": 3, "customer_email": "a@b"});
        assert_eq!(mapped(&record, &[mapping]), r#"{"email":"a@b","id":3}"#);
        assert_eq!(mapped(&serde_json::json!(7), &[]), "7");
    }
}
