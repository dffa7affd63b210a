//! `mend`: wiring only (arguments → telemetry → clients → run → exit code).
//! Each subcommand is a module with its arguments and its `run`.

mod audit;
mod client;
mod decide;
mod demo;
mod incidents;
mod mcp;
mod plan;
mod replay;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mend_config::{FileConfig, Secret};
use mend_runtime::Connections;
use mend_runtime::context::DEFAULT_WAREHOUSE;

/// mend keeps streaming ingestion healthy: it notices Avro schema drift on
/// Kafka from the first record, diagnoses it, drafts the fix, asks where
/// policy says so, applies it and replays every record that could not be
/// loaded. Every step is an event on a Kafka topic (the audit log).
#[derive(Debug, Parser)]
#[command(name = "mend", version)]
struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

/// Settings every command shares (each with its environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    #[command(flatten)]
    pub connections: Connections,

    /// Datasets and policy. When the file is missing, the embedded default
    /// (an `orders` dataset on topic `shop.orders`) is used.
    #[arg(long, env = "MEND_CONFIG", default_value = "mend.toml", global = true)]
    pub config: PathBuf,

    /// Warehouse of datasets that do not name their own (sqlite://… or postgres://…).
    #[arg(long, env = "MEND_WAREHOUSE_URL", default_value = DEFAULT_WAREHOUSE, global = true)]
    pub warehouse: String,

    /// Address of the control API (HTTP), served by `mend up` and used by the
    /// other commands.
    #[arg(long, env = "MEND_API_ADDR", default_value = "127.0.0.1:18080", global = true)]
    pub api_addr: SocketAddr,

    /// The token the other commands (approve, reject, incidents, …) send to
    /// the API.
    #[arg(
        long,
        env = "MEND_API_TOKEN",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true,
        global = true
    )]
    pub token: Secret,
}

impl Global {
    /// Datasets and policy: `--config`, or the embedded default when that
    /// file does not exist.
    /// `mend.toml` (or the embedded default), with a dataset for each topic
    /// a `topic_pattern` matches now.
    pub fn load_config(&self) -> anyhow::Result<FileConfig> {
        let mut config = if self.config.exists() {
            FileConfig::load(&self.config, true)?
        } else {
            tracing::info!(path = %self.config.display(), "no configuration file; using the embedded default (dataset orders on shop.orders)");
            FileConfig::parse(std::path::Path::new("<embedded default>"), include_str!("default.toml"))?
        };
        if !config.patterns.is_empty() {
            let topics = mend_runtime::kafka::list_topics(&self.connections.brokers)
                .map_err(|e| anyhow::anyhow!("listing the topics a topic_pattern may match: {e}"))?;
            expand(&mut config, &topics);
        }
        Ok(config)
    }

    /// A client of the control API of a running `mend up`.
    pub fn api(&self) -> client::Client {
        client::Client::new(&self.api_addr.to_string(), self.token.clone())
    }
}

/// Adds the datasets of the topics `topic_pattern`s match, logging them;
/// true when there were any.
pub fn expand(config: &mut FileConfig, topics: &[String]) -> bool {
    let (added, refused) = config.expand(topics);
    for topic in &refused {
        tracing::warn!(%topic, "a topic_pattern matches this topic, but its name is too long for a table (63 characters)");
    }
    if !added.is_empty() {
        tracing::info!(count = added.len(), first = %added[0], "datasets from topic_pattern");
    }
    !added.is_empty()
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every pipeline service in this process (loader, detector,
    /// diagnoser, proposer, applier, supervisor, sealer, control). SIGTERM stops
    /// it cleanly.
    Up(up::UpArgs),
    /// Run one service in this process. Run a stage any number of times to
    /// share its partitions: the processes form the stage's consumer group,
    /// which moves partitions when one joins, leaves or dies.
    Run(up::RunArgs),
    /// List incidents and their status.
    Incidents(incidents::Args),
    /// Time to heal per dataset (p50, p90) and how long proposals waited
    /// for a person, from the incidents.
    Stats(incidents::StatsArgs),
    /// Show one incident: changes, evidence, plan, decision, application.
    Show(incidents::ShowArgs),
    /// Approve a proposal: its plan is applied and its records replayed.
    Approve(decide::ApproveArgs),
    /// Reject a proposal: nothing is applied; its records stay quarantined.
    Reject(decide::RejectArgs),
    /// Undo what an incident's applied plan did to the contract: opens an
    /// incident whose plan moves the contract back to the one the plan
    /// replaced (the schema records are read with and where each field is
    /// loaded). Columns are kept, never dropped; records of the reverted
    /// schema are held in quarantine until a later plan takes them. The
    /// plan waits for approval like any other (`mend approve`); reverting
    /// the revert re-applies the change and replays what was held.
    Revert(decide::RevertArgs),
    /// Replay an incident's quarantined records again, by hand: each record
    /// the dataset's contract can now hold is loaded (idempotently, in
    /// source order); the others stay quarantined. Prints the counts.
    Replay(replay::Args),
    /// Show what mend would do if a schema arrived now, changing nothing:
    /// each change with its kind, evidence and the rule that decided it, the
    /// plan's steps and the decision. Exit code 0 = applied automatically,
    /// 2 = approval needed, 3 = blocked (1 = the command failed). Run it in
    /// CI before deploying a schema change.
    Plan(plan::Args),
    /// Serve mend's MCP tools on stdio (for Claude Desktop, Claude Code and
    /// any MCP client that starts a command): incidents, evidence, schema
    /// comparisons and decisions. Decisions go through the control API of a
    /// running `mend up` (MEND_API_ADDR, MEND_API_TOKEN).
    Mcp(mcp::Args),
    /// The audit log: verify it, export it for an auditor, tell one
    /// incident's timeline, rebuild the contract history against the
    /// warehouse, make the sealer's keys.
    Audit(audit::Args),
    /// Run the drift demo against a running `mend up`: produce an orders
    /// stream whose schema drifts, approve the rename, and report.
    Demo(demo::Args),
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Up(args) => {
            let services: Vec<up::Service> =
                up::Service::ALL.into_iter().filter(|s| args.serve.seal.sealer || *s != up::Service::Sealer).collect();
            up::run(global, args.serve, &services).await?
        }
        Command::Run(args) => up::run(global, args.serve, &[args.service]).await?,
        Command::Incidents(args) => incidents::run(args, &global).await?,
        Command::Show(args) => incidents::show(args, &global).await?,
        Command::Stats(args) => incidents::stats(args, &global).await?,
        Command::Approve(args) => decide::approve(args, &global).await?,
        Command::Reject(args) => decide::reject(args, &global).await?,
        Command::Revert(args) => decide::revert(args, &global).await?,
        Command::Replay(args) => replay::run(args, global).await?,
        Command::Plan(args) => return plan::run(args, &global).await,
        Command::Audit(args) => return audit::run(args, &global).await,
        Command::Demo(args) => demo::run(args, &global).await?,
        Command::Mcp(args) => mcp::run(args, global).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What a person can do about a failure, from the classification of the
/// error behind it (the same one the runner and the applier act on).
fn advice(error: &anyhow::Error) -> Option<&'static str> {
    use mend_model::{Classify, Next};
    let next = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<mend_store::StoreError>()
            .map(Classify::next)
            .or_else(|| cause.downcast_ref::<mend_avro::CodecError>().map(Classify::next))
    })?;
    match next {
        Next::Retry => Some(
            "a service mend needs (the broker, the registry or the warehouse) is unavailable; nothing was \
             changed: try again once it answers",
        ),
        Next::Quarantine(_) => Some("the input is not what mend expects; see the reason above"),
        Next::Fatal => None,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = mend_runtime::telemetry::init("mend");
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mend: {error:#}");
            if let Some(advice) = advice(&error) {
                eprintln!("mend: {advice}");
            }
            ExitCode::FAILURE
        }
    }
}
