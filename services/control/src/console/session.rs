//! Signing in to the console. A token (or, when the API has no tokens and
//! so serves loopback only, a name) becomes a session: a random id in an
//! HttpOnly, SameSite=Strict cookie; the server keeps who it is, their role
//! and the session's CSRF token. Every state-changing request is a POST
//! that carries that token and, when the browser sends one, an `Origin` of
//! this host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use mend_config::{Caller, Role};
use serde::Deserialize;

use super::{Page, page};
use crate::Api;

/// The session cookie.
const COOKIE: &str = "mend_session";
/// How long a session lasts without signing in again.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The longest name a person may give without tokens.
const NAME_MAX: usize = 64;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub caller: Caller,
    /// Sent back in every form; a POST without it is refused.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether this person may approve and reject.
    pub fn may_decide(&self) -> bool {
        self.caller.role >= Role::Approver
    }

    pub fn role(&self) -> &'static str {
        match self.caller.role {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// The console's sessions, in memory: a restart signs everyone out.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session's id; None when the system has no random numbers to
    /// make one from.
    fn start(&self, caller: Caller) -> Option<String> {
        let id = random_token()?;
        let session = Session { caller, csrf: random_token()?, expires: Instant::now() + LIFETIME };
        let mut open = self.lock();
        open.retain(|_, s| s.expires > Instant::now());
        open.insert(id.clone(), session);
        Some(id)
    }

    fn get(&self, id: &str) -> Option<Session> {
        self.lock().get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    fn end(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// 256 bits from the operating system's generator, hex.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    match getrandom::fill(&mut bytes) {
        Ok(()) => Some(hex::encode(bytes)),
        Err(error) => {
            tracing::error!(%error, "no random numbers from the operating system: no console session can start");
            None
        }
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether a state-changing request comes from a page of this console: its
/// `Origin` (sent by every browser on a POST) names this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser: the CSRF token alone decides
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")).is_some_and(|o| o == host)
}

/// The session of a request; a page without one sends the browser to sign in.
pub(crate) struct Signed(pub Session);

impl FromRequestParts<Arc<Api>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Response> {
        if let Some(session) = cookie_value(&parts.headers).and_then(|id| api.sessions.get(id)) {
            return Ok(Self(session));
        }
        let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let target =
            format!("/console/login?next={}", form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>());
        Err(Redirect::to(&target).into_response())
    }
}

impl Signed {
    /// Refuses a form whose CSRF token is not this session's, or that
    /// comes from another origin.
    pub fn check(&self, headers: &HeaderMap, csrf: &str) -> Result<(), Forged> {
        use subtle::ConstantTimeEq as _;
        let matches: bool = self.0.csrf.as_bytes().ct_eq(csrf.as_bytes()).into();
        if matches && same_origin(headers) { Ok(()) } else { Err(Forged) }
    }
}

/// A form without this session's CSRF token, or from another site.
pub(crate) struct Forged;

impl IntoResponse for Forged {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, "this form is stale or comes from another site: reload the page and try again")
            .into_response()
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    page: Page<'a>,
    /// Tokens are configured: sign in with one; else give a name.
    tokens: bool,
    next: &'a str,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Next {
    #[serde(default)]
    next: Option<String>,
}

/// Only paths of this console, never another site.
fn safe_next(next: Option<&str>) -> &str {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\')).unwrap_or("/")
}

pub(crate) async fn login_form(State(api): State<Arc<Api>>, Query(next): Query<Next>) -> Response {
    let tokens = !api.settings.tokens.is_empty();
    page(&Login { page: Page::anonymous("Sign in"), tokens, next: safe_next(next.next.as_deref()), error: None })
}

#[derive(Debug, Deserialize)]
pub(crate) struct Credentials {
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    next: Option<String>,
}

pub(crate) async fn login(State(api): State<Arc<Api>>, headers: HeaderMap, Form(form): Form<Credentials>) -> Response {
    let tokens = !api.settings.tokens.is_empty();
    let next = safe_next(form.next.as_deref());
    let refuse = |error: &str| {
        let mut response =
            page(&Login { page: Page::anonymous("Sign in"), tokens, next, error: Some(error.to_owned()) });
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
    };
    if !same_origin(&headers) {
        return refuse("sign in from this console's own page");
    }
    let caller = if tokens {
        let hash = mend_config::sha256_hex(form.token.trim());
        match api.settings.tokens.iter().find(|t| !form.token.trim().is_empty() && t.sha256.eq_ignore_ascii_case(&hash))
        {
            Some(token) => Caller { name: token.name.clone(), role: token.role },
            None => return refuse("unknown token"),
        }
    } else {
        let name = form.name.trim();
        if name.is_empty() || name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
            return refuse("give your name (up to 64 characters): it is recorded with your decisions");
        }
        // No tokens: the API serves loopback only and everyone is an admin.
        Caller { name: name.to_owned(), role: Role::Admin }
    };
    tracing::info!(name = %caller.name, role = ?caller.role, "console sign-in");
    let Some(id) = api.sessions.start(caller) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the operating system gave no random numbers for a session id")
            .into_response();
    };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", LIFETIME.as_secs());
    let mut response = Redirect::to(next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A form that carries nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

impl CsrfOnly {
    pub fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(crate) async fn logout(
    State(api): State<Arc<Api>>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(forged) = signed.check(&headers, &form.csrf) {
        return forged.into_response();
    }
    if let Some(id) = cookie_value(&headers) {
        api.sessions.end(id);
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mend_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_consoles_paths_are_followed_after_sign_in() {
        assert_eq!(safe_next(Some("/console/incidents/x?y=1")), "/console/incidents/x?y=1");
        for hostile in ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"] {
            assert_eq!(safe_next(Some(hostile)), "/", "{hostile}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn a_post_from_another_site_is_not_same_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers), "no Origin: not a browser");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; mend_session=abc; b=2"));
        assert_eq!(cookie_value(&headers), Some("abc"));
    }
}
