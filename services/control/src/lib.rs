//! control — the HTTP API over mend's audit log.
//!
//! - input topics: every event topic but `mend.quarantine` ([`projected`]),
//!   read from the beginning at every start (a fresh consumer group) into
//!   the read model; quarantine counts come from the warehouse, where the
//!   loader keeps what it quarantined;
//! - output topic: `mend.decisions` (approvals and rejections via the API);
//! - key: the dataset name;
//! - delivery: a decision is acknowledged to the caller only after the broker
//!   has it (acks=all); approving a decided proposal again does nothing.
//!
//! One module per concern: the read model and its projector
//! ([`read_model`]), who may call ([`auth`]), reading incidents
//! ([`incidents`]), deciding ([`decisions`]), Slack and GitHub callbacks
//! ([`integrations`]), escalation of undecided proposals ([`escalation`]),
//! and the web console (`console`, under `/`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mend_model::topics;
use mend_runtime::Context;
use mend_runtime::runner::{Runner, RunnerStatus};

pub mod auth;
mod console;
pub mod decisions;
pub mod drafts;
pub mod escalation;
pub mod incidents;
pub mod integrations;
pub mod lineage;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod read_model;
pub mod revert;

pub use auth::{ApiSettings, Caller};
pub use decisions::{DecisionRequest, record_decision};
pub use drafts::{DraftOutcome, DraftRequest, record_draft};
pub use escalation::escalate;
pub use read_model::{ApplicationView, DecisionView, Incident, Projector, ReadModel};

const SERVICE: &str = "control";

/// What the HTTP handlers share.
pub struct Api {
    pub(crate) context: Arc<Context>,
    pub(crate) model: Arc<Mutex<ReadModel>>,
    /// Every runner of the process: healthy once all are consuming.
    pub(crate) health: Vec<(String, Arc<RunnerStatus>)>,
    pub(crate) settings: ApiSettings,
    /// MCP tool calls served at `/mcp`, by tool and outcome.
    pub(crate) tool_calls: Arc<mend_mcp::server::ToolCounts>,
    /// The ends of the audit topics when first asked, and whether the read
    /// model has read up to them (see [`Api::warm`]).
    ends: tokio::sync::OnceCell<Vec<(String, i32, i64)>>,
    warm: std::sync::atomic::AtomicBool,
    /// Who is signed in to the console.
    pub(crate) sessions: console::Sessions,
    /// The console's last check of the audit log.
    pub(crate) audit: tokio::sync::Mutex<Option<console::audit::Checked>>,
}

/// The topics the read model is built from: every event topic but the
/// quarantine (counted from the warehouse instead).
fn projected() -> impl Iterator<Item = &'static str> {
    topics::EVENT_TOPICS.into_iter().filter(|topic| *topic != topics::QUARANTINE)
}

impl Api {
    /// Whether the read model has read the audit topics up to where they
    /// ended when first asked. Until then it answers for incidents with 503:
    /// after a restart it is rebuilt from the start, and an incident read
    /// half-way (its drafts or decision not read yet) would mislead.
    pub(crate) async fn warm(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.warm.load(Ordering::Relaxed) {
            return true;
        }
        let brokers = &self.context.connections.brokers;
        let ends = self
            .ends
            .get_or_try_init(|| async {
                let topics: Vec<&'static str> = projected().collect();
                let ends = mend_runtime::kafka::topic_ends(brokers, &topics).await?;
                Ok::<_, mend_runtime::kafka::TopicError>(
                    ends.into_iter()
                        .filter(|e| e.holds_records())
                        .map(|e| (e.topic.to_owned(), e.partition, e.high))
                        .collect(),
                )
            })
            .await;
        let Ok(ends) = ends else { return false };
        // The projector's runner stands past the transaction markers that
        // end a partition; the model's own progress, after its last event.
        let projector = self.health.iter().find(|(name, _)| name == SERVICE).map(|(_, status)| status);
        let model = self.model();
        let caught_up = ends.iter().all(|(topic, partition, high)| {
            let read = model.progress.get(&(topic.clone(), *partition)).copied();
            let handled = projector.and_then(|p| p.handled_to(topic, *partition));
            read.max(handled).is_some_and(|next| next >= *high)
        });
        if caught_up {
            self.warm.store(true, Ordering::Relaxed);
        }
        caught_up
    }

    /// Waits until the read model knows `proposal_id`, at most `timeout`.
    pub(crate) async fn await_proposal(&self, proposal_id: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.model().proposals.contains_key(proposal_id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn model(&self) -> std::sync::MutexGuard<'_, ReadModel> {
        self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The projector's runner (a fresh group: the model is rebuilt from the start).
/// The projector, its status, and the read model it keeps.
pub type Projection = (Runner<Projector>, Arc<RunnerStatus>, Arc<Mutex<ReadModel>>);

pub fn runner(context: &Arc<Context>) -> anyhow::Result<Projection> {
    let model = Arc::new(Mutex::new(ReadModel::default()));
    let topics = projected().map(str::to_owned).collect();
    let group = context.group(&format!("control-{}", uuid::Uuid::now_v7()));
    let projector = Projector { context: context.clone(), model: model.clone() };
    let (runner, status) = context.runner(SERVICE, &group, topics, projector)?;
    Ok((runner, status, model))
}

/// The HTTP routes.
pub fn router(
    context: Arc<Context>,
    model: Arc<Mutex<ReadModel>>,
    health: Vec<(String, Arc<RunnerStatus>)>,
    settings: ApiSettings,
) -> Router {
    let api = Arc::new(Api {
        context,
        model,
        health,
        settings,
        tool_calls: Arc::default(),
        ends: tokio::sync::OnceCell::new(),
        warm: std::sync::atomic::AtomicBool::new(false),
        sessions: console::Sessions::default(),
        audit: tokio::sync::Mutex::new(None),
    });
    // The API authenticates with bearer tokens; the console (its own
    // routes, merged after that layer) with its session cookie.
    let api_routes = Router::new()
        .route("/health", get(incidents::health_check))
        .route("/metrics", get(metrics::metrics))
        .route("/incidents", get(incidents::list_incidents))
        .route("/incidents/{id}", get(incidents::show_incident))
        .route("/incidents/{id}/proposals", post(drafts::propose))
        .route("/incidents/{id}/revert", post(revert::revert))
        .route("/api/v1/lineage", post(lineage::receive))
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/proposals/{id}", get(incidents::show_proposal))
        .route("/proposals/{id}/approve", post(decisions::approve))
        .route("/proposals/{id}/reject", post(decisions::reject))
        .route("/slack/interactions", post(integrations::slack_interaction))
        .route("/github/webhook", post(integrations::github_webhook))
        .nest_service("/mcp", mcp::service(api.clone()))
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth::authorize));
    Router::new()
        .merge(api_routes)
        .merge(console::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; /api/v1/openapi.json lists them") })
        .with_state(api)
}

/// A request's JSON body as `T`; an empty body is `T::default()` when
/// `optional`. Anything else is answered 400 with what is wrong, in JSON
/// like every other error (whatever the body's content type says).
pub(crate) fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8], optional: bool) -> Result<T, Box<Response>> {
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("the body is not what this route takes: {e}"))))
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(mend_model::api::ApiError { error: message.into() })).into_response()
}
