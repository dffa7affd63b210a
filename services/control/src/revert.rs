//! `POST /incidents/{id}/revert` (`mend revert`): undoes what an incident's
//! applied plan did to the contract, without losing data.
//!
//! A revert is an incident of its own (one per applied decision, so asking
//! twice opens one), detected by a person rather than a record. Its plan
//! moves the contract back to the one the application recorded it replaced
//! (`contract_before`): the schema records are read with and, for each of
//! its fields, the column it was loaded into. Columns are kept — a revert
//! drops nothing — so the plan has no DDL; records of the reverted schema
//! go to quarantine again from then on, and are replayed when a later plan
//! takes them (a revert of the revert re-applies the change). The plan is
//! a draft by the person who asked: it passes the same guardrails, waits
//! for an approval like every draft, and is audited as every plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_avro::codec::CodecError;
use mend_model::api::{DraftOutcome, RevertRequest};
use mend_model::events::{ContractState, Detection, Envelope, Event, IncidentId, PlanStep, Proposal};
use mend_model::{ApplicationOutcome, DetectionSource, StepKind};

use crate::auth::Caller;
use crate::{Api, error};

pub(crate) async fn revert(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<Caller>>,
    Path(incident): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request = match crate::body::<RevertRequest>(&body, false) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let Some(by) = crate::auth::who(caller.map(|c| c.0), request.by) else {
        return error(StatusCode::BAD_REQUEST, "say who asks for the revert: {\"by\": \"name\", \"reason\": \"…\"}");
    };
    if request.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "say why the change is reverted: {\"reason\": \"…\"}");
    }
    match open(&api, &incident, by, request.reason).await {
        Ok(outcome) => (StatusCode::ACCEPTED, Json(outcome)).into_response(),
        Err((status, message)) => error(status, message),
    }
}

/// What a revert of one incident restores.
struct Reverted {
    dataset: String,
    decision: String,
    before: ContractState,
}

/// The applied change of `incident` a revert would undo.
fn reverted(api: &Api, incident: &str) -> Result<Reverted, (StatusCode, String)> {
    let model = api.model();
    let Some(known) = model.incidents.get(incident).filter(|i| i.is_known()) else {
        return Err((StatusCode::NOT_FOUND, format!("no incident {incident}; mend incidents lists their ids")));
    };
    let conflict = |message: String| Err((StatusCode::CONFLICT, message));
    let Some(application) = known.application.as_ref().filter(|a| a.outcome == ApplicationOutcome::Applied) else {
        return conflict(format!("incident {incident} has no applied plan to revert (it is {})", known.status));
    };
    let (Some(before), Some(decision)) = (application.contract_before.clone(), application.decision_id.clone()) else {
        return conflict(format!(
            "the application of incident {incident} did not record the contract it replaced (applied by an \
             older mend, or finished by a redelivered decision): draft the plan that restores it by hand \
             (POST /incidents/{incident}/proposals)"
        ));
    };
    Ok(Reverted { dataset: known.dataset.clone(), decision, before })
}

/// Opens the revert of `incident` (or finds the one opened before) and
/// hands its plan over as a draft by `by`.
pub async fn open(api: &Api, incident: &str, by: String, reason: String) -> Result<DraftOutcome, (StatusCode, String)> {
    let reverted = reverted(api, incident)?;
    let revert = IncidentId::for_revert(&IncidentId(incident.to_owned()), &reverted.decision);
    let proposal_id = Proposal::rules_id(&revert);
    let opened = {
        let model = api.model();
        let known = model.incidents.get(&revert.0).filter(|i| i.is_known());
        if let Some(decided) = known.and_then(|i| i.decision.as_ref()) {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "incident {incident} was already reverted by incident {revert}, whose plan was {} by {} \
                     (mend show {revert})",
                    decided.outcome, decided.by
                ),
            ));
        }
        known.is_some()
    };
    if !opened {
        let detection = detect(api, incident, &reverted, &revert, &by, &reason).await?;
        api.context.publish(&detection).await.map_err(|e| unavailable(format!("the revert was not recorded: {e}")))?;
        // Known at once (the projector sees it again, idempotently), so the
        // draft below finds its incident.
        api.model().detection(detection);
    }
    let steps = plan(api, &reverted).await?;
    let rationale = format!("revert incident {incident}: {reason}");
    crate::drafts::record_draft(api, &revert.0, by, steps, rationale, Some(proposal_id)).await
}

fn unavailable(reason: String) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}; try again once it answers"))
}

/// The revert's detection: what moves back (the contract now and the one
/// restored, and the changes between their schemas), who asked and why.
async fn detect(
    api: &Api,
    incident: &str,
    reverted: &Reverted,
    revert: &IncidentId,
    by: &str,
    reason: &str,
) -> Result<Detection, (StatusCode, String)> {
    let Some(dataset) = api.context.dataset(&reverted.dataset) else {
        return Err((StatusCode::CONFLICT, format!("dataset {} is not configured here", reverted.dataset)));
    };
    let warehouse =
        api.context.applier_warehouse(dataset).await.map_err(|e| unavailable(format!("the warehouse: {e}")))?;
    let read = |e| unavailable(format!("the warehouse: {e}"));
    // Only the contract's latest move can be undone this way: a later plan
    // built on it.
    let mover = warehouse.contract_mover(&dataset.name).await.map_err(read)?;
    if mover.as_deref() != Some(reverted.decision.as_str()) {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "the contract of {} has moved since incident {incident}'s plan (last moved by {}): revert the later \
                 change first",
                dataset.name,
                mover.as_deref().unwrap_or("nothing")
            ),
        ));
    }
    let Some(current) = warehouse.contract(&dataset.name).await.map_err(read)? else {
        return Err((StatusCode::CONFLICT, format!("dataset {} has no contract", dataset.name)));
    };
    let schema = |id: i64| async move {
        let id = u32::try_from(id).map_err(|_| (StatusCode::CONFLICT, format!("schema id {id} is not one")))?;
        match api.context.codec.schema(id).await {
            Ok(schema) => Ok(schema),
            Err(CodecError::Invalid(why)) => Err((StatusCode::CONFLICT, format!("schema {id}: {why}"))),
            Err(e) => Err(unavailable(format!("the registry: {e}"))),
        }
    };
    let now = schema(i64::from(current.schema_id)).await?;
    let restored = schema(i64::from(reverted.before.schema_id)).await?;
    let evidence = BTreeMap::from([
        ("reverts".to_owned(), incident.to_owned()),
        ("reverted_decision".to_owned(), reverted.decision.clone()),
        ("requested_by".to_owned(), by.to_owned()),
        ("reason".to_owned(), reason.to_owned()),
        ("contract_schema".to_owned(), now.raw.clone()),
        ("restored_schema".to_owned(), restored.raw.clone()),
    ]);
    let mut detection = Detection {
        envelope: Envelope::new(crate::SERVICE, &dataset.name, revert.clone()),
        source: DetectionSource::Revert,
        topic: dataset.topic.clone(),
        partition: -1,
        offset: -1,
        subject: dataset.subject(),
        writer_schema_id: Some(reverted.before.schema_id),
        contract_schema_id: i32::try_from(current.schema_id).ok(),
        changes: mend_avro::drift::classify(&now.parsed, &restored.parsed),
        evidence,
    };
    detection.seal();
    Ok(detection)
}

/// The revert's steps: each field of the restored contract loaded into its
/// column again where the reverted plan moved it, the fields it mapped
/// forgotten, then the replay of the restored schema's held records.
async fn plan(api: &Api, reverted: &Reverted) -> Result<Vec<PlanStep>, (StatusCode, String)> {
    let current = match api.context.dataset(&reverted.dataset) {
        Some(dataset) => {
            let warehouse =
                api.context.applier_warehouse(dataset).await.map_err(|e| unavailable(format!("the warehouse: {e}")))?;
            warehouse.contract(&dataset.name).await.map_err(|e| unavailable(format!("the warehouse: {e}")))?
        }
        None => None,
    };
    let mapping = current.map(|c| c.mapping).unwrap_or_default();
    let mut steps: Vec<PlanStep> = reverted
        .before
        .mapping
        .iter()
        .filter(|(field, column)| mapping.get(*field) != Some(column))
        .map(|(field, column)| PlanStep {
            kind: StepKind::Mapping,
            description: format!(
                "load field {field} into column {column} again (now {})",
                mapping.get(field).map_or("not loaded", String::as_str)
            ),
            sql: None,
            field: Some(field.clone()),
            column: Some(column.clone()),
            patch: None,
            cost: None,
        })
        .collect();
    // Fields the reverted plan mapped that the restored contract did not:
    // forgotten, so a writer field of that name is no longer taken for a
    // column (its records are held instead).
    steps.extend(mapping.iter().filter(|(field, _)| !reverted.before.mapping.contains_key(*field)).map(
        |(field, column)| PlanStep {
            kind: StepKind::Mapping,
            description: format!("forget field {field} (loaded into column {column} since the reverted plan)"),
            sql: None,
            field: Some(field.clone()),
            column: None,
            patch: None,
            cost: None,
        },
    ));
    steps.push(PlanStep {
        kind: StepKind::Replay,
        description: format!(
            "move the contract back to schema {} and load its records held in quarantine; every column stays \
             (a revert drops nothing), and records of the reverted schema are held in quarantine until a later \
             plan takes them (a revert of this incident re-applies the change)",
            reverted.before.schema_id
        ),
        sql: None,
        field: None,
        column: None,
        patch: None,
        cost: None,
    });
    Ok(steps)
}
