//! Drafted plans: a fix a person or a model hands over (MCP `propose_plan`,
//! `POST /incidents/{id}/proposals`). A draft passes the same guardrails as
//! any plan before it is offered (`Warehouse::vet`: the allow-list of
//! statements on the dataset's own table, then a dry run in a transaction
//! that is rolled back, proven on the catalog) and is **never applied automatically**,
//! whatever the dataset's policy says: an accepted draft waits for a
//! person's approval. Accepted and refused drafts are both recorded on
//! `mend.proposals`, with who proposed them and every reason a refused one
//! was refused.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub use mend_model::api::{DraftOutcome, DraftRequest};
use mend_model::events::{BlastRadius, Envelope, Event, FieldChange, IncidentId, PlanStep, Proposal, ProposalOrigin};
use mend_model::{Policy, StepKind};

use crate::auth::Caller;
use crate::{Api, error};

pub(crate) async fn propose(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<Caller>>,
    Path(incident): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = match crate::body::<DraftRequest>(&body, false) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let Some(by) = crate::auth::who(caller.map(|c| c.0), request.by) else {
        return error(StatusCode::BAD_REQUEST, "say who drafts the plan: {\"by\": \"name\"}");
    };
    match record_draft(&api, &incident, by, request.steps, request.rationale, request.proposal_id).await {
        Ok(outcome) => (StatusCode::ACCEPTED, Json(outcome)).into_response(),
        Err((status, message)) => error(status, message),
    }
}

/// Why `steps` cannot be offered on `table` as things stand, if they cannot.
async fn refusals(api: &Api, incident: &IncidentId, dataset: &str, steps: &[PlanStep]) -> Result<Vec<String>, String> {
    let Some(dataset) = api.context.dataset(dataset) else {
        return Err(format!("incident {incident} is about dataset {dataset}, which is not configured here"));
    };
    let mut refused = Vec::new();
    if steps.is_empty() {
        refused.push("the plan has no steps".to_owned());
    }
    let warehouse = api.context.applier_warehouse(dataset).await.map_err(|e| format!("the warehouse: {e}"))?;
    // The plan's statements, each with its step's number.
    let mut statements = Vec::new();
    for (number, step) in steps.iter().enumerate() {
        let at = format!("step {}", number + 1);
        match step.kind {
            StepKind::Ddl => match step.sql.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                None => refused.push(format!("{at}: a ddl step needs `sql`")),
                Some(sql) => statements.push((at, sql.to_owned())),
            },
            StepKind::Mapping if step.field.is_none() && step.column.is_some() => {
                refused.push(format!(
                    "{at}: a mapping step names the `field` it maps to `column` (a field without a column forgets \
                     its mapping)"
                ));
            }
            StepKind::Backfill => refused.push(format!(
                "{at}: a backfill step is mend's own, in the expand/contract plans it makes for a widening over \
                 the size gate; draft the ALTER COLUMN TYPE instead"
            )),
            StepKind::Mapping | StepKind::DbtPatch | StepKind::Replay => {}
        }
    }
    if statements.is_empty() {
        return Ok(refused);
    }
    let sql: Vec<String> = statements.iter().map(|(_, sql)| sql.clone()).collect();
    let vetted = warehouse
        .vet(&dataset.table, &sql, dataset.ddl.lock_timeout)
        .await
        .map_err(|e| format!("the warehouse: {e}"))?;
    for refusal in vetted.refused {
        match refusal.statement.and_then(|index| statements.get(index)) {
            Some((at, sql)) => refused.push(format!("{at}: refused {sql:?}: {}", refusal.reason)),
            None => refused.push(refusal.reason),
        }
    }
    Ok(refused)
}

/// Gives the draft's ddl steps mend's own reading of their cost; its blast
/// radius; and for the columns it renames, the dbt patch aliasing them back
/// in the first staging models (added before its replay, unless the draft
/// patches that file itself) and a rule on what a person must fix.
async fn assess(
    api: &Api,
    dataset: &str,
    steps: &mut Vec<PlanStep>,
    changes: &[FieldChange],
) -> Result<(Option<BlastRadius>, Vec<String>), String> {
    let Some(dataset) = api.context.dataset(dataset) else { return Ok((None, Vec::new())) };
    let unavailable = |e: mend_store::StoreError| format!("the warehouse: {e}");
    let warehouse = api.context.applier_warehouse(dataset).await.map_err(|e| format!("the warehouse: {e}"))?;
    warehouse.cost_steps(&dataset.table, steps).await.map_err(unavailable)?;
    let mapping = warehouse.contract(&dataset.name).await.map_err(unavailable)?;
    let mapping = mapping.map(|c| c.mapping).unwrap_or_default();
    let radius =
        mend_planner::blast::blast_radius(dataset, &warehouse, steps, changes, &mapping).await.map_err(unavailable)?;
    let Some(radius) = radius else { return Ok((None, Vec::new())) };
    let (patches, rules) =
        mend_planner::blast::dbt_fixes(dataset, &warehouse, steps, &radius).await.map_err(unavailable)?;
    let patched = |patch: &PlanStep| {
        let header = patch.patch.as_deref().and_then(|p| p.lines().next()).unwrap_or_default().to_owned();
        steps.iter().any(|s| s.kind == StepKind::DbtPatch && s.patch.as_deref().is_some_and(|p| p.starts_with(&header)))
    };
    let patches: Vec<PlanStep> = patches.into_iter().filter(|p| !patched(p)).collect();
    let at = steps.iter().position(|s| s.kind == StepKind::Replay).unwrap_or(steps.len());
    steps.splice(at..at, patches);
    Ok((Some(radius), rules))
}

/// Checks a draft against the guardrails and records it on
/// `mend.proposals`, accepted (waiting for approval) or refused (with every
/// reason). Err only when nothing could be recorded.
pub async fn record_draft(
    api: &Api,
    incident_id: &str,
    by: String,
    steps: Vec<PlanStep>,
    rationale: String,
    proposal_id: Option<String>,
) -> Result<DraftOutcome, (StatusCode, String)> {
    let (dataset, writer, cause, changes) = {
        let model = api.model();
        if let Some(known) = proposal_id.as_ref().and_then(|id| model.proposals.get(id)) {
            // Handed over before: the first outcome stands.
            return Ok(DraftOutcome {
                accepted: known.policy != Policy::Block,
                proposal_id: known.proposal_id.clone(),
                incident_id: incident_id.to_owned(),
                refused: known.refused.clone(),
            });
        }
        let Some(incident) = model.incidents.get(incident_id).filter(|i| i.is_known()) else {
            return Err((StatusCode::NOT_FOUND, format!("no incident {incident_id}; list_incidents shows their ids")));
        };
        let rules_plan = incident.proposal_id.as_ref().and_then(|p| model.proposals.get(p));
        let cause = rules_plan.map(|p| p.envelope.clone());
        // What the writer changed, as the rules' plan read it: the blast
        // radius weighs the draft's statements with them.
        let changes = rules_plan.map(|p| p.changes.clone()).unwrap_or_default();
        (incident.dataset.clone(), incident.writer_schema_id, cause, changes)
    };
    let incident = IncidentId(incident_id.to_owned());
    let unavailable =
        |reason: String| (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}; try again once it answers"));
    let refused = refusals(api, &incident, &dataset, &steps).await.map_err(unavailable)?;
    // A cost is mend's reading, never a drafter's claim.
    let mut steps = steps;
    steps.iter_mut().for_each(|step| step.cost = None);
    let (blast_radius, dbt_rules) = if refused.is_empty() {
        assess(api, &dataset, &mut steps, &changes).await.map_err(unavailable)?
    } else {
        (None, Vec::new())
    };
    let envelope = match &cause {
        Some(cause) => Envelope::answering(crate::SERVICE, cause),
        None => Envelope::new(crate::SERVICE, &dataset, incident.clone()),
    };
    let mut rules = vec![format!("drafted by {by}: {rationale}")];
    rules.extend(refused.iter().map(|reason| format!("refused: {reason}")));
    rules.push(if refused.is_empty() {
        "a drafted plan is never applied on its own => approve".to_owned()
    } else {
        "the draft does not pass the guardrails => block".to_owned()
    });
    rules.extend(dbt_rules);
    let mut policy = if refused.is_empty() { Policy::Approve } else { Policy::Block };
    let downstream = api.context.dataset(&dataset).zip(blast_radius.as_ref());
    if let Some((policy_now, rule)) = downstream.and_then(|(d, radius)| mend_planner::blast::gate(radius, d)) {
        policy = policy.max(policy_now);
        rules.push(rule);
    }
    let mut proposal = Proposal {
        envelope,
        proposal_id: proposal_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        writer_schema_id: writer,
        changes: Vec::new(),
        plan_hash: Proposal::hash_steps(&steps),
        steps,
        policy,
        rules,
        origin: Some(ProposalOrigin::draft(&by, &rationale)),
        refused: refused.clone(),
        blast_radius,
    };
    proposal.seal();
    api.context
        .publish(&proposal)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, format!("the draft was not recorded: {e}")))?;
    tracing::info!(incident = %incident, proposal = %proposal.proposal_id, %by, refused = refused.len(), "plan drafted");
    let outcome = DraftOutcome {
        accepted: refused.is_empty(),
        proposal_id: proposal.proposal_id.clone(),
        incident_id: incident_id.to_owned(),
        refused,
    };
    // Known at once (the projector sees it again, idempotently), so an
    // approval right after this answer finds it.
    api.model().proposal(proposal);
    Ok(outcome)
}
