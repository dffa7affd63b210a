//! The inbox: incidents waiting for a person first, oldest first, with what
//! changed, what is held and who is asked; then every incident, newest
//! first, filtered by dataset and status, a page at a time. Both lists
//! update live (see `live`).

use std::collections::BTreeSet;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use mend_config::Role;
use mend_model::api::Incident;
use mend_model::{IncidentStatus, StepKind};
use serde::Deserialize;

use super::session::Signed;
use super::view::{Chip, ago, chips, count, now_ms, state, utc};
use super::{Failed, Page, not_warm, page};
use crate::Api;
use crate::incidents::with_quarantine_counts;

/// Incidents per page of the full list.
const PER_PAGE: usize = 50;

/// The inbox's filters and page, as the query string carries them.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Filter {
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: Option<usize>,
}

impl Filter {
    fn page(&self) -> usize {
        self.page.unwrap_or(1).max(1)
    }

    fn keeps(&self, incident: &Incident) -> bool {
        (self.dataset.is_empty() || incident.dataset == self.dataset)
            && (self.status.is_empty() || incident.status.as_str() == self.status)
    }

    /// The query string of page `page` with these filters.
    fn query(&self, page: usize) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("dataset", &self.dataset)
            .append_pair("status", &self.status)
            .append_pair("page", &page.to_string())
            .finish()
    }
}

/// One incident as a row.
pub(crate) struct Row {
    id: String,
    dataset: String,
    state_word: &'static str,
    state_class: &'static str,
    sentence: String,
    detected: String,
    age: String,
    chips: Vec<Chip>,
    quarantined: String,
    asked: String,
}

/// The live part of the inbox: both lists and the pager.
#[derive(Template)]
#[template(path = "inbox_rows.html")]
pub(crate) struct Rows {
    waiting: Vec<Row>,
    /// Waiting incidents beyond the first [`PER_PAGE`], not listed.
    more_waiting: usize,
    rest: Vec<Row>,
    total: usize,
    page: usize,
    pages: usize,
    previous: Option<String>,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct Inbox<'a> {
    page: Page<'a>,
    /// Each dataset and status, and whether the filter has it.
    datasets: Vec<(String, bool)>,
    statuses: Vec<(&'static str, bool)>,
    rows_url: String,
    rows_html: String,
}

/// Who is asked to decide an incident's plan.
fn asked(api: &Api, incident: &Incident) -> String {
    let approvers: Vec<&str> =
        api.settings.tokens.iter().filter(|t| t.role >= Role::Approver).map(|t| t.name.as_str()).collect();
    let mut who = if approvers.is_empty() { vec!["any approver".to_owned()] } else { vec![approvers.join(", ")] };
    if api.context.integrations.slack_webhook_url.is_some() {
        who.push("Slack".into());
    }
    let pull_request = incident.steps.iter().any(|s| s.kind == StepKind::DbtPatch)
        && api.context.dataset(&incident.dataset).is_some_and(|d| d.github.is_some());
    if pull_request {
        who.push("GitHub pull request".into());
    }
    who.join(" · ")
}

fn row(api: &Api, incident: &Incident, now: i64) -> Row {
    let state = state(incident, now);
    let waiting = incident.status == IncidentStatus::AwaitingApproval;
    Row {
        id: incident.id.clone(),
        dataset: incident.dataset.clone(),
        state_word: state.word,
        state_class: state.class,
        sentence: state.sentence,
        detected: utc(incident.detected_at),
        age: ago(incident.detected_at, now),
        chips: chips(&incident.changes),
        quarantined: count(incident.quarantined),
        asked: if waiting { asked(api, incident) } else { String::new() },
    }
}

async fn rows_of(api: &Api, filter: &Filter) -> Rows {
    let all = api.model().incidents();
    let now = now_ms();
    let mut waiting: Vec<Incident> =
        all.iter().filter(|i| i.status == IncidentStatus::AwaitingApproval && filter.keeps(i)).cloned().collect();
    waiting.sort_by_key(|i| i.proposed_at.unwrap_or(i.detected_at));
    let more_waiting = waiting.len().saturating_sub(PER_PAGE);
    waiting.truncate(PER_PAGE);
    let rest: Vec<&Incident> = all.iter().rev().filter(|i| filter.keeps(i)).collect();
    let total = rest.len();
    let pages = total.div_ceil(PER_PAGE).max(1);
    let page = filter.page().min(pages);
    let shown: Vec<Incident> = rest.into_iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).cloned().collect();
    // Counted in the warehouse, for the rows shown only.
    let waiting = with_quarantine_counts(api, waiting).await;
    let shown = with_quarantine_counts(api, shown).await;
    Rows {
        waiting: waiting.iter().map(|i| row(api, i, now)).collect(),
        more_waiting,
        rest: shown.iter().map(|i| row(api, i, now)).collect(),
        total,
        page,
        pages,
        previous: (page > 1).then(|| filter.query(page - 1)),
        next: (page < pages).then(|| filter.query(page + 1)),
    }
}

pub(crate) async fn inbox(
    State(api): State<Arc<Api>>,
    Signed(session): Signed,
    Query(filter): Query<Filter>,
) -> Response {
    if let Some(busy) = not_warm(&api, &session).await {
        return busy;
    }
    let rows_html = match rows_of(&api, &filter).await.render() {
        Ok(html) => html,
        Err(e) => return Failed(e).into_response(),
    };
    // The configured datasets and those of incidents (a topic pattern's).
    let mut names: BTreeSet<String> = api.context.config.datasets.iter().map(|d| d.name.clone()).collect();
    names.extend(api.model().incidents.values().map(|i| i.dataset.clone()));
    let datasets = names.into_iter().map(|name| (name.clone(), name == filter.dataset)).collect();
    let statuses = IncidentStatus::ALL.iter().map(|s| (s.as_str(), s.as_str() == filter.status)).collect();
    let rows_url = format!("/console/inbox/rows?{}", filter.query(filter.page()));
    page(&Inbox { page: Page::of("Inbox", &session), datasets, statuses, rows_url, rows_html })
}

/// The lists alone, for the page's live updates.
pub(crate) async fn rows(
    State(api): State<Arc<Api>>,
    Signed(session): Signed,
    Query(filter): Query<Filter>,
) -> Response {
    if let Some(busy) = not_warm(&api, &session).await {
        return busy;
    }
    page(&rows_of(&api, &filter).await)
}
