//! The MCP server at `/mcp` (streamable HTTP, both protocol generations),
//! reading incidents from this process's read model and recording decisions
//! through the same path as every other channel (channel `mcp`).

use std::sync::Arc;

use futures::future::BoxFuture;
use mend_config::Caller;
use mend_mcp::server::{Auth, McpServer};
use mend_mcp::{Control, ToolFailure};
use mend_model::events::PlanStep;
use mend_model::{Channel, Verdict};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};

use crate::Api;
use crate::decisions::record_decision;
use crate::drafts::record_draft;
use crate::incidents::with_quarantine_counts;

/// Incidents and decisions of this process, for the MCP tools.
pub struct Local {
    pub(crate) api: Arc<Api>,
}

impl Control for Local {
    fn incidents(&self) -> BoxFuture<'_, Result<Vec<Value>, ToolFailure>> {
        Box::pin(async move {
            let incidents = self.api.model().incidents();
            let incidents = with_quarantine_counts(&self.api, incidents).await;
            Ok(incidents.iter().map(|i| serde_json::to_value(i).unwrap_or_default()).collect())
        })
    }

    fn incident<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Value, ToolFailure>> {
        Box::pin(async move {
            let incident = self.api.model().incidents.get(id).filter(|i| i.is_known()).cloned();
            let incident = incident.ok_or_else(|| format!("no incident {id}; list_incidents shows their ids"))?;
            let mut counted = with_quarantine_counts(&self.api, vec![incident]).await;
            Ok(serde_json::to_value(counted.remove(0)).unwrap_or_default())
        })
    }

    fn decide<'a>(
        &'a self,
        caller: Option<&'a Caller>,
        proposal_id: &'a str,
        verdict: Verdict,
        reason: Option<String>,
    ) -> BoxFuture<'a, Result<Value, ToolFailure>> {
        Box::pin(async move {
            let by = Self::by(caller);
            match record_decision(&self.api, proposal_id, verdict, by, Channel::Mcp, reason).await {
                Ok(decision) => Ok(json!({
                    "decision_id": decision.envelope.event_id, "proposal_id": decision.proposal_id,
                    "outcome": decision.outcome, "by": decision.by, "channel": decision.channel,
                    "plan_hash": decision.plan_hash,
                })),
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
    ) -> BoxFuture<'a, Result<Value, ToolFailure>> {
        Box::pin(async move {
            match record_draft(&self.api, incident_id, Self::by(caller), steps, rationale, None).await {
                Ok(outcome) => Ok(serde_json::to_value(outcome).unwrap_or_default()),
                Err((_, message)) => Err(message),
            }
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
