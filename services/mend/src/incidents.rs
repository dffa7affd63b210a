//! `mend incidents` and `mend show`: what the control API knows.

use serde_json::Value;

use crate::Global;
use crate::client::describe_changes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (an array of incidents) instead of a table.
    #[arg(long)]
    json: bool,
    /// Only this dataset's incidents.
    #[arg(long)]
    dataset: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The incident (from `mend incidents`).
    incident: String,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let mut incidents = global.api().incidents().await?;
    if let (Some(dataset), Some(list)) = (args.dataset, incidents.as_array_mut()) {
        list.retain(|i| i["dataset"].as_str() == Some(dataset.as_str()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&incidents)?);
    } else {
        print_incidents(&incidents);
    }
    Ok(())
}

pub async fn show(args: ShowArgs, global: &Global) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&global.api().incident(&args.incident).await?)?);
    Ok(())
}

/// The incidents as a table for people.
pub fn print_incidents(incidents: &Value) {
    let Some(list) = incidents.as_array() else { return };
    if list.is_empty() {
        println!("no incidents");
        return;
    }
    let width = list.iter().filter_map(|i| i["dataset"].as_str()).map(str::len).max().unwrap_or(0).max(7);
    println!(
        "{:<36}  {:<width$}  {:<17}  {:<36}  {:<10}  changes",
        "incident", "dataset", "status", "proposal", "agent"
    );
    for incident in list {
        println!(
            "{:<36}  {:<width$}  {:<17}  {:<36}  {:<10}  {}",
            incident["id"].as_str().unwrap_or(""),
            incident["dataset"].as_str().unwrap_or(""),
            incident["status"].as_str().unwrap_or(""),
            incident["proposal_id"].as_str().unwrap_or("-"),
            incident["agent"]["outcome"].as_str().unwrap_or("-"),
            describe_changes(&incident["changes"]),
        );
        let agent = &incident["agent"];
        if let Some(reason) = agent["reason"].as_str() {
            println!("    agent: {reason}");
        } else if let Some(seconds) = agent["detection_to_proposal_seconds"].as_f64() {
            println!(
                "    agent: proposed {} {seconds:.1} s after detection; it waits for approval",
                agent["proposal_id"].as_str().unwrap_or("")
            );
        }
    }
}
