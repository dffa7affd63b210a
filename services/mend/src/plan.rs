//! `mend plan`: what mend would do if a schema arrived now, without changing
//! anything. For producer teams' CI: the exit code says whether the change
//! would be applied automatically (0), wait for approval (2) or be blocked (3),
//! and 4 when mend would heal it on its own but readers of the contract's
//! schema cannot read the new one (Avro's resolution says so).

use std::path::PathBuf;
use std::process::ExitCode;

use apache_avro::Schema;
use mend_avro::codec::Codec;
use mend_config::Dataset;
use mend_model::Policy;
use mend_planner::compare::{Comparison, compare, report};
use mend_store::Warehouse;

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset the schema is for (a `[[dataset]]` name in mend.toml).
    #[arg(long)]
    dataset: String,
    /// The Avro schema (.avsc) about to be deployed.
    #[arg(long)]
    schema: PathBuf,
    /// Print JSON: `changes` (each with kind, field, evidence, decision and
    /// rule), `steps` and `decision`.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.load_config()?;
    let dataset = config.dataset(&args.dataset).ok_or_else(|| {
        let known: Vec<&str> = config.datasets.iter().map(|d| d.name.as_str()).collect();
        anyhow::anyhow!("no dataset {:?} in the configuration (known: {})", args.dataset, known.join(", "))
    })?;
    let text = std::fs::read_to_string(&args.schema)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.schema.display()))?;
    let new = Schema::parse_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid Avro schema: {e}", args.schema.display()))?;
    let warehouse_url = dataset.warehouse.clone().unwrap_or_else(|| global.warehouse.clone());
    let warehouse = Warehouse::connect(&warehouse_url).await?;
    let codec = Codec::new(&global.connections.registry_url)?;
    let comparison = compare(dataset, &warehouse, &codec, &new).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report(dataset, &comparison))?);
    } else {
        print_plan(dataset, &args, &comparison);
    }
    Ok(ExitCode::from(comparison.exit_code()))
}

fn print_plan(dataset: &Dataset, args: &Args, comparison: &Comparison) {
    let Comparison { contract_schema_id: contract, changes, plan, contract_can_read } = comparison;
    let against = contract.map_or_else(|| "no contract yet".to_owned(), |id| format!("contract schema {id}"));
    println!("mend plan: dataset {} (table {}), {against} -> {}", dataset.name, dataset.table, args.schema.display());
    if changes.is_empty() && contract.is_some() {
        println!("\nno changes that need action");
    } else if !changes.is_empty() {
        println!("\nchanges");
        for (change, (decision, rule)) in changes.iter().zip(&plan.decisions) {
            println!("  {:<8} {}", decision.name(), crate::client::describe_change(change));
            println!("           rule: {rule}");
            for (key, value) in &change.evidence {
                if !key.ends_with("_schema") {
                    println!("           {key}: {value}");
                }
            }
        }
    }
    let extra: Vec<&String> = plan.rules.iter().filter(|r| !plan.decisions.iter().any(|(_, d)| d == *r)).collect();
    if !extra.is_empty() {
        println!("\nnotes");
        for rule in extra {
            println!("  {rule}");
        }
    }
    println!("\nplan");
    for (number, step) in plan.steps.iter().enumerate() {
        println!("  {}. [{}] {}", number + 1, step.kind, step.description);
        if let Some(sql) = &step.sql {
            println!("       {sql}");
        }
        if let Some(cost) = &step.cost {
            println!("       cost: {cost}");
        }
        if let Some(patch) = &step.patch {
            for line in patch.lines() {
                println!("       {line}");
            }
        }
    }
    if let Some(radius) = &plan.blast_radius {
        println!("\ndownstream in dbt ({})", radius.manifest);
        println!("  {}", radius.summary());
        for node in radius.affected() {
            println!("  {node}");
        }
    }
    let meaning = match plan.policy {
        Policy::Auto => "mend would apply this on its own",
        Policy::Approve => "mend would wait for a person to approve",
        Policy::Block => "mend would keep the records quarantined and block the incident",
    };
    println!("\ndecision: {} (exit {}): {meaning}", plan.policy.name(), comparison.exit_code());
    if *contract_can_read == Some(false) {
        println!("note: Avro's resolution says readers of the contract's schema cannot read the new one");
    }
}
