//! The MCP server at `/mcp` (streamable HTTP, both protocol generations),
//! reading incidents from this process's read model and recording decisions
//! through the same path as every other channel (channel `mcp`).

use std::sync::Arc;

use futures::future::BoxFuture;
use mend_config::Caller;
use mend_mcp::server::{Auth, McpServer};
use mend_mcp::{Control, ToolFailure};
use mend_model::api::{DecisionRecorded, DraftOutcome, Incident};
use mend_model::events::PlanStep;
use mend_model::{Channel, Verdict};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::Api;
use crate::decisions::record_decision;
use crate::drafts::record_draft;
use crate::incidents::with_quarantine_counts;

/// Incidents and decisions of this process, for the MCP tools.
pub struct Local {
    pub(crate) api: Arc<Api>,
}

impl Control for Local {
    fn incidents(&self) -> BoxFuture<'_, Result<Vec<Incident>, ToolFailure>> {
        Box::pin(async move {
            let incidents = self.api.model().incidents();
            Ok(with_quarantine_counts(&self.api, incidents).await)
        })
    }

    fn incident<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Incident, ToolFailure>> {
        Box::pin(async move {
            let incident = self.api.model().incidents.get(id).filter(|i| i.is_known()).cloned();
            let incident = incident.ok_or_else(|| format!("no incident {id}; list_incidents shows their ids"))?;
            let mut counted = with_quarantine_counts(&self.api, vec![incident]).await;
            Ok(counted.remove(0))
        })
    }

    fn decide<'a>(
        &'a self,
        caller: Option<&'a Caller>,
        proposal_id: &'a str,
        verdict: Verdict,
        reason: Option<String>,
    ) -> BoxFuture<'a, Result<DecisionRecorded, ToolFailure>> {
        Box::pin(async move {
            let by = Self::by(caller);
            match record_decision(&self.api, proposal_id, verdict, by, Channel::Mcp, reason).await {
                Ok(decision) => Ok(DecisionRecorded::of(&decision)),
                Err((_, message)) => Err(message),
            }
        })
    }

    fn propose<'a>(
        &'a self,
        caller: Option<&'a Caller>,
        incident_id: &'a str,
        steps: Vec<PlanStep>,
        rationale: String,
    ) -> BoxFuture<'a, Result<DraftOutcome, ToolFailure>> {
        Box::pin(async move {
            record_draft(&self.api, incident_id, Self::by(caller), steps, rationale, None)
                .await
                .map_err(|(_, message)| message)
        })
    }
}

impl Local {
    fn by(caller: Option<&Caller>) -> String {
        // Without tokens (loopback only) nobody is authenticated: recorded
        // as made through MCP.
        caller.map_or_else(|| "mcp".to_owned(), |c| c.name.clone())
    }
}

/// The `/mcp` service: a new server per session (or per stateless request),
/// sharing this process's context and read model.
pub fn service(api: Arc<Api>) -> StreamableHttpService<McpServer, LocalSessionManager> {
    let auth = if api.settings.tokens.is_empty() { Auth::Open } else { Auth::Tokens };
    let control: Arc<dyn Control> = Arc::new(Local { api: api.clone() });
    let context = api.context.clone();
    let counts = api.tool_calls.clone();
    let mut config = StreamableHttpServerConfig::default().with_sse_keep_alive(None);
    if auth == Auth::Tokens {
        // With tokens the API may listen beyond loopback: every request is
        // authenticated, so any Host the API is reached by is accepted.
        config = config.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(McpServer::new(context.clone(), control.clone(), auth).counting(counts.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
