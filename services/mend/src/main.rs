//! `mend`: wiring only (arguments → telemetry → clients → run → exit code).

mod client;
mod demo;
mod plan;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mend_shared::config::{ApiToken, Connections, FileConfig, Secret};
use mend_shared::context::{Context, DEFAULT_WAREHOUSE, Integrations};

/// mend keeps streaming ingestion healthy: it notices Avro schema drift on
/// Kafka from the first record, diagnoses it, drafts the fix, asks where
/// policy says so, applies it and replays every record that could not be
/// loaded. Every step is an event on a Kafka topic (the audit log).
#[derive(Debug, Parser)]
#[command(name = "mend", version)]
struct Cli {
    #[command(flatten)]
    connections: Connections,

    /// Datasets and policy. When the file is missing, the embedded default
    /// (an `orders` dataset on topic `shop.orders`) is used.
    #[arg(long, env = "MEND_CONFIG", default_value = "mend.toml", global = true)]
    config: PathBuf,

    /// Warehouse of datasets that do not name their own (sqlite://… or postgres://…).
    #[arg(long, env = "MEND_WAREHOUSE_URL", default_value = DEFAULT_WAREHOUSE, global = true)]
    warehouse: String,

    /// Warehouse URL for the applier (DDL, contract moves, replays) of
    /// datasets on the default warehouse: run it as a database role of its
    /// own. Default: the same as the loader's.
    #[arg(long, env = "MEND_APPLIER_WAREHOUSE_URL", hide_env_values = true, global = true)]
    applier_warehouse: Option<Secret>,

    /// Address of the control API (HTTP), served by `mend up` and used by the
    /// other commands.
    #[arg(long, env = "MEND_API_ADDR", default_value = "127.0.0.1:18080", global = true)]
    api_addr: SocketAddr,

    /// Partitions of mend's event topics when `mend up` creates them. One
    /// dataset's events always share a partition (the dataset is the key);
    /// more partitions let several processes of a stage share the work
    /// (MEND_CONSUMER_MODE=group, on Kafka).
    #[arg(long, env = "MEND_EVENT_PARTITIONS", default_value_t = 1, global = true)]
    event_partitions: i32,

    /// API tokens `mend up` accepts, comma-separated `name:role:token`
    /// (roles: viewer, approver, admin); added to `[[api.token]]` of
    /// mend.toml. With none, the API needs no token and serves loopback only.
    #[arg(long, env = "MEND_API_TOKENS", hide_env_values = true, default_value = "", hide_default_value = true)]
    api_tokens: Secret,

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
    token: Secret,

    /// Slack incoming webhook: proposals that wait for approval are posted
    /// there with Approve / Reject buttons.
    #[arg(long, env = "MEND_SLACK_WEBHOOK_URL", hide_env_values = true)]
    slack_webhook_url: Option<Secret>,

    /// Slack app signing secret: verifies `POST /slack/interactions` (the
    /// buttons). Without it that endpoint is off.
    #[arg(long, env = "MEND_SLACK_SIGNING_SECRET", hide_env_values = true)]
    slack_signing_secret: Option<Secret>,

    /// GitHub token (contents and pull requests) for datasets that name a
    /// repository: plans with a dbt patch open a pull request there.
    #[arg(long, env = "MEND_GITHUB_TOKEN", hide_env_values = true)]
    github_token: Option<Secret>,

    /// GitHub REST API base.
    #[arg(long, env = "MEND_GITHUB_API_URL", default_value = "https://api.github.com")]
    github_api_url: String,

    /// GitHub webhook secret: verifies `POST /github/webhook` (a merged
    /// pull request approves its proposal). Without it that endpoint is off.
    #[arg(long, env = "MEND_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    github_webhook_secret: Option<Secret>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every pipeline service in this process (loader, detector,
    /// diagnoser, proposer, applier, control). SIGTERM stops it cleanly.
    Up,
    /// Run one service in this process (with MEND_CONSUMER_MODE=group, run
    /// more of a stage to share its partitions).
    Run {
        #[arg(value_enum)]
        service: up::Service,
    },
    /// List incidents and their status.
    Incidents {
        /// Print JSON (an array of incidents) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this dataset's incidents.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Show one incident: changes, evidence, plan, decision, application.
    Show { incident: String },
    /// Approve a proposal: its plan is applied and its records replayed.
    Approve {
        proposal: String,
        /// Who approves (recorded in the audit log).
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a proposal: nothing is applied; its records stay quarantined.
    Reject {
        proposal: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Replay an incident's quarantined records again, by hand: each record
    /// the dataset's contract can now hold is loaded (idempotently, in
    /// source order); the others stay quarantined. Prints the counts.
    Replay {
        /// The incident (from `mend incidents`).
        #[arg(long)]
        incident: String,
    },
    /// Show what mend would do if a schema arrived now, changing nothing:
    /// each change with its kind, evidence and the rule that decided it, the
    /// plan's steps and the decision. Exit code 0 = applied automatically,
    /// 2 = approval needed, 3 = blocked (1 = the command failed). Run it in
    /// CI before deploying a schema change.
    Plan(plan::Args),
    /// Run the drift demo against a running `mend up`: produce an orders
    /// stream whose schema drifts, approve the rename, and report.
    Demo(demo::Args),
}

fn load_config(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    if path.exists() {
        return Ok(FileConfig::load(path, true)?);
    }
    tracing::info!(path = %path.display(), "no configuration file; using the embedded default (dataset orders on shop.orders)");
    Ok(FileConfig::parse(std::path::Path::new("<embedded default>"), include_str!("default.toml"))?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Plan(args) = cli.command {
        let config = load_config(&cli.config)?;
        return plan::run(args, &cli.connections.registry_url, &config, &cli.warehouse).await;
    }
    other(cli).await.map(|()| ExitCode::SUCCESS)
}

async fn other(cli: Cli) -> anyhow::Result<()> {
    let api = client::Client::new(&cli.api_addr.to_string(), &cli.token.0);
    match cli.command {
        Command::Up | Command::Run { .. } => {
            let services = match cli.command {
                Command::Run { service } => vec![service],
                _ => up::Service::ALL.to_vec(),
            };
            let mut config = load_config(&cli.config)?;
            if let Some(url) = cli.applier_warehouse.filter(|u| !u.0.is_empty()) {
                for dataset in config.datasets.iter_mut().filter(|d| d.warehouse.is_none()) {
                    dataset.applier_warehouse.get_or_insert_with(|| url.0.clone());
                }
            }
            let mut tokens = ApiToken::parse_list(&cli.api_tokens.0).map_err(anyhow::Error::msg)?;
            tokens.extend(config.api.token.iter().cloned());
            let integrations = Integrations {
                slack_webhook_url: cli.slack_webhook_url.map(|s| s.0).filter(|s| !s.is_empty()),
                github_api_url: cli.github_api_url,
                github_token: cli.github_token.map(|s| s.0).filter(|s| !s.is_empty()),
            };
            let context = Context::with(cli.connections, config, cli.warehouse, integrations)?;
            let settings = mend_control::ApiSettings {
                tokens,
                slack_signing_secret: cli.slack_signing_secret.map(|s| s.0).filter(|s| !s.is_empty()),
                github_webhook_secret: cli.github_webhook_secret.map(|s| s.0).filter(|s| !s.is_empty()),
            };
            let shutdown = mend_shared::shutdown::on_signal();
            up::run(context, &services, cli.api_addr, cli.event_partitions, settings, shutdown).await
        }
        Command::Incidents { json, dataset } => {
            let mut incidents = api.incidents().await?;
            if let (Some(dataset), Some(list)) = (dataset, incidents.as_array_mut()) {
                list.retain(|i| i["dataset"].as_str() == Some(dataset.as_str()));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&incidents)?);
            } else {
                client::print_incidents(&incidents);
            }
            Ok(())
        }
        Command::Show { incident } => {
            println!("{}", serde_json::to_string_pretty(&api.incident(&incident).await?)?);
            Ok(())
        }
        Command::Approve { proposal, by, reason } => {
            let answer = api.decide(&proposal, "approve", &by, reason.as_deref()).await?;
            println!("approved {proposal} (decision {})", answer["decision_id"].as_str().unwrap_or("?"));
            Ok(())
        }
        Command::Reject { proposal, by, reason } => {
            let answer = api.decide(&proposal, "reject", &by, Some(&reason)).await?;
            println!("rejected {proposal} (decision {})", answer["decision_id"].as_str().unwrap_or("?"));
            Ok(())
        }
        Command::Demo(args) => {
            let config = load_config(&cli.config)?;
            demo::run(args, &cli.connections, &config, &cli.warehouse, &api).await
        }
        Command::Plan(_) => Ok(()), // handled in `run`
        Command::Replay { incident } => {
            let config = load_config(&cli.config)?;
            let context = Context::new(cli.connections, config, cli.warehouse)?;
            replay(context, &incident).await
        }
    }
}

/// `mend replay --incident ID`: finds the incident's dataset and writer
/// schema on `mend.detections`, then runs the applier's replay.
async fn replay(context: std::sync::Arc<Context>, incident: &str) -> anyhow::Result<()> {
    use mend_shared::events::{Detection, IncidentId};
    use rdkafka::message::Message;
    let mut found = None;
    for message in
        mend_shared::kafka::read_to_end(&context.connections.brokers, mend_shared::topics::DETECTIONS).await?
    {
        if let Ok(detection) = context.codec.decode_event::<Detection>(message.payload().unwrap_or_default()).await
            && detection.envelope.incident_id.0 == incident
        {
            found = Some(detection);
            break;
        }
    }
    let detection = found.ok_or_else(|| anyhow::anyhow!("no incident {incident} on mend.detections"))?;
    let name = &detection.envelope.dataset;
    let dataset = context
        .dataset(name)
        .ok_or_else(|| {
            anyhow::anyhow!("incident {incident} is about dataset {name}, which is not in the configuration")
        })?
        .clone();
    let writer = detection
        .writer_schema_id
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| anyhow::anyhow!("incident {incident} names no writer schema"))?;
    let warehouse = context.warehouse(&dataset).await?;
    println!("replaying incident {incident} (dataset {name}, writer schema {writer}) from mend.quarantine");
    let applier = mend_applier::Applier::new(context.clone());
    let counts = applier
        .replay(&dataset, &warehouse, &IncidentId(incident.to_owned()), writer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("replayed {}, loaded {}, still quarantined {}", counts.replayed, counts.loaded, counts.still_quarantined);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = mend_shared::telemetry::init("mend");
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mend: {error:#}");
            ExitCode::FAILURE
        }
    }
}
