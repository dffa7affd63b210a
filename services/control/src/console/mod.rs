//! The on-call console: the incidents, their evidence and their plans in a
//! browser, decided in one click. Server-rendered HTML (askama templates,
//! checked at compile time, escaping everything they print) over the same
//! read model the API serves, a small script of mend's own for live
//! updates (server-sent events), and no script or style from anywhere else
//! (the Content-Security-Policy says so to the browser).
//!
//! Pages: the inbox (`/`), an incident (`/console/incidents/{id}`), the
//! datasets (`/console/datasets`, each one's page), the audit log
//! (`/console/audit`), sign-in and sign-out. Who may do what is the API's roles: viewers read,
//! approvers decide (recorded with channel `console` and their name).

pub(crate) mod audit;
mod datasets;
mod inbox;
mod incident;
mod live;
pub(crate) mod session;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::Api;
use session::Session;

pub(crate) use session::Sessions;

/// What every page's frame shows: its title and who is signed in.
pub(crate) struct Page<'a> {
    pub title: &'a str,
    pub session: Option<&'a Session>,
}

impl<'a> Page<'a> {
    pub fn anonymous(title: &'a str) -> Self {
        Self { title, session: None }
    }

    pub fn of(title: &'a str, session: &'a Session) -> Self {
        Self { title, session: Some(session) }
    }

    pub fn name(&self) -> &str {
        self.session.map_or("", |s| s.caller.name.as_str())
    }

    pub fn role(&self) -> &str {
        self.session.map_or("", Session::role)
    }

    pub fn csrf(&self) -> &str {
        self.session.map_or("", |s| s.csrf.as_str())
    }
}

/// A rendered template, or a plain 500 saying what failed.
pub(crate) fn page(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => Failed(e).into_response(),
    }
}

/// A template that did not render.
pub(crate) struct Failed(pub askama::Error);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("rendering the page failed: {}", self.0)).into_response()
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct Message<'a> {
    page: Page<'a>,
    heading: &'a str,
    text: &'a str,
    /// Reload the page by itself (a state that resolves on its own).
    refresh: bool,
}

/// A page saying one thing, with `status`.
pub(crate) fn message(session: Option<&Session>, status: StatusCode, heading: &str, text: &str) -> Response {
    let refresh = status == StatusCode::SERVICE_UNAVAILABLE;
    let mut response = page(&Message { page: Page { title: heading, session }, heading, text, refresh });
    *response.status_mut() = status;
    response
}

/// 503 while the read model is still reading the audit topics.
pub(crate) async fn not_warm(api: &Api, session: &Session) -> Option<Response> {
    (!api.warm().await).then(|| {
        message(
            Some(session),
            StatusCode::SERVICE_UNAVAILABLE,
            "Catching up",
            "mend is reading its audit topics after a start; this page reloads itself when it is done.",
        )
    })
}

const CSS: &str = include_str!("../../console/console.css");
const JS: &str = include_str!("../../console/console.js");
const ICON: &str = include_str!("../../console/icon.svg");

/// What the browser may load and run on a console page: this server's own
/// script and style, nothing inline, nothing from elsewhere, no framing.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                      form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn secured(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The console's routes.
pub(crate) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/", get(inbox::inbox))
        .route("/console/inbox/rows", get(inbox::rows))
        .route("/console/incidents/{id}", get(incident::show))
        .route("/console/incidents/{id}/status", get(incident::status))
        .route("/console/incidents/{id}/approve", post(incident::approve))
        .route("/console/incidents/{id}/reject", post(incident::reject))
        .route("/console/audit", get(audit::show))
        .route("/console/audit/verify", post(audit::check))
        .route("/console/audit/export", get(audit::export))
        .route("/console/datasets", get(datasets::list))
        .route("/console/datasets/{name}", get(datasets::show))
        .route("/console/datasets/{name}/samples", get(datasets::samples))
        .route("/console/events", get(live::events))
        .route("/console/login", get(session::login_form).post(session::login))
        .route("/console/logout", post(session::logout))
        .route("/console/assets/console.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route("/console/assets/console.js", get(|| async { asset(JS, "text/javascript; charset=utf-8") }))
        .route("/console/assets/icon.svg", get(|| async { asset(ICON, "image/svg+xml") }))
        .layer(axum::middleware::from_fn(secured))
}
