//! `mend incidents` and `mend show`: what the control API knows.

use mend_model::api::{Incident, quantile};

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
    if let Some(dataset) = args.dataset {
        incidents.retain(|i| i.dataset == dataset);
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
pub fn print_incidents(list: &[Incident]) {
    if list.is_empty() {
        println!("no incidents");
        return;
    }
    let width = list.iter().map(|i| i.dataset.len()).max().unwrap_or(0).max(7);
    println!(
        "{:<36}  {:<width$}  {:<17}  {:<36}  {:<10}  changes",
        "incident", "dataset", "status", "proposal", "supervisor"
    );
    for incident in list {
        let supervisor = incident.supervisor.as_ref();
        println!(
            "{:<36}  {:<width$}  {:<17}  {:<36}  {:<10}  {}",
            incident.id,
            incident.dataset,
            incident.status.as_str(),
            incident.proposal_id.as_deref().unwrap_or("-"),
            supervisor.map_or("-", |a| a.outcome.as_str()),
            describe_changes(&incident.changes),
        );
        if let Some(reason) = supervisor.and_then(|a| a.reason.as_deref()) {
            println!("    supervisor: {reason}");
        } else if let Some((seconds, run)) = supervisor.and_then(|a| a.detection_to_proposal_seconds.map(|s| (s, a))) {
            println!(
                "    supervisor: proposed {} {seconds:.1} s after detection; it waits for approval",
                run.proposal_id.as_deref().unwrap_or("")
            );
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Print JSON (one object per dataset) instead of a table.
    #[arg(long)]
    json: bool,
}

/// One dataset's line of `mend stats`.
#[derive(Debug, serde::Serialize)]
struct DatasetStats {
    dataset: String,
    incidents: usize,
    healed: usize,
    time_to_heal_p50_seconds: Option<f64>,
    time_to_heal_p90_seconds: Option<f64>,
    waiting_for_person_p50_seconds: Option<f64>,
}

/// `mend stats`: per dataset, incidents, how many healed, and the time to
/// heal (p50, p90) and to a person's decision (p50), from the control API.
pub async fn stats(args: StatsArgs, global: &Global) -> anyhow::Result<()> {
    let incidents = global.api().incidents().await?;
    let mut by_dataset: std::collections::BTreeMap<&str, Vec<&Incident>> = std::collections::BTreeMap::new();
    for incident in &incidents {
        by_dataset.entry(&incident.dataset).or_default().push(incident);
    }
    let mut rows = Vec::new();
    for (dataset, list) in by_dataset {
        let sorted = |field: fn(&Incident) -> Option<f64>| {
            let mut values: Vec<f64> = list.iter().filter_map(|i| field(i)).collect();
            values.sort_by(f64::total_cmp);
            values
        };
        let (heal, wait) = (sorted(|i| i.time_to_heal_seconds), sorted(|i| i.waiting_for_person_seconds));
        rows.push(DatasetStats {
            dataset: dataset.to_owned(),
            incidents: list.len(),
            healed: heal.len(),
            time_to_heal_p50_seconds: quantile(&heal, 0.5),
            time_to_heal_p90_seconds: quantile(&heal, 0.9),
            waiting_for_person_p50_seconds: quantile(&wait, 0.5),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let seconds = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
    println!(
        "{:<30}  {:>9}  {:>6}  {:>10}  {:>10}  {:>12}",
        "dataset", "incidents", "healed", "heal p50", "heal p90", "person p50"
    );
    for row in &rows {
        println!(
            "{:<30}  {:>9}  {:>6}  {:>10}  {:>10}  {:>12}",
            row.dataset,
            row.incidents,
            row.healed,
            seconds(row.time_to_heal_p50_seconds),
            seconds(row.time_to_heal_p90_seconds),
            seconds(row.waiting_for_person_p50_seconds),
        );
    }
    Ok(())
}
