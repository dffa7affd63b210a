//! The control API of a running `mend up`, over HTTP: the [`Control`] of
//! processes that do not hold the read model (`mend mcp` on stdio, the
//! supervisor), so every decision and draft is authorized and recorded by
//! the API, as for every other channel.

use futures::future::BoxFuture;
use mend_config::Caller;
use mend_model::Secret;
use mend_model::api::{DecisionRecorded, DecisionRequest, DraftOutcome, DraftRequest, Health, Incident, RevertRequest};
use mend_model::events::PlanStep;
use mend_model::{Channel, Verdict};
use serde::de::DeserializeOwned;

use crate::{Control, ToolFailure};

/// A failed call to the control API, said for a person.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

/// A client of the control API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Bearer token (empty: none sent).
    token: Secret,
}

impl Client {
    pub fn new(api_addr: &str, token: Secret) -> Self {
        let base = if api_addr.starts_with("http") { api_addr.to_owned() } else { format!("http://{api_addr}") };
        Self { base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new(), token }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Vec<u8>), ApiError> {
        let request = if self.token.is_empty() { request } else { request.bearer_auth(self.token.expose()) };
        let response = request.send().await.map_err(|e| {
            ApiError(format!(
                "cannot reach the control API at {} ({e}); is `mend up` running? (MEND_API_ADDR)",
                self.base
            ))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| ApiError(format!("{status}: the answer broke off: {e}")))?;
        Ok((status, body.to_vec()))
    }

    async fn call<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ApiError> {
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<mend_model::api::ApiError>(&body)
                .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
            return Err(ApiError(format!("{status}: {message}")));
        }
        self.read(&body)
    }

    fn read<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| {
            ApiError(format!(
                "the control API at {} answered what this mend cannot read ({e}): a different version?",
                self.base
            ))
        })
    }

    /// The API's health; it is answered also while mend is not healthy (503).
    pub async fn health(&self) -> Result<Health, ApiError> {
        let (status, body) = self.send(self.http.get(format!("{}/health", self.base))).await?;
        if status.is_success() || status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            self.read(&body)
        } else {
            Err(ApiError(format!("{status}: {}", String::from_utf8_lossy(&body))))
        }
    }

    pub async fn incidents(&self) -> Result<Vec<Incident>, ApiError> {
        self.call(self.http.get(format!("{}/incidents", self.base))).await
    }

    pub async fn incident(&self, id: &str) -> Result<Incident, ApiError> {
        self.call(self.http.get(format!("{}/incidents/{id}", self.base))).await
    }

    pub async fn decide(
        &self,
        proposal: &str,
        verdict: Verdict,
        by: &str,
        reason: Option<&str>,
        channel: Channel,
    ) -> Result<DecisionRecorded, ApiError> {
        let verb = if verdict == Verdict::Approved { "approve" } else { "reject" };
        let body =
            DecisionRequest { by: Some(by.to_owned()), reason: reason.map(str::to_owned), channel: Some(channel) };
        self.call(self.http.post(format!("{}/proposals/{proposal}/{verb}", self.base)).json(&body)).await
    }

    /// Hands over a drafted plan for `incident`; with `proposal_id`, handing
    /// the same draft over again is answered with the first outcome.
    pub async fn propose(
        &self,
        incident: &str,
        steps: &[PlanStep],
        rationale: &str,
        by: &str,
        proposal_id: Option<&str>,
    ) -> Result<DraftOutcome, ApiError> {
        let body = DraftRequest {
            steps: steps.to_vec(),
            rationale: rationale.to_owned(),
            by: Some(by.to_owned()),
            proposal_id: proposal_id.map(str::to_owned),
        };
        self.call(self.http.post(format!("{}/incidents/{incident}/proposals", self.base)).json(&body)).await
    }

    /// Asks for the revert of `incident`'s applied plan: its incident and
    /// plan, waiting for approval.
    pub async fn revert(&self, incident: &str, reason: &str, by: &str) -> Result<DraftOutcome, ApiError> {
        let body = RevertRequest { reason: reason.to_owned(), by: Some(by.to_owned()) };
        self.call(self.http.post(format!("{}/incidents/{incident}/revert", self.base)).json(&body)).await
    }
}

/// Incidents, decisions and drafts through the control API, as `by`.
#[derive(Debug)]
pub struct Remote {
    pub api: Client,
    /// Who this process is when the API has no tokens (with tokens, the
    /// token's name is recorded).
    pub by: String,
    /// Whether its caller may decide proposals (a person's client); the
    /// supervisor drafts and never decides.
    pub may_decide: bool,
    /// Draft ids chosen here, `(incident, attempt)` → id, so handing a
    /// draft over again after a restart records nothing twice; None: the
    /// API picks new ones.
    pub draft_id: Option<fn(&str, usize) -> String>,
    /// Drafts handed over so far (the next attempt's number).
    pub attempts: std::sync::atomic::AtomicUsize,
}

impl Remote {
    /// A person's client of the API (`mend mcp`): decides, API-made ids.
    pub fn new(api: Client, by: &str) -> Self {
        Self { api, by: by.to_owned(), may_decide: true, draft_id: None, attempts: Default::default() }
    }
}

impl Control for Remote {
    fn incidents(&self) -> BoxFuture<'_, Result<Vec<Incident>, ToolFailure>> {
        Box::pin(async move { self.api.incidents().await.map_err(|e| e.to_string()) })
    }

    fn incident<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Incident, ToolFailure>> {
        Box::pin(async move { self.api.incident(id).await.map_err(|e| e.to_string()) })
    }

    fn decide<'a>(
        &'a self,
        _caller: Option<&'a Caller>,
        proposal_id: &'a str,
        verdict: Verdict,
        reason: Option<String>,
    ) -> BoxFuture<'a, Result<DecisionRecorded, ToolFailure>> {
        Box::pin(async move {
            if !self.may_decide {
                return Err("this client drafts plans; only a person decides them".to_owned());
            }
            self.api
                .decide(proposal_id, verdict, &self.by, reason.as_deref(), Channel::Mcp)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn propose<'a>(
        &'a self,
        _caller: Option<&'a Caller>,
        incident_id: &'a str,
        steps: Vec<PlanStep>,
        rationale: String,
    ) -> BoxFuture<'a, Result<DraftOutcome, ToolFailure>> {
        Box::pin(async move {
            let attempt = self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = self.draft_id.map(|draft_id| draft_id(incident_id, attempt));
            self.api.propose(incident_id, &steps, &rationale, &self.by, id.as_deref()).await.map_err(|e| e.to_string())
        })
    }
}
