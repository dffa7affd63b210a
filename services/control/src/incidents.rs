//! Reading: health, incidents (with their quarantined counts from the
//! warehouse) and proposals.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_model::api::Health;

use crate::read_model::Incident;
use crate::{Api, error};

pub(crate) async fn health_check(State(api): State<Arc<Api>>) -> Response {
    use std::sync::atomic::Ordering;
    let services: BTreeMap<String, bool> =
        api.health.iter().map(|(name, status)| (name.clone(), status.consuming.load(Ordering::Relaxed))).collect();
    let warm = api.warm().await;
    let healthy = services.values().all(|c| *c) && warm;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(Health { healthy, consuming: services, read_model_caught_up: warm, supervisor: api.settings.supervisor }),
    )
        .into_response()
}

/// Fills each incident's quarantined count from the warehouse, where the
/// loader keeps every record it quarantined (per dataset and writer schema,
/// which is what an incident is). Reading `mend.quarantine` for this would
/// cost a scan of an ever-growing topic at every start.
pub(crate) async fn with_quarantine_counts(api: &Api, mut incidents: Vec<Incident>) -> Vec<Incident> {
    let mut counts: BTreeMap<String, std::collections::HashMap<u32, i64>> = BTreeMap::new();
    for incident in &mut incidents {
        let Some(dataset) = api.context.dataset(&incident.dataset) else { continue };
        if !counts.contains_key(&incident.dataset) {
            let found = match api.context.warehouse(dataset).await {
                Ok(warehouse) => warehouse.quarantine_counts(&dataset.name).await,
                Err(error) => Err(error),
            };
            let found = found.unwrap_or_else(|error| {
                // The incidents are still worth showing; the counts say 0.
                tracing::warn!(dataset = %dataset.name, %error, "cannot count quarantined records");
                Default::default()
            });
            counts.insert(incident.dataset.clone(), found);
        }
        let writer = incident.writer_schema_id.and_then(|id| u32::try_from(id).ok());
        let count = writer.and_then(|w| counts.get(&incident.dataset).and_then(|c| c.get(&w))).copied().unwrap_or(0);
        incident.quarantined = u64::try_from(count).unwrap_or(0);
    }
    incidents
}

/// 503 while the read model is still catching up (see `Api::warm`).
async fn not_warm(api: &Api) -> Option<Response> {
    (!api.warm().await).then(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the read model is still reading the audit topics; try again in a moment",
        )
    })
}

pub(crate) async fn list_incidents(State(api): State<Arc<Api>>) -> Response {
    if let Some(response) = not_warm(&api).await {
        return response;
    }
    let incidents = api.model().incidents();
    Json(with_quarantine_counts(&api, incidents).await).into_response()
}

pub(crate) async fn show_incident(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    if let Some(response) = not_warm(&api).await {
        return response;
    }
    let incident = api.model().incidents.get(&id).filter(|i| i.is_known()).cloned();
    match incident {
        Some(incident) => Json(with_quarantine_counts(&api, vec![incident]).await.remove(0)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no incident {id}")),
    }
}

pub(crate) async fn show_proposal(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match api.model().proposals.get(&id) {
        Some(proposal) => Json(proposal.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no proposal {id}")),
    }
}
