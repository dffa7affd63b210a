//! `mend audit`: the audit log checked (`verify`), handed over (`export`),
//! told per incident (`timeline`), compared with the warehouse
//! (`rebuild`), from the topics alone; and the sealer's keys (`keygen`)
//! and settings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mend_audit::Sealing;
use mend_audit::export::{ExportHeader, select};
use mend_audit::verify::{Options, Scope};
use mend_audit::{Entry, Selection, export_csv, export_lines, keys, read_export, read_topics, timeline, verify};
use mend_avro::Codec;
use mend_config::Secret;
use mend_model::topics;

use crate::Global;

/// How the sealer seals (`mend up`, `mend run sealer`).
#[derive(Debug, Clone, clap::Args)]
pub struct SealSettings {
    /// The sealer's Ed25519 secret key (64 hex digits, or the path of a file
    /// holding them; `mend audit keygen` makes a pair). Without it digests
    /// are chained but unsigned, and `verify` says so.
    #[arg(long, env = "MEND_AUDIT_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<Secret>,

    /// Whether `mend up` runs the sealer. One sealer per chain: with several
    /// `mend up` processes of one deployment (one MEND_GROUP_PREFIX), turn
    /// it off on all but one (or run `mend run sealer` once).
    #[arg(long, env = "MEND_AUDIT_SEALER", default_value_t = true, action = clap::ArgAction::Set)]
    pub sealer: bool,

    /// A digest at least every this many events.
    #[arg(long, env = "MEND_AUDIT_SEAL_EVENTS", default_value_t = mend_audit::seal::DEFAULT_EVERY_EVENTS)]
    pub seal_events: usize,

    /// A digest at least this often while events arrive (e.g. 2s, 1m).
    #[arg(long, env = "MEND_AUDIT_SEAL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub seal_interval: Duration,
}

impl SealSettings {
    /// The sealer's configuration for the chain `chain`.
    pub fn sealer(&self, global: &mend_runtime::Connections) -> anyhow::Result<mend_audit::seal::SealerConfig> {
        let key = match self.signing_key.clone().and_then(Secret::given) {
            Some(secret) => Some(keys::signing_key(secret.expose())?),
            None => None,
        };
        anyhow::ensure!(self.seal_events > 0, "MEND_AUDIT_SEAL_EVENTS must be at least 1");
        anyhow::ensure!(!self.seal_interval.is_zero(), "MEND_AUDIT_SEAL_INTERVAL must be longer than 0");
        Ok(mend_audit::seal::SealerConfig {
            brokers: global.brokers.clone(),
            chain: global.group_prefix.clone(),
            every_events: self.seal_events,
            every: self.seal_interval,
            key,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Output format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// JSON lines with the digests: what `verify --file` checks.
    Jsonl,
    /// One row per event, for reading (not verifiable).
    Csv,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check the audit log: every event decodes, its hash matches its
    /// content, the event it answers exists and its prev_hash is that
    /// event's hash; every digest of the chain holds (hash, signature,
    /// sequence, link to the previous one) and every range it sealed is
    /// there unchanged; every event is sealed. Prints each finding with
    /// its topic, partition and offset; exit code 0 only when clean.
    Verify {
        /// An export (`mend audit export`) instead of the live topics.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The sealer's public key (hex, or a file holding it): digests'
        /// signatures are checked with it. Without it a log rebuilt with
        /// new digests cannot be told from the real one.
        #[arg(long, env = "MEND_AUDIT_PUBLIC_KEY")]
        public_key: Option<String>,
        /// The digests' chain to check (default: the export's, or
        /// MEND_GROUP_PREFIX for the live topics).
        #[arg(long)]
        chain: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the audit log for an auditor. JSON lines (the default) hold
    /// the selected events, the hashes of the others that share their
    /// sealed ranges, and the digests, so `mend audit verify --file` checks
    /// the export offline with the public key. Waits (up to --wait) until
    /// the sealer has sealed every selected event.
    Export {
        /// Only this dataset's events in full.
        #[arg(long)]
        dataset: Option<String>,
        /// Only events from this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Only events up to this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Longest to wait for the sealer to seal the selected events.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// One incident's events in order: who did what, the evidence, the
    /// supervisor's tools and reasoning, plan hashes, counts, and the time
    /// to heal per phase.
    Timeline {
        incident: String,
        /// Print JSON instead of lines for people.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild each dataset's contract history and applied changes from
    /// the topics alone and compare them with the warehouse (mend_contracts,
    /// mend_applied, the table's columns). Exit code 0 only when they agree.
    Rebuild {
        /// Only this dataset.
        #[arg(long)]
        dataset: Option<String>,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an Ed25519 key pair for the sealer: the secret goes to
    /// MEND_AUDIT_SIGNING_KEY, the public key to whoever verifies.
    Keygen {
        /// Write the secret key to this file (mode 0600) and the public key
        /// to FILE.pub, instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_time(text: &str) -> Result<i64, String> {
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| format!("{e} (expected e.g. 2026-12-01T00:00:00Z)"))?;
    let millis = time.duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis();
    i64::try_from(millis).map_err(|e| e.to_string())
}

async fn live(global: &Global) -> anyhow::Result<Vec<Entry>> {
    let codec = Codec::new(&global.connections.registry_url)?;
    Ok(read_topics(&global.connections.brokers, &codec).await?)
}

/// Warnings about topics whose configuration would delete audit events.
async fn retention_warnings(global: &Global) {
    let all: Vec<&str> = topics::EVENT_TOPICS.iter().chain([&topics::DIGESTS]).copied().collect();
    let said = futures::future::join_all(
        all.iter().map(|topic| mend_runtime::kafka::deletions(&global.connections.brokers, topic)),
    )
    .await;
    for (topic, said) in all.iter().zip(said) {
        match said {
            Ok(said) => {
                for what in said {
                    eprintln!("warning: {topic} would lose audit events: {what}");
                }
            }
            Err(error) => eprintln!("warning: cannot read {topic}'s retention: {error}"),
        }
    }
}

/// The live log as of the call, once the sealer has sealed it (or `wait`
/// has passed), saying on stderr what it waits for.
async fn sealed_log(global: &Global, wait: Duration) -> anyhow::Result<Vec<Entry>> {
    let (brokers, chain) = (&global.connections.brokers, &global.connections.group_prefix);
    let codec = Codec::new(&global.connections.registry_url)?;
    Ok(mend_audit::sealed_log(brokers, &codec, chain, wait, |sealing| match sealing {
        Sealing::Waiting { unsealed } => {
            eprintln!("waiting for the sealer to seal the events of {unsealed} partitions…")
        }
        Sealing::GaveUp { unsealed } => eprintln!(
            "warning: events of {unsealed} partitions are not sealed after {}: is the sealer of chain {chain} \
             running (mend up or mend run sealer, with MEND_GROUP_PREFIX={chain})? They are exported as they \
             are; verify will report them",
            humantime::format_duration(wait)
        ),
    })
    .await?)
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Verify { file, public_key, chain, json } => {
            let public_key = public_key.filter(|k| !k.is_empty()).map(|k| keys::public_key(&k)).transpose()?;
            let (entries, scope, chain) = match &file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    let (header, entries) = read_export(&text)?;
                    (entries, Scope::Export(header), chain)
                }
                None => {
                    retention_warnings(global).await;
                    let now = mend_model::events::now_millis();
                    let chain = chain.or_else(|| Some(global.connections.group_prefix.clone()));
                    (live(global).await?, Scope::Live { now }, chain)
                }
            };
            let report = verify(&entries, &Options { scope, chain, public_key });
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for finding in &report.findings {
                    println!("{}: {}", finding.position, finding.problem);
                }
                for note in &report.notes {
                    println!("note: {note}");
                }
                println!(
                    "{} events and {} digests checked, {} findings",
                    report.events,
                    report.digests,
                    report.findings.len()
                );
            }
            Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Export { dataset, from, to, format, out, wait } => {
            let entries = sealed_log(global, wait).await?;
            let selection = Selection { chain: global.connections.group_prefix.clone(), dataset, from, to };
            let (header, selected): (ExportHeader, Vec<Entry>) = select(&entries, &selection);
            let text = match format {
                Format::Jsonl => export_lines(&header, &selected),
                Format::Csv => export_csv(&selected)?,
            };
            let events = selected.iter().filter(|e| e.event().is_some()).count();
            match out {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    eprintln!("{events} events written to {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Timeline { incident, json } => {
            let entries = live(global).await?;
            let Some(timeline) = timeline::timeline(&entries, &incident) else {
                anyhow::bail!("no event of incident {incident} in the audit topics");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&timeline)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("incident {}", timeline.incident);
            for step in &timeline.steps {
                println!(
                    "  {}  {:<11} {:<10} {:<12} {}",
                    step.time,
                    step.what,
                    step.service,
                    step.who.as_deref().unwrap_or("-"),
                    step.position
                );
                println!("      {}", step.summary);
            }
            for (phase, seconds) in &timeline.phases {
                println!("  {phase:<20} {seconds:.2} s");
            }
            if let Some(seconds) = timeline.time_to_heal_seconds {
                println!("  time to heal         {seconds:.2} s");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild { dataset, json } => rebuild(global, dataset, json).await,
        Command::Keygen { out } => {
            let key = keys::generate()?;
            let (secret, public) = (hex::encode(key.to_bytes()), keys::key_id(&key.verifying_key()));
            match out {
                None => {
                    println!("MEND_AUDIT_SIGNING_KEY={secret}");
                    println!("MEND_AUDIT_PUBLIC_KEY={public}");
                    eprintln!(
                        "keep the signing key secret (give it to the sealer only); hand the public key to auditors"
                    );
                }
                Some(path) => {
                    write_private(&path, &secret)?;
                    let mut public_path = path.clone().into_os_string();
                    public_path.push(".pub");
                    let public_path = PathBuf::from(public_path);
                    std::fs::write(&public_path, format!("{public}\n"))?;
                    eprintln!(
                        "secret key in {} (MEND_AUDIT_SIGNING_KEY={0}), public key in {}",
                        path.display(),
                        public_path.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `mend audit rebuild`: every dataset's history from the topics against
/// its warehouse.
async fn rebuild(global: &Global, only: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    use mend_audit::rebuild::{describe, rebuild};
    let config = global.load_config()?;
    if let Some(name) = &only {
        anyhow::ensure!(config.dataset(name).is_some(), "no dataset {name} in {}", global.config.display());
    }
    let codec = Codec::new(&global.connections.registry_url)?;
    let entries = live(global).await?;
    let mut reports = Vec::new();
    for dataset in config.datasets.iter().filter(|d| only.as_ref().is_none_or(|o| *o == d.name)) {
        let url = dataset.warehouse.clone().unwrap_or_else(|| global.warehouse.clone());
        let warehouse = mend_store::Warehouse::connect(&url).await?;
        let report = rebuild(dataset, &warehouse, &codec, &entries).await;
        warehouse.close().await;
        let report = report?;
        if !json {
            println!(
                "dataset {} (table {}): contract schema {}, {} changes applied",
                report.dataset,
                report.table,
                report.warehouse.contract_schema_id.map_or("none yet".into(), |s| s.to_string()),
                report.history.applied.len()
            );
            for change in &report.history.applied {
                println!("  {}", describe(change));
            }
            for difference in &report.differences {
                println!("  difference: {difference}");
            }
            if report.agrees() {
                println!("  the warehouse agrees with the topics");
            }
        }
        reports.push(report);
    }
    let agree = reports.iter().all(mend_audit::rebuild::Rebuild::agrees);
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(if agree { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Writes a secret readable by its owner only.
fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(())
}
