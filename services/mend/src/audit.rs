//! `mend audit`: the audit log checked (`verify`), handed over (`export`)
//! and told per incident (`timeline`), from the topics alone.

use std::path::PathBuf;
use std::process::ExitCode;

use mend_audit::{Entry, export_lines, read_export, read_topics, timeline, verify};
use mend_avro::Codec;

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check every audit event: it decodes, its hash matches its content,
    /// the event it answers exists and its prev_hash is that event's hash,
    /// offsets come in order without gaps. Prints each finding with its
    /// topic, partition and offset; exit code 0 only when the log is clean.
    Verify {
        /// An export (`mend audit export`) instead of the live topics.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The export was filtered (`--dataset`): gaps in its offsets are
        /// other datasets' events, not removals.
        #[arg(long)]
        filtered: bool,
    },
    /// Write the audit log as JSON lines (one event per line with its
    /// topic, partition and offset) for an auditor, who checks it offline
    /// with `mend audit verify --file`.
    Export {
        /// Only this dataset's events (verify such an export with --filtered).
        #[arg(long)]
        dataset: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
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
}

async fn live(global: &Global) -> anyhow::Result<Vec<Entry>> {
    let codec = Codec::new(&global.connections.registry_url)?;
    Ok(read_topics(&global.connections.brokers, &codec).await?)
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Verify { file, filtered } => {
            let (entries, complete) = match &file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    (read_export(&text)?, !filtered)
                }
                None => {
                    for topic in mend_model::topics::EVENT_TOPICS {
                        match mend_runtime::kafka::deletions(&global.connections.brokers, topic).await {
                            Ok(said) => {
                                for what in said {
                                    eprintln!("warning: {topic} would lose audit events: {what}");
                                }
                            }
                            Err(error) => eprintln!("warning: cannot read {topic}'s retention: {error}"),
                        }
                    }
                    (live(global).await?, true)
                }
            };
            let findings = verify(&entries, complete);
            for finding in &findings {
                println!("{}: {}", finding.position, finding.problem);
            }
            println!("{} events checked, {} findings", entries.len(), findings.len());
            Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Export { dataset, out } => {
            let mut entries = live(global).await?;
            if let Some(dataset) = &dataset {
                entries.retain(|e| e.event.as_ref().is_ok_and(|ev| ev.envelope().dataset == *dataset));
            }
            let text = export_lines(&entries);
            match out {
                Some(path) => {
                    std::fs::write(&path, text)?;
                    eprintln!("{} events written to {}", entries.len(), path.display());
                }
                None => print!("{text}"),
            }
            if dataset.is_some() {
                eprintln!("a filtered export: check it with `mend audit verify --file … --filtered`");
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
    }
}
