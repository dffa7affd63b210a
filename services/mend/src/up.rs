//! `mend up` and `mend run <service>`: the pipeline services in this process.

use std::net::SocketAddr;
use std::sync::Arc;

use mend_config::{ApiToken, Secret};
use mend_runtime::context::{Context, Integrations};
use mend_runtime::handler::Handler;
use mend_runtime::kafka::{self, TopicSpec};
use mend_runtime::runner::{Runner, RunnerStatus};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A pipeline service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Loader,
    Detector,
    Diagnoser,
    Proposer,
    Applier,
    /// The supervisor: Claude drafts fixes for incidents the rules block
    /// (idle without MEND_ANTHROPIC_API_KEY).
    Supervisor,
    /// Seals the audit log: signed digests on mend.audit.digests (one per
    /// deployment: MEND_GROUP_PREFIX names its chain).
    Sealer,
    Control,
}

impl Service {
    pub const ALL: [Service; 8] = [
        Self::Loader,
        Self::Detector,
        Self::Diagnoser,
        Self::Proposer,
        Self::Applier,
        Self::Supervisor,
        Self::Sealer,
        Self::Control,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Loader => "loader",
            Self::Detector => "detector",
            Self::Diagnoser => "diagnoser",
            Self::Proposer => "proposer",
            Self::Applier => "applier",
            Self::Supervisor => "supervisor",
            Self::Sealer => "sealer",
            Self::Control => "control",
        }
    }
}

/// What `mend up` and `mend run` serve with: the API's tokens, the
/// integrations' secrets, the supervisor's model, the sealer and the event
/// topics (each with its environment variable).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Partitions of mend's event topics when `mend up` creates them. One
    /// dataset's events always share a partition (the dataset is the key);
    /// more partitions let several processes of a stage share the work
    /// (their consumer group shares the partitions out).
    #[arg(long, env = "MEND_EVENT_PARTITIONS", default_value_t = 1)]
    pub event_partitions: i32,

    /// API tokens `mend up` accepts, comma-separated `name:role:token`
    /// (roles: viewer, approver, admin); added to `[[api.token]]` of
    /// mend.toml. With none, the API needs no token and serves loopback only.
    #[arg(long, env = "MEND_API_TOKENS", hide_env_values = true, default_value = "", hide_default_value = true)]
    pub api_tokens: Secret,

    /// Warehouse URL for the applier (DDL, contract moves, replays) of
    /// datasets on the default warehouse: run it as a database role of its
    /// own. Default: the same as the loader's.
    #[arg(long, env = "MEND_APPLIER_WAREHOUSE_URL", hide_env_values = true)]
    pub applier_warehouse: Option<Secret>,

    /// Slack incoming webhook: proposals that wait for approval are posted
    /// there with Approve / Reject buttons.
    #[arg(long, env = "MEND_SLACK_WEBHOOK_URL", hide_env_values = true)]
    pub slack_webhook_url: Option<Secret>,

    /// Slack app signing secret: verifies `POST /slack/interactions` (the
    /// buttons). Without it that endpoint is off.
    #[arg(long, env = "MEND_SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<Secret>,

    /// GitHub token (contents and pull requests) for datasets that name a
    /// repository: plans with a dbt patch open a pull request there.
    #[arg(long, env = "MEND_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<Secret>,

    /// GitHub REST API base.
    #[arg(long, env = "MEND_GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,

    /// GitHub webhook secret: verifies `POST /github/webhook` (a merged
    /// pull request approves its proposal). Without it that endpoint is off.
    #[arg(long, env = "MEND_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<Secret>,

    #[command(flatten, next_help_heading = "The supervisor (Claude)")]
    pub anthropic: mend_supervisor::claude::AnthropicSettings,

    #[command(flatten, next_help_heading = "The audit log's sealer")]
    pub seal: crate::audit::SealSettings,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten, next_help_heading = "Serving")]
    pub serve: ServeArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub service: Service,

    #[command(flatten, next_help_heading = "Serving")]
    pub serve: ServeArgs,
}

/// How often `mend up` looks for new topics a `topic_pattern` matches.
const TOPIC_LOOK: std::time::Duration = std::time::Duration::from_secs(10);

/// `mend up` (every service) and `mend run` (one) until SIGTERM. When a
/// new topic matches a `topic_pattern`, the services stop cleanly (each
/// finishes its batch and commits) and start again with its dataset.
pub async fn run(global: crate::Global, serve_args: ServeArgs, services: &[Service]) -> anyhow::Result<()> {
    let shutdown = mend_runtime::shutdown::on_signal();
    loop {
        let config = global.load_config()?;
        let generation = shutdown.child_token();
        let grown = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !config.patterns.is_empty() {
            let (brokers, mut known, grown, generation) =
                (global.connections.brokers.clone(), config.clone(), grown.clone(), generation.clone());
            tokio::spawn(async move {
                while !generation.is_cancelled() {
                    tokio::select! {
                        _ = generation.cancelled() => return,
                        _ = tokio::time::sleep(TOPIC_LOOK) => {}
                    }
                    let listed = {
                        let brokers = brokers.clone();
                        tokio::task::spawn_blocking(move || mend_runtime::kafka::list_topics(&brokers)).await
                    };
                    if let Ok(Ok(topics)) = listed
                        && crate::expand(&mut known, &topics)
                    {
                        tracing::info!("new topics match a topic_pattern: restarting the services to load them");
                        grown.store(true, std::sync::atomic::Ordering::Relaxed);
                        generation.cancel();
                    }
                }
            });
        }
        once(global.clone(), serve_args.clone(), config, services, generation).await?;
        if shutdown.is_cancelled() || !grown.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
    }
}

/// One generation of the services: the context, the API's settings, then
/// [`serve`] until `shutdown`.
async fn once(
    global: crate::Global,
    args: ServeArgs,
    mut config: mend_config::FileConfig,
    services: &[Service],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(url) = args.applier_warehouse.and_then(Secret::given) {
        for dataset in config.datasets.iter_mut().filter(|d| d.warehouse.is_none()) {
            dataset.applier_warehouse.get_or_insert_with(|| url.expose().to_owned());
        }
    }
    let mut tokens = ApiToken::parse_list(args.api_tokens.expose()).map_err(anyhow::Error::msg)?;
    tokens.extend(config.api.token.iter().cloned());
    let integrations = Integrations {
        slack_webhook_url: args.slack_webhook_url.and_then(Secret::given),
        github_api_url: args.github_api_url,
        github_token: args.github_token.and_then(Secret::given),
    };
    let sealer = args.seal.sealer(&global.connections)?;
    let context = Context::with(global.connections, config, global.warehouse, integrations)?;
    let claude = mend_supervisor::claude::Claude::new(&args.anthropic);
    let settings = mend_control::ApiSettings {
        supervisor: claude.is_some(),
        tokens,
        slack_signing_secret: args.slack_signing_secret.and_then(Secret::given),
        github_webhook_secret: args.github_webhook_secret.and_then(Secret::given),
    };
    let supervisor =
        Supervisor { claude, api: mend_mcp::remote::Client::new(&global.api_addr.to_string(), global.token), sealer };
    serve(context, services, global.api_addr, args.event_partitions, settings, supervisor, shutdown).await
}

/// What the supervisor needs: Claude (None without a key) and the control
/// API it drafts plans through; and how the sealer seals.
pub struct Supervisor {
    pub claude: Option<mend_supervisor::claude::Claude>,
    pub api: mend_mcp::remote::Client,
    pub sealer: mend_audit::seal::SealerConfig,
}

/// Creates the topics mend needs (event topics with `partitions` each, when
/// missing) and registers its event schemas.
pub async fn prepare(context: &Context, partitions: i32) -> anyhow::Result<()> {
    let mut specs = kafka::audit_topics(partitions);
    let audit: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
    // Source topics normally exist; creating a missing one lets the pipeline
    // start before its producers do.
    specs.extend(context.dataset_topics().iter().map(|t| TopicSpec::new(t, 1)));
    kafka::ensure_topics(&context.connections.brokers, &specs).await?;
    // An audit topic someone else created may delete events: say so now,
    // not when they are gone.
    for topic in audit {
        if let Ok(said) = kafka::deletions(&context.connections.brokers, &topic).await {
            for what in said {
                tracing::warn!(%topic, "the audit log would lose events: {what} (set retention.ms=-1 and retention.bytes=-1)");
            }
        }
    }
    context.codec.register_event_schemas().await?;
    Ok(())
}

fn spawn<H: Handler + 'static>(
    tasks: &mut JoinSet<(String, anyhow::Result<()>)>,
    name: &str,
    runner: Runner<H>,
    shutdown: &CancellationToken,
) {
    let (name, shutdown) = (name.to_owned(), shutdown.clone());
    tasks.spawn(async move { (name, runner.run(shutdown).await.map_err(anyhow::Error::from)) });
}

/// Runs `services` until `shutdown` (or until one of them fails, which stops
/// the others). Returns an error naming the failed service.
pub async fn serve(
    context: Arc<Context>,
    services: &[Service],
    api_addr: SocketAddr,
    event_partitions: i32,
    api: mend_control::ApiSettings,
    supervisor: Supervisor,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if services.contains(&Service::Control) && api.tokens.is_empty() && !api_addr.ip().is_loopback() {
        anyhow::bail!(
            "the control API would listen on {api_addr} without authentication: configure tokens \
             (MEND_API_TOKENS=name:role:token,… or [[api.token]] in mend.toml) or use a loopback MEND_API_ADDR"
        );
    }
    prepare(&context, event_partitions).await?;
    let mut tasks = JoinSet::new();
    let mut health: Vec<(String, Arc<RunnerStatus>)> = Vec::new();
    for service in services {
        let name = service.name();
        let status = match service {
            Service::Loader => {
                let (runner, status) = mend_loader::runner(&context)?;
                spawn(&mut tasks, name, runner, &shutdown);
                status
            }
            Service::Detector => {
                let (runner, status) = mend_detector::runner(&context).await?;
                spawn(&mut tasks, name, runner, &shutdown);
                status
            }
            Service::Diagnoser => {
                let (runner, status) = mend_diagnoser::runner(&context)?;
                spawn(&mut tasks, name, runner, &shutdown);
                status
            }
            Service::Proposer => {
                let (runner, status) = mend_proposer::runner(&context)?;
                spawn(&mut tasks, name, runner, &shutdown);
                status
            }
            Service::Applier => {
                let (runner, status) = mend_applier::runner(&context)?;
                spawn(&mut tasks, name, runner, &shutdown);
                status
            }
            Service::Supervisor => {
                let (runner, status) =
                    mend_supervisor::runner(&context, supervisor.claude.clone(), supervisor.api.clone())?;
                spawn(&mut tasks, name, runner, &shutdown);
                status
            }
            Service::Sealer => {
                let sealer = mend_sealer::Sealer::new(
                    supervisor.sealer.clone(),
                    context.codec.clone(),
                    context.producer.clone(),
                );
                let (status, stop) = (sealer.status(), shutdown.clone());
                tasks.spawn(async move { ("sealer".to_owned(), sealer.run(stop).await.map_err(anyhow::Error::from)) });
                status
            }
            Service::Control => continue,
        };
        health.push((name.to_owned(), status));
    }
    if services.contains(&Service::Control) {
        let (runner, status, model) = mend_control::runner(&context)?;
        spawn(&mut tasks, "control", runner, &shutdown);
        health.push(("control".into(), status));
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {api_addr} (MEND_API_ADDR): {e}"))?;
        let router = mend_control::router(context.clone(), model.clone(), health.clone(), api);
        let (escalation_context, stop) = (context.clone(), shutdown.clone());
        tasks.spawn(
            async move { ("escalation".to_owned(), mend_control::escalate(escalation_context, model, stop).await) },
        );
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // Without TCP_NODELAY a response written in two parts waits for
            // the client's delayed ACK: 40 ms per call (measured with the
            // mcp bench: describe_table p50 44 ms before, see docs/benchmarks.md).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served =
                axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await;
            ("control api".to_owned(), served.map_err(anyhow::Error::from))
        });
        tracing::info!(%api_addr, "control API listening");
    }
    let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
    tracing::info!(services = ?names, "mend running");

    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(error))) => {
                tracing::error!(service = %name, "{error:#}");
                failure.get_or_insert_with(|| anyhow::anyhow!("{name} stopped: {error:#}"));
                shutdown.cancel();
            }
            Err(join) => {
                failure.get_or_insert_with(|| anyhow::anyhow!("a service panicked: {join}"));
                shutdown.cancel();
            }
        }
        if shutdown.is_cancelled() {
            // Everyone else finishes in-flight work within the grace period.
            let deadline = tokio::time::sleep(mend_runtime::shutdown::DEFAULT_GRACE);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => {
                        tracing::warn!("services did not stop within {:?}; exiting", mend_runtime::shutdown::DEFAULT_GRACE);
                        tasks.abort_all();
                        break;
                    }
                    next = tasks.join_next() => match next {
                        None => break,
                        Some(Ok((name, Err(error)))) => {
                            failure.get_or_insert_with(|| anyhow::anyhow!("{name} stopped: {error:#}"));
                        }
                        Some(_) => {}
                    }
                }
            }
            break;
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
