//! The audit log in the console: verify it now (the same check as `mend
//! audit verify` on the live topics), the last result and the newest
//! digest of this deployment's chain, an export to download (as `mend
//! audit export` writes it), and each incident's timeline as of the last
//! check, with a badge saying whether the check found anything in its
//! events.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use mend_audit::verify::Scope;
use mend_audit::{Entry, Options, Record, Report, Selection, export_lines, read_topics, timeline, verify};
use serde::Deserialize;

use super::session::{CsrfOnly, Signed};
use super::view::{now_ms, utc};
use super::{Page, message, page};
use crate::Api;

/// How long an export waits for the sealer to seal what it exports.
const EXPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The last check, kept until the next.
pub(crate) struct Checked {
    pub at: i64,
    pub by: String,
    pub report: Report,
    /// The log as read for the check (the incidents' timelines come from it).
    pub entries: Vec<Entry>,
}

/// The newest digest of a chain, as shown.
struct Digest {
    sequence: i64,
    time: String,
    hash: String,
    signed: bool,
    ranges: usize,
}

fn newest_digest(entries: &[Entry], chain: &str) -> Option<Digest> {
    entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Digest(d) if d.chain == chain => Some(d),
            _ => None,
        })
        .max_by_key(|d| d.sequence)
        .map(|d| Digest {
            sequence: d.sequence,
            time: utc(d.time),
            hash: d.hash.clone(),
            signed: d.signature.is_some(),
            ranges: d.ranges.len(),
        })
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    page: Page<'a>,
    chain: String,
    checked: Option<(String, String)>,
    clean: bool,
    events: usize,
    digests: usize,
    findings: Vec<(String, String)>,
    more_findings: usize,
    /// Each note, and its start when it is long enough to fold.
    notes: Vec<(String, Option<String>)>,
    retried: Vec<(String, usize)>,
    digest: Option<Digest>,
    datasets: Vec<String>,
}

/// The page saying the audit topics could not be read, and why.
fn unreadable(session: &super::session::Session, error: &mend_audit::AuditError) -> Response {
    let why = format!("reading the audit topics failed: {error}");
    message(Some(session), StatusCode::SERVICE_UNAVAILABLE, "Cannot read the audit log", &why)
}

/// Findings shown at most; the rest are counted.
const FINDINGS_SHOWN: usize = 50;

pub(crate) async fn show(State(api): State<Arc<Api>>, Signed(session): Signed) -> Response {
    let chain = api.context.connections.group_prefix.clone();
    let last = api.audit.lock().await;
    let datasets = api.context.config.datasets.iter().map(|d| d.name.clone()).collect();
    let mut shown = AuditPage {
        page: Page::of("Audit", &session),
        chain: chain.clone(),
        checked: None,
        clean: false,
        events: 0,
        digests: 0,
        findings: Vec::new(),
        more_findings: 0,
        notes: Vec::new(),
        retried: Vec::new(),
        digest: None,
        datasets,
    };
    if let Some(checked) = last.as_ref() {
        let report = &checked.report;
        shown.checked = Some((utc(checked.at), checked.by.clone()));
        shown.clean = report.is_clean();
        shown.events = report.events;
        shown.digests = report.digests;
        shown.findings =
            report.findings.iter().take(FINDINGS_SHOWN).map(|f| (f.position.to_string(), f.problem.clone())).collect();
        shown.more_findings = report.findings.len().saturating_sub(FINDINGS_SHOWN);
        shown.notes = report
            .notes
            .iter()
            .map(|n| (n.clone(), (n.chars().count() > 300).then(|| n.chars().take(200).collect())))
            .collect();
        shown.retried = report.retried.iter().map(|(s, n)| (s.clone(), *n)).collect();
        shown.digest = newest_digest(&checked.entries, &chain);
    }
    page(&shown)
}

/// Reads the audit topics and verifies them, as `mend audit verify` does.
pub(crate) async fn check(
    State(api): State<Arc<Api>>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(forged) = signed.check(&headers, form.csrf()) {
        return forged.into_response();
    }
    let session = signed.0;
    let entries = match read_topics(&api.context.connections.brokers, &api.context.codec).await {
        Ok(entries) => entries,
        Err(e) => return unreadable(&session, &e),
    };
    let options = Options {
        scope: Scope::Live { now: now_ms() },
        chain: Some(api.context.connections.group_prefix.clone()),
        public_key: None,
    };
    // Hashing every event is CPU work: off the request threads.
    let checked = tokio::task::spawn_blocking(move || {
        let report = verify(&entries, &options);
        (report, entries)
    })
    .await;
    let Ok((report, entries)) = checked else {
        return message(Some(&session), StatusCode::INTERNAL_SERVER_ERROR, "Verification failed", "the check stopped");
    };
    tracing::info!(by = %session.caller.name, events = report.events, findings = report.findings.len(), "audit log verified from the console");
    *api.audit.lock().await = Some(Checked { at: now_ms(), by: session.caller.name.clone(), report, entries });
    Redirect::to("/console/audit").into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ExportQuery {
    #[serde(default)]
    dataset: String,
}

/// The log (or one dataset's part of it) as `mend audit export` writes it.
pub(crate) async fn export(
    State(api): State<Arc<Api>>,
    Signed(session): Signed,
    Query(query): Query<ExportQuery>,
) -> Response {
    let chain = api.context.connections.group_prefix.clone();
    let brokers = &api.context.connections.brokers;
    let entries = match mend_audit::sealed_log(brokers, &api.context.codec, &chain, EXPORT_WAIT, |_| {}).await {
        Ok(entries) => entries,
        Err(e) => return unreadable(&session, &e),
    };
    let dataset = Some(query.dataset.trim().to_owned()).filter(|d| !d.is_empty());
    let file = format!("mend-audit-{}.jsonl", dataset.as_deref().unwrap_or(&chain));
    let selection = Selection { chain, dataset, from: None, to: None };
    let (export_header, selected) = mend_audit::export::select(&entries, &selection);
    let text = export_lines(&export_header, &selected);
    let disposition = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        file.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_' && c != '.', "_")
    ))
    .unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson")),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        text,
    )
        .into_response()
}

/// One event of an incident's timeline, as shown.
pub(crate) struct Step {
    /// The day, and the time of day to the millisecond.
    pub day: String,
    pub time: String,
    pub what: &'static str,
    pub service: String,
    pub who: String,
    pub summary: String,
    /// The summary's start, when it is long enough to fold.
    pub short: Option<String>,
    pub position: String,
}

/// An incident's timeline from the last check, and what the check says of
/// its events: None before any check.
pub(crate) struct Trail {
    pub steps: Vec<Step>,
    pub phases: Vec<(String, String)>,
    /// "verified" or "findings": what the check found in its events.
    pub badge: &'static str,
    pub verdict: String,
}

pub(crate) async fn trail(api: &Api, incident: &str) -> Option<Trail> {
    let last = api.audit.lock().await;
    let checked = last.as_ref()?;
    let found = timeline::timeline(&checked.entries, incident)?;
    let positions: Vec<&mend_audit::LogPosition> = found.steps.iter().map(|s| &s.position).collect();
    let findings = checked.report.findings.iter().filter(|f| positions.contains(&&f.position)).count();
    let (badge, verdict) = if findings > 0 {
        ("findings", format!("{findings} findings of the check at {} touch this incident's events", utc(checked.at)))
    } else {
        ("verified", format!("its events' chain and digests verified at {}", utc(checked.at)))
    };
    Some(Trail {
        steps: found
            .steps
            .iter()
            .map(|s| Step {
                day: utc(s.time).get(..10).unwrap_or_default().to_owned(),
                time: super::view::clock(s.time),
                what: s.what,
                service: s.service.clone(),
                who: s.who.clone().unwrap_or_default(),
                summary: s.summary.to_string(),
                short: {
                    let text = s.summary.to_string();
                    (text.chars().count() > 160).then(|| text.chars().take(120).collect())
                },
                position: s.position.to_string(),
            })
            .collect(),
        phases: found.phases.iter().map(|(p, s)| (p.clone(), super::view::span(*s))).collect(),
        badge,
        verdict,
    })
}
