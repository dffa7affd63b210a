//! control — the HTTP API over mend's audit log.
//!
//! - input topics: `mend.detections`, `mend.diagnoses`, `mend.proposals`,
//!   `mend.decisions`, `mend.applications`, read from the beginning at every
//!   start (a fresh consumer group) into the read model; quarantine counts
//!   come from the warehouse, where the loader keeps what it quarantined;
//! - output topic: `mend.decisions` (approvals and rejections via the API);
//! - key: the dataset name;
//! - delivery: a decision is acknowledged to the caller only after the broker
//!   has it (acks=all); approving a decided proposal again does nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mend_shared::config::{ApiToken, Role};
use mend_shared::context::Context;
use mend_shared::events::{Application, Decision, Detection, Diagnosis, Envelope, Event, FieldChange, Proposal};
use mend_shared::runner::{Disposition, Handler, Inbound, Runner, RunnerStatus};
use mend_shared::{HandleError, topics};
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};
use serde_json::json;

const SERVICE: &str = "control";

/// One incident as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Incident {
    pub id: String,
    pub dataset: String,
    /// open, awaiting_approval, healed, blocked, failed
    pub status: String,
    pub writer_schema_id: Option<i32>,
    pub contract_schema_id: Option<i32>,
    pub detected_at: i64,
    pub healed_at: Option<i64>,
    pub changes: Vec<FieldChange>,
    pub evidence: BTreeMap<String, String>,
    pub proposal_id: Option<String>,
    pub policy: Option<String>,
    pub rules: Vec<String>,
    pub steps: Vec<mend_shared::events::PlanStep>,
    pub decision: Option<DecisionView>,
    pub application: Option<ApplicationView>,
    pub quarantined: u64,
    /// When the proposal was made (ms), and how often it was escalated.
    pub proposed_at: Option<i64>,
    pub escalations: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub id: String,
    pub outcome: String,
    pub by: String,
    pub channel: String,
    pub reason: Option<String>,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplicationView {
    pub outcome: String,
    pub statements: i32,
    pub replayed: i64,
    pub loaded: i64,
    pub still_quarantined: i64,
    pub error: Option<String>,
}

/// The read model: incidents and the proposals that can be decided.
#[derive(Debug, Default)]
pub struct ReadModel {
    incidents: BTreeMap<String, Incident>,
    proposals: BTreeMap<String, Proposal>,
}

impl ReadModel {
    fn incident(&mut self, envelope: &Envelope) -> &mut Incident {
        let incident = self.incidents.entry(envelope.incident_id.0.clone()).or_default();
        if incident.id.is_empty() {
            incident.id = envelope.incident_id.0.clone();
            incident.dataset = envelope.dataset.clone();
            incident.status = "open".into();
            incident.detected_at = envelope.time;
        }
        incident
    }

    fn detection(&mut self, event: Detection) {
        let incident = self.incident(&event.envelope);
        incident.writer_schema_id = event.writer_schema_id;
        incident.contract_schema_id = event.contract_schema_id;
        if incident.changes.is_empty() {
            incident.changes = event.changes;
        }
    }

    fn diagnosis(&mut self, event: Diagnosis) {
        let incident = self.incident(&event.envelope);
        incident.changes = event.changes;
        incident.evidence = event.evidence;
    }

    fn proposal(&mut self, event: Proposal) {
        let incident = self.incident(&event.envelope);
        incident.proposal_id = Some(event.proposal_id.clone());
        incident.policy = Some(event.policy.clone());
        incident.rules.clone_from(&event.rules);
        incident.steps.clone_from(&event.steps);
        incident.proposed_at.get_or_insert(event.envelope.time);
        if incident.decision.is_none() && incident.application.is_none() {
            incident.status = match event.policy.as_str() {
                "approve" => "awaiting_approval",
                "block" => "blocked",
                _ => "open",
            }
            .into();
        }
        self.proposals.insert(event.proposal_id.clone(), event);
    }

    fn decision(&mut self, event: Decision) {
        let incident = self.incident(&event.envelope);
        if incident.decision.is_some() {
            return; // the first decision stands
        }
        if event.outcome == "rejected" {
            incident.status = "blocked".into();
        } else if incident.application.is_none() {
            incident.status = "open".into();
        }
        incident.decision = Some(DecisionView {
            id: event.envelope.event_id.clone(),
            outcome: event.outcome,
            by: event.by,
            channel: event.channel,
            reason: event.reason,
            at: event.envelope.time,
        });
    }

    fn application(&mut self, event: Application) {
        let incident = self.incident(&event.envelope);
        incident.status = if event.outcome == "applied" { "healed" } else { "failed" }.into();
        if event.outcome == "applied" && incident.healed_at.is_none() {
            incident.healed_at = Some(event.envelope.time);
        }
        incident.application = Some(ApplicationView {
            outcome: event.outcome,
            statements: event.statements,
            replayed: event.replayed,
            loaded: event.loaded,
            still_quarantined: event.still_quarantined,
            error: event.error,
        });
    }

    pub fn incidents(&self) -> Vec<Incident> {
        let mut all: Vec<Incident> =
            self.incidents.values().filter(|i| i.writer_schema_id.is_some()).cloned().collect();
        all.sort_by_key(|i| i.detected_at);
        all
    }
}

/// Proposals waiting longer than their dataset's `approval_timeout` are
/// escalated: notified again (Slack, and the log) once per timeout period,
/// and they stay open. The loader is never stalled meanwhile: records keep
/// flowing to quarantine. Runs until `shutdown`.
pub async fn escalate(
    context: Arc<Context>,
    model: Arc<Mutex<ReadModel>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = mend_shared::events::now_millis();
        let due: Vec<Proposal> = {
            let mut model = model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let ReadModel { incidents, proposals } = &mut *model;
            incidents
                .values_mut()
                .filter(|i| i.status == "awaiting_approval")
                .filter_map(|incident| {
                    let timeout = context.dataset(&incident.dataset)?.approval_timeout()?;
                    let timeout = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
                    let proposed = incident.proposed_at?;
                    let due = proposed.saturating_add(timeout.saturating_mul(i64::from(incident.escalations) + 1));
                    if now < due {
                        return None;
                    }
                    incident.escalations += 1;
                    proposals.get(incident.proposal_id.as_deref()?).cloned()
                })
                .collect()
        };
        for proposal in due {
            tracing::warn!(
                incident = %proposal.envelope.incident_id, proposal = %proposal.proposal_id, dataset = %proposal.envelope.dataset,
                "proposal still waits for a decision after its approval timeout: escalating"
            );
            if let Some(url) = &context.integrations.slack_webhook_url {
                let message = mend_shared::slack::proposal_message(&proposal, true);
                if let Err(error) = mend_shared::slack::post(&http, url, &message).await {
                    tracing::warn!(%error, "Slack escalation failed");
                }
            }
        }
    }
}

/// Keeps the read model current.
pub struct Projector {
    context: Arc<Context>,
    model: Arc<Mutex<ReadModel>>,
}

/// A decoded audit event.
enum AuditEvent {
    Detection(Detection),
    Diagnosis(Diagnosis),
    Proposal(Proposal),
    Decision(Decision),
    Application(Application),
}

impl Projector {
    async fn decode(&self, record: &Inbound) -> Result<Option<AuditEvent>, HandleError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        let codec = &self.context.codec;
        let decoded = match &*record.topic {
            topics::DETECTIONS => codec.decode_event(payload).await.map(AuditEvent::Detection),
            topics::DIAGNOSES => codec.decode_event(payload).await.map(AuditEvent::Diagnosis),
            topics::PROPOSALS => codec.decode_event(payload).await.map(AuditEvent::Proposal),
            topics::DECISIONS => codec.decode_event(payload).await.map(AuditEvent::Decision),
            topics::APPLICATIONS => codec.decode_event(payload).await.map(AuditEvent::Application),
            _ => return Ok(None),
        };
        match decoded {
            Ok(event) => Ok(Some(event)),
            Err(mend_shared::codec::CodecError::Invalid(reason)) => {
                tracing::warn!(topic = %record.topic, %reason, "unreadable audit event skipped");
                Ok(None)
            }
            Err(unavailable) => Err(unavailable.into()),
        }
    }
}

impl Handler for Projector {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut events = Vec::with_capacity(batch.len());
        for record in batch {
            events.extend(self.decode(record).await?);
        }
        let managed = |envelope: &Envelope| self.context.manages(&envelope.dataset);
        events.retain(|event| match event {
            AuditEvent::Detection(e) => managed(&e.envelope),
            AuditEvent::Diagnosis(e) => managed(&e.envelope),
            AuditEvent::Proposal(e) => managed(&e.envelope),
            AuditEvent::Decision(e) => managed(&e.envelope),
            AuditEvent::Application(e) => managed(&e.envelope),
        });
        let mut model = self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events {
            match event {
                AuditEvent::Detection(e) => model.detection(e),
                AuditEvent::Diagnosis(e) => model.diagnosis(e),
                AuditEvent::Proposal(e) => model.proposal(e),
                AuditEvent::Decision(e) => model.decision(e),
                AuditEvent::Application(e) => model.application(e),
            }
        }
        Ok(vec![Disposition::Emit(Vec::new()); batch.len()])
    }
}

/// What the HTTP handlers share.
pub struct Api {
    context: Arc<Context>,
    model: Arc<Mutex<ReadModel>>,
    /// Every runner of the process: healthy once all are consuming.
    health: Vec<(String, Arc<RunnerStatus>)>,
    settings: ApiSettings,
}

/// How the API authenticates its callers.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Who may call; empty = no authentication (loopback only).
    pub tokens: Vec<ApiToken>,
    /// Verifies `POST /slack/interactions` (MEND_SLACK_SIGNING_SECRET).
    pub slack_signing_secret: Option<String>,
    /// Verifies `POST /github/webhook` (MEND_GITHUB_WEBHOOK_SECRET).
    pub github_webhook_secret: Option<String>,
}

/// The authenticated caller of a request (absent without authentication).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The role a request needs: reading is for viewers, deciding for approvers,
/// anything else (operations) for admins.
fn required_role(method: &axum::http::Method, path: &str) -> Role {
    if method == axum::http::Method::GET {
        Role::Viewer
    } else if path.starts_with("/proposals/") && (path.ends_with("/approve") || path.ends_with("/reject")) {
        Role::Approver
    } else {
        Role::Admin
    }
}

/// Bearer-token authentication and role check, on every route but `/health`
/// once any token is configured.
async fn authorize(
    State(api): State<Arc<Api>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Slack and GitHub callbacks carry signatures of their own.
    let path = request.uri().path();
    if api.settings.tokens.is_empty()
        || path == "/health"
        || path.starts_with("/slack/")
        || path.starts_with("/github/")
    {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let unauthorized = |message: &str| {
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"mend\""),
        );
        response
    };
    let Some(presented) = presented.filter(|t| !t.is_empty()) else {
        return unauthorized("authentication required: send Authorization: Bearer <token>");
    };
    let hash = mend_shared::config::sha256_hex(presented);
    let Some(token) = api.settings.tokens.iter().find(|t| t.sha256.eq_ignore_ascii_case(&hash)) else {
        return unauthorized("unknown token");
    };
    let needed = required_role(request.method(), request.uri().path());
    if token.role < needed {
        return error(
            StatusCode::FORBIDDEN,
            format!("{} is a {:?} and this needs the {needed:?} role", token.name, token.role).to_lowercase(),
        );
    }
    request.extensions_mut().insert(Caller { name: token.name.clone(), role: token.role });
    next.run(request).await
}

impl Api {
    /// Waits until the read model knows `proposal_id`, at most `timeout`.
    async fn await_proposal(&self, proposal_id: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.model().proposals.contains_key(proposal_id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, ReadModel> {
        self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The projector's runner (a fresh group: the model is rebuilt from the start).
/// The projector, its status, and the read model it keeps.
pub type Projection = (Runner<Projector>, Arc<RunnerStatus>, Arc<Mutex<ReadModel>>);

pub fn runner(context: &Arc<Context>) -> anyhow::Result<Projection> {
    let model = Arc::new(Mutex::new(ReadModel::default()));
    let topics = [topics::DETECTIONS, topics::DIAGNOSES, topics::PROPOSALS, topics::DECISIONS, topics::APPLICATIONS]
        .map(str::to_owned)
        .to_vec();
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
    let api = Arc::new(Api { context, model, health, settings });
    Router::new()
        .route("/health", get(health_check))
        .route("/incidents", get(list_incidents))
        .route("/incidents/{id}", get(show_incident))
        .route("/proposals/{id}", get(show_proposal))
        .route("/proposals/{id}/approve", post(approve))
        .route("/proposals/{id}/reject", post(reject))
        .route("/slack/interactions", post(slack_interaction))
        .route("/github/webhook", post(github_webhook))
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn health_check(State(api): State<Arc<Api>>) -> Response {
    use std::sync::atomic::Ordering;
    let services: BTreeMap<String, bool> =
        api.health.iter().map(|(name, status)| (name.clone(), status.consuming.load(Ordering::Relaxed))).collect();
    let healthy = services.values().all(|c| *c);
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"healthy": healthy, "consuming": services}))).into_response()
}

/// Fills each incident's quarantined count from the warehouse, where the
/// loader keeps every record it quarantined (per dataset and writer schema,
/// which is what an incident is). Reading `mend.quarantine` for this would
/// cost a scan of an ever-growing topic at every start.
async fn with_quarantine_counts(api: &Api, mut incidents: Vec<Incident>) -> Vec<Incident> {
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

async fn list_incidents(State(api): State<Arc<Api>>) -> Response {
    let incidents = api.model().incidents();
    Json(with_quarantine_counts(&api, incidents).await).into_response()
}

async fn show_incident(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let incident = api.model().incidents.get(&id).filter(|i| i.writer_schema_id.is_some()).cloned();
    match incident {
        Some(incident) => Json(with_quarantine_counts(&api, vec![incident]).await.remove(0)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no incident {id}")),
    }
}

async fn show_proposal(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match api.model().proposals.get(&id) {
        Some(proposal) => Json(proposal.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no proposal {id}")),
    }
}

/// Body of approve and reject.
#[derive(Debug, Default, Deserialize)]
pub struct DecisionRequest {
    pub by: Option<String>,
    pub reason: Option<String>,
    pub channel: Option<String>,
}

async fn approve(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    body: Option<Json<DecisionRequest>>,
) -> Response {
    decide(&api, caller.map(|c| c.0), &id, "approved", body.map(|b| b.0).unwrap_or_default()).await
}

async fn reject(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    body: Option<Json<DecisionRequest>>,
) -> Response {
    decide(&api, caller.map(|c| c.0), &id, "rejected", body.map(|b| b.0).unwrap_or_default()).await
}

async fn decide(
    api: &Api,
    caller: Option<Caller>,
    proposal_id: &str,
    outcome: &str,
    request: DecisionRequest,
) -> Response {
    // An authenticated caller is who decides, whatever the body says.
    let by = match caller {
        Some(caller) => Some(caller.name),
        None => request.by.filter(|b| !b.trim().is_empty()),
    };
    let Some(by) = by else {
        return error(StatusCode::BAD_REQUEST, "say who decides: {\"by\": \"name\"}");
    };
    let channel = request.channel.unwrap_or_else(|| "api".into());
    match record_decision(api, proposal_id, outcome, by, channel, request.reason).await {
        Ok(decision) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "decision_id": decision.envelope.event_id, "proposal_id": decision.proposal_id,
                "outcome": decision.outcome, "by": decision.by, "plan_hash": decision.plan_hash,
            })),
        )
            .into_response(),
        Err((status, message)) => error(status, message),
    }
}

/// Records a decision on a proposal: checked against the read model (it
/// exists, it is not decided yet, policy does not block it), published to
/// `mend.decisions` and acknowledged by the broker before it counts.
pub async fn record_decision(
    api: &Api,
    proposal_id: &str,
    outcome: &str,
    by: String,
    channel: String,
    reason: Option<String>,
) -> Result<Decision, (StatusCode, String)> {
    let decision = {
        let mut model = api.model();
        let Some(proposal) = model.proposals.get(proposal_id).cloned() else {
            return Err((StatusCode::NOT_FOUND, format!("no proposal {proposal_id}")));
        };
        let incident = model.incident(&proposal.envelope);
        if let Some(decided) = &incident.decision {
            return Err((
                StatusCode::CONFLICT,
                format!("proposal {proposal_id} was already {} by {}; nothing applied", decided.outcome, decided.by),
            ));
        }
        if proposal.policy == "block" && outcome == "approved" {
            return Err((
                StatusCode::CONFLICT,
                format!("proposal {proposal_id} is blocked by policy: {}", proposal.rules.join("; ")),
            ));
        }
        let decision = Decision::on(&proposal, SERVICE, outcome, by, channel, reason);
        // Hold the proposal as decided now, so a second call is refused
        // even before the event comes back through the topic.
        model.decision(decision.clone());
        decision
    };
    let undo = |api: &Api| {
        let mut model = api.model();
        if let Some(incident) = model.incidents.get_mut(&decision.envelope.incident_id.0) {
            incident.decision = None;
            incident.status = "awaiting_approval".into();
        }
    };
    let payload = match api.context.codec.encode_event(&decision).await {
        Ok(payload) => payload,
        Err(e) => {
            undo(api);
            return Err((StatusCode::SERVICE_UNAVAILABLE, format!("cannot encode the decision: {e}")));
        }
    };
    let key = decision.envelope.dataset.clone();
    let record = FutureRecord::to(Decision::TOPIC).key(&key).payload(&payload);
    match api.context.producer.send(record, Duration::from_secs(30)).await {
        Ok(_) => Ok(decision),
        Err((e, _)) => {
            // Not recorded: let the proposal be decided again.
            undo(api);
            Err((StatusCode::SERVICE_UNAVAILABLE, format!("the decision was not recorded: {e}")))
        }
    }
}

/// `POST /github/webhook`: a merged pull request of a mend branch
/// (`mend/<proposal id>`) approves that proposal, recorded as decided by the
/// GitHub user who merged it. The delivery must be signed with the webhook
/// secret (`X-Hub-Signature-256`); other events are acknowledged and ignored.
async fn github_webhook(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = api.settings.github_webhook_secret.as_deref() else {
        return error(StatusCode::NOT_FOUND, "GitHub webhooks are not configured (MEND_GITHUB_WEBHOOK_SECRET)");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !mend_shared::github::verify(secret, header("x-hub-signature-256"), &body) {
        tracing::warn!("GitHub webhook with a missing or wrong signature refused");
        return error(StatusCode::UNAUTHORIZED, "missing or wrong X-Hub-Signature-256");
    }
    let ignored = |why: &str| (StatusCode::OK, Json(json!({"ignored": why}))).into_response();
    match header("x-github-event") {
        Some("ping") => return (StatusCode::OK, Json(json!({"pong": true}))).into_response(),
        Some("pull_request") => {}
        _ => return ignored("not a pull_request event"),
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let pull = &event["pull_request"];
    if event["action"] != "closed" || pull["merged"] != true {
        return ignored("not a merge");
    }
    let Some(proposal_id) = pull["head"]["ref"].as_str().and_then(|r| r.strip_prefix("mend/")) else {
        return ignored("not a mend branch");
    };
    let login = pull["merged_by"]["login"].as_str().or(event["sender"]["login"].as_str()).unwrap_or("unknown");
    // A merge can arrive while this process is still reading the audit
    // topics back (just started): give the read model a moment.
    api.await_proposal(proposal_id, Duration::from_secs(10)).await;
    let reason = Some(format!("merged pull request #{}", pull["number"]));
    match record_decision(&api, proposal_id, "approved", format!("github:{login}"), "github".into(), reason).await {
        Ok(decision) => (
            StatusCode::OK,
            Json(json!({"decision_id": decision.envelope.event_id, "proposal_id": decision.proposal_id})),
        )
            .into_response(),
        // Decided already (say, applied by policy): the merge only documents it.
        Err((StatusCode::CONFLICT, message)) => ignored(&message),
        Err((status, message)) => error(status, message),
    }
}

/// `POST /slack/interactions`: an Approve or Reject button pressed in the
/// message mend posted. The request must carry Slack's signature over the
/// exact body (and be at most five minutes old); the Slack user must be
/// mapped to an approver (`[slack] approvers` in mend.toml). The message is
/// then replaced, through `response_url`, by the decision.
async fn slack_interaction(
    State(api): State<Arc<Api>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(secret) = api.settings.slack_signing_secret.as_deref() else {
        return error(StatusCode::NOT_FOUND, "Slack interactions are not configured (MEND_SLACK_SIGNING_SECRET)");
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = mend_shared::events::now_millis() / 1000;
    if let Err(refused) =
        mend_shared::slack::verify(secret, header("x-slack-request-timestamp"), header("x-slack-signature"), &body, now)
    {
        tracing::warn!(%refused, "Slack interaction refused");
        return error(StatusCode::UNAUTHORIZED, refused.to_string());
    }
    let payload = form_urlencoded::parse(&body).find(|(k, _)| k == "payload").map(|(_, v)| v.into_owned());
    let Some(payload) = payload.and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok()) else {
        return error(StatusCode::BAD_REQUEST, "expected a form field `payload` holding Slack's JSON");
    };
    let action = &payload["actions"][0];
    let (Some(action_id), Some(proposal_id)) = (action["action_id"].as_str(), action["value"].as_str()) else {
        return error(StatusCode::BAD_REQUEST, "no action in the payload");
    };
    let outcome = match action_id {
        "approve" => "approved",
        "reject" => "rejected",
        other => return error(StatusCode::BAD_REQUEST, format!("unknown action {other:?}")),
    };
    let user = payload["user"]["id"].as_str().unwrap_or_default().to_owned();
    let response_url = payload["response_url"].as_str().map(str::to_owned);
    let reply = |message: serde_json::Value| {
        if let Some(url) = response_url.clone() {
            tokio::spawn(async move {
                if let Err(e) = mend_shared::slack::post(&reqwest::Client::new(), &url, &message).await {
                    tracing::warn!(error = %e, "could not update the Slack message");
                }
            });
        }
    };
    let Some(approver) = api.context.config.slack.approvers.get(&user).cloned() else {
        reply(json!({"response_type": "ephemeral", "replace_original": false,
                     "text": format!("<@{user}> is not a mend approver; nothing was decided")}));
        return error(StatusCode::FORBIDDEN, format!("Slack user {user} is not mapped to an approver"));
    };
    let reason = Some(format!("via Slack (user {user})"));
    api.await_proposal(proposal_id, Duration::from_secs(2)).await;
    match record_decision(&api, proposal_id, outcome, approver.clone(), "slack".into(), reason).await {
        Ok(decision) => {
            let verb = if outcome == "approved" { "Approved" } else { "Rejected" };
            let text = format!(
                "{verb} by {approver}: proposal {proposal_id} for dataset {} (decision {}, plan hash {})",
                decision.envelope.dataset, decision.envelope.event_id, decision.plan_hash
            );
            reply(json!({"replace_original": true, "text": text,
                         "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}));
            (StatusCode::OK, Json(json!({"decision_id": decision.envelope.event_id, "outcome": decision.outcome})))
                .into_response()
        }
        Err((status, message)) => {
            reply(json!({"response_type": "ephemeral", "replace_original": false, "text": message.clone()}));
            error(status, message)
        }
    }
}
