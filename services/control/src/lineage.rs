//! Pipeline failures in: `POST /api/v1/lineage`, the endpoint OpenLineage's
//! HTTP transport posts RunEvents to (Marquez's), from Airflow, Dagster,
//! dbt (`dbt-ol`) or Spark. A FAIL event naming a dataset's table or topic
//! (or one of its `openlineage` names) opens an incident on it, with the
//! error message as its first evidence; the rules cannot plan a failure
//! that is not schema drift, so it is blocked and, with a key configured,
//! the supervisor drafts a fix. One incident per dataset, job and error: a
//! repeated FAIL joins the open incident. Other event types are accepted
//! and ignored; a malformed event gets a 400 saying what is wrong.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_config::Dataset;
use mend_model::DetectionSource;
use mend_model::events::{Detection, Envelope, Event, IncidentId};
use serde_json::{Value, json};

use crate::{Api, error};

/// The dataset a lineage dataset `name` (in `namespace`) stands for: its
/// table or topic, as the name or its last dotted or slashed part, or one
/// of the dataset's `openlineage` names.
fn matches(dataset: &Dataset, namespace: &str, name: &str) -> bool {
    let last = name.rsplit(['.', '/']).next().unwrap_or(name);
    let full = format!("{namespace}/{name}");
    dataset.openlineage.iter().any(|n| n == name || *n == full)
        || [&dataset.table, &dataset.topic].iter().any(|t| *t == name || *t == last)
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

pub(crate) async fn receive(State(api): State<Arc<Api>>, body: axum::body::Bytes) -> Response {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return bad("the body is not JSON: an OpenLineage RunEvent is expected");
    };
    let Some(kind) = event["eventType"].as_str() else {
        return bad("eventType is missing: START, RUNNING, COMPLETE, ABORT, FAIL or OTHER");
    };
    let (Some(job_namespace), Some(job)) = (event["job"]["namespace"].as_str(), event["job"]["name"].as_str()) else {
        return bad("job.namespace and job.name are required");
    };
    let Some(run_id) = event["run"]["runId"].as_str() else {
        return bad("run.runId is required");
    };
    if kind != "FAIL" {
        return (StatusCode::OK, Json(json!({"ignored": format!("{kind} events open no incident")}))).into_response();
    }
    let error_message = event["run"]["facets"]["errorMessage"]["message"].as_str().unwrap_or("(no errorMessage facet)");
    let datasets: Vec<(&str, &str, &Value)> = ["inputs", "outputs"]
        .iter()
        .flat_map(|side| event[*side].as_array().into_iter().flatten())
        .filter_map(|d| Some((d["namespace"].as_str().unwrap_or(""), d["name"].as_str()?, &d["facets"])))
        .collect();
    let found = datasets.iter().find_map(|(namespace, name, facets)| {
        api.context.config.datasets.iter().find(|d| matches(d, namespace, name)).map(|d| (d, *facets))
    });
    let Some((dataset, facets)) = found else {
        let named: Vec<String> = datasets.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "no dataset of this deployment matches {} (a dataset's table or topic, or one of its `openlineage` names)",
                if named.is_empty() { "the event: it names no input or output".to_owned() } else { named.join(", ") }
            ),
        );
    };
    let job_name = format!("{job_namespace}/{job}");
    let incident = IncidentId::for_failure(&dataset.name, &job_name, error_message);
    if api.model().incidents.get(&incident.0).is_some_and(|i| i.healed_at.is_none()) {
        return (StatusCode::OK, Json(json!({"incident_id": incident.0, "joined": true}))).into_response();
    }
    let mut evidence = BTreeMap::from([
        ("error_message".to_owned(), error_message.to_owned()),
        ("job".to_owned(), job_name),
        ("run_id".to_owned(), run_id.to_owned()),
        ("event_time".to_owned(), event["eventTime"].as_str().unwrap_or("").to_owned()),
        ("datasets".to_owned(), datasets.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect::<Vec<_>>().join(", ")),
    ]);
    if let Some(fields) = facets["schema"]["fields"].as_array() {
        let described: Vec<String> = fields
            .iter()
            .map(|f| format!("{} {}", f["name"].as_str().unwrap_or("?"), f["type"].as_str().unwrap_or("?")))
            .collect();
        evidence.insert("schema_facet".into(), described.join(", "));
    }
    if let Some(stack) = event["run"]["facets"]["errorMessage"]["stackTrace"].as_str() {
        evidence.insert("stack_trace".into(), stack.chars().take(4000).collect());
    }
    let contract = match api.context.warehouse(dataset).await {
        Ok(warehouse) => warehouse.contract(&dataset.name).await.ok().flatten(),
        Err(_) => None,
    };
    let mut detection = Detection {
        envelope: Envelope::new(crate::SERVICE, &dataset.name, incident.clone()),
        source: DetectionSource::Openlineage,
        topic: dataset.topic.clone(),
        partition: -1,
        offset: -1,
        subject: dataset.subject(),
        writer_schema_id: None,
        contract_schema_id: contract.and_then(|c| i32::try_from(c.schema_id).ok()),
        changes: Vec::new(),
        evidence,
    };
    detection.seal();
    if let Err(e) = api.context.publish(&detection).await {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("the failure was not recorded: {e}"));
    }
    tracing::info!(incident = %incident, dataset = %dataset.name, job = %job, "pipeline failure reported through OpenLineage");
    (StatusCode::CREATED, Json(json!({"incident_id": incident.0, "dataset": dataset.name}))).into_response()
}
