//! `mend mcp`: mend's MCP server on stdio, for Claude Desktop, Claude Code
//! and any MCP client that starts a command. Nothing but JSON-RPC goes to
//! stdout (logs go to stderr). The read tools use this machine's
//! configuration (registry, warehouse, broker); incidents and decisions go
//! through the control API of a running `mend up` with `MEND_API_TOKEN`, so
//! authorization and the recorded identity are those of every channel.

use std::sync::Arc;

use mend_mcp::remote::Remote;
use mend_mcp::server::{Auth, McpServer};
use mend_runtime::Context;
use rmcp::ServiceExt as _;

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args, global: Global) -> anyhow::Result<()> {
    let config = global.load_config()?;
    let api = global.api();
    let context = Context::new(global.connections, config, global.warehouse)?;
    let server = McpServer::new(context, Arc::new(Remote::new(api, "mcp")), Auth::Open);
    tracing::info!("MCP server on stdio");
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
