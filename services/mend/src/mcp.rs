//! `mend mcp`: mend's MCP server on stdio, for Claude Desktop, Claude Code
//! and any MCP client that starts a command. Nothing but JSON-RPC goes to
//! stdout (logs go to stderr). The read tools use this machine's
//! configuration (registry, warehouse, broker); incidents and decisions go
//! through the control API of a running `mend up` with `MEND_API_TOKEN`, so
//! authorization and the recorded identity are those of every channel.

use std::sync::Arc;

use futures::future::BoxFuture;
use mend_config::Caller;
use mend_mcp::server::{Auth, McpServer};
use mend_mcp::{Control, ToolFailure};
use mend_model::Verdict;
use mend_model::events::PlanStep;
use mend_runtime::Context;
use rmcp::ServiceExt as _;
use serde_json::Value;

use crate::Global;
use crate::client::Client;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Incidents and decisions through the control API.
struct Remote {
    api: Client,
}

impl Control for Remote {
    fn incidents(&self) -> BoxFuture<'_, Result<Vec<Value>, ToolFailure>> {
        Box::pin(async move {
            match self.api.incidents().await.map_err(|e| e.to_string())? {
                Value::Array(incidents) => Ok(incidents),
                other => Err(format!("the control API answered {other} for the incidents")),
            }
        })
    }

    fn incident<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Value, ToolFailure>> {
        Box::pin(async move { self.api.incident(id).await.map_err(|e| e.to_string()) })
    }

    fn decide<'a>(
        &'a self,
        _caller: Option<&'a Caller>,
        proposal_id: &'a str,
        verdict: Verdict,
        reason: Option<String>,
    ) -> BoxFuture<'a, Result<Value, ToolFailure>> {
        Box::pin(async move {
            let verb = if verdict == Verdict::Approved { "approve" } else { "reject" };
            // With API tokens the API records the token's name, whatever `by` says.
            self.api
                .decide(proposal_id, verb, "mcp", reason.as_deref(), mend_model::Channel::Mcp)
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
    ) -> BoxFuture<'a, Result<Value, ToolFailure>> {
        Box::pin(
            async move { self.api.propose(incident_id, &steps, &rationale, "mcp").await.map_err(|e| e.to_string()) },
        )
    }
}

pub async fn run(_args: Args, global: Global) -> anyhow::Result<()> {
    let config = global.load_config()?;
    let api = global.api();
    let context = Context::new(global.connections, config, global.warehouse)?;
    let server = McpServer::new(context, Arc::new(Remote { api }), Auth::Open);
    tracing::info!("MCP server on stdio");
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
