//! Who may call the API: bearer tokens (their SHA-256s in mend.toml or
//! `MEND_API_TOKENS`) and roles. Without tokens, no authentication (the
//! API then listens on loopback only).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
pub use mend_config::Caller;
use mend_config::{ApiToken, Role, Secret};

use crate::Api;

/// How the API authenticates its callers, and what it says of the process.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Whether the supervisor runs with a key (`/health` says so).
    pub supervisor: bool,
    /// Who may call; empty = no authentication (loopback only).
    pub tokens: Vec<ApiToken>,
    /// Verifies `POST /slack/interactions` (MEND_SLACK_SIGNING_SECRET).
    pub slack_signing_secret: Option<Secret>,
    /// Verifies `POST /github/webhook` (MEND_GITHUB_WEBHOOK_SECRET).
    pub github_webhook_secret: Option<Secret>,
}

/// Who a request speaks for: an authenticated caller, whatever the body
/// says; without authentication, the body's `by` when it names someone.
pub(crate) fn who(caller: Option<Caller>, by: Option<String>) -> Option<String> {
    match caller {
        Some(caller) => Some(caller.name),
        None => by.filter(|b| !b.trim().is_empty()),
    }
}

/// The role a request needs: reading is for viewers, deciding for approvers,
/// anything else (operations) for admins.
pub(crate) fn required_role(method: &axum::http::Method, path: &str) -> Role {
    if method == axum::http::Method::GET {
        Role::Viewer
    } else if (path.starts_with("/proposals/") && (path.ends_with("/approve") || path.ends_with("/reject")))
        || (path.starts_with("/incidents/") && (path.ends_with("/proposals") || path.ends_with("/revert")))
        || path == "/api/v1/lineage"
    {
        // Deciding, handing over a drafted plan or a revert, reporting a pipeline failure.
        Role::Approver
    } else if path == "/mcp" {
        // Each MCP tool checks the caller's role itself (read tools are
        // for viewers, decisions and proposals for approvers).
        Role::Viewer
    } else {
        Role::Admin
    }
}

/// Bearer-token authentication and role check, on every route but `/health`
/// once any token is configured.
pub(crate) async fn authorize(
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
        let mut response = crate::error(StatusCode::UNAUTHORIZED, message);
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"mend\""),
        );
        response
    };
    let Some(presented) = presented.filter(|t| !t.is_empty()) else {
        return unauthorized("authentication required: send Authorization: Bearer <token>");
    };
    let hash = mend_config::sha256_hex(presented);
    let Some(token) = api.settings.tokens.iter().find(|t| t.sha256.eq_ignore_ascii_case(&hash)) else {
        return unauthorized("unknown token");
    };
    let needed = required_role(request.method(), request.uri().path());
    if token.role < needed {
        return crate::error(
            StatusCode::FORBIDDEN,
            format!("{} is a {:?} and this needs the {needed:?} role", token.name, token.role).to_lowercase(),
        );
    }
    request.extensions_mut().insert(Caller { name: token.name.clone(), role: token.role });
    next.run(request).await
}
