//! `mend plan`: what mend would do if a schema arrived now, without changing
//! anything. For producer teams' CI: the exit code says whether the change
//! would be applied automatically (0), wait for approval (2) or be blocked (3).

use std::path::PathBuf;
use std::process::ExitCode;

use apache_avro::Schema;
use mend_avro::codec::Codec;
use mend_avro::drift::classify;
use mend_avro::schema::columns_for;
use mend_config::Dataset;
use mend_model::events::{FieldChange, PlanStep};
use mend_model::{Policy, StepKind};
use mend_proposer::{Plan, plan_dataset};
use mend_store::{Warehouse, quote};

use crate::Global;
use serde_json::{Value, json};

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

/// The exit code of a decision.
fn exit_code(policy: Policy) -> u8 {
    match policy {
        Policy::Auto => 0,
        Policy::Approve => 2,
        Policy::Block => 3,
    }
}

/// The schema the dataset's table matches now: its contract in the
/// warehouse, else the subject's latest registered version. None when the
/// dataset has neither (its table does not exist yet).
async fn baseline(
    dataset: &Dataset,
    warehouse: &Warehouse,
    codec: &Codec,
    registry_url: &str,
) -> anyhow::Result<Option<(u32, Schema, std::collections::BTreeMap<String, String>, &'static str)>> {
    if let Some(contract) = warehouse.contract(&dataset.name).await? {
        let schema = codec
            .schema(contract.schema_id)
            .await
            .map_err(|e| anyhow::anyhow!("contract schema {} of {}: {e}", contract.schema_id, dataset.name))?;
        return Ok(Some((contract.schema_id, schema.parsed.clone(), contract.mapping, "contract")));
    }
    let latest = match codec.subject_version(&dataset.subject(), None).await {
        Ok(latest) => latest,
        // A subject nothing was registered under: no table yet either.
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(anyhow::anyhow!("schema registry at {registry_url}: {error}")),
    };
    let id = latest.id;
    let schema = Schema::parse_str(&latest.schema)?;
    let (_, mapping) = columns_for(&schema, warehouse.dialect(), dataset.nested).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some((id, schema, mapping, "latest registered version")))
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let config = global.load_config()?;
    let (registry_url, warehouse_url) = (global.connections.registry_url.as_str(), global.warehouse.as_str());
    let dataset = config.dataset(&args.dataset).ok_or_else(|| {
        let known: Vec<&str> = config.datasets.iter().map(|d| d.name.as_str()).collect();
        anyhow::anyhow!("no dataset {:?} in the configuration (known: {})", args.dataset, known.join(", "))
    })?;
    let text = std::fs::read_to_string(&args.schema)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.schema.display()))?;
    let new = Schema::parse_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a valid Avro schema: {e}", args.schema.display()))?;
    let warehouse = Warehouse::connect(&dataset.warehouse.clone().unwrap_or_else(|| warehouse_url.to_owned())).await?;
    let codec = Codec::new(registry_url)?;

    let (contract_id, changes, plan) = match baseline(dataset, &warehouse, &codec, registry_url).await? {
        Some((id, old, mapping, _)) => {
            let changes = classify(&old, &new);
            let plan = plan_dataset(dataset, &warehouse, &mapping, &changes, &new).await?;
            (Some(id), changes, plan)
        }
        None => (None, Vec::new(), first_table(dataset, &warehouse, &new)?),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report(dataset, contract_id, &changes, &plan))?);
    } else {
        print_plan(dataset, &args, contract_id, &changes, &plan);
    }
    Ok(ExitCode::from(exit_code(plan.policy)))
}

/// A dataset without a table yet: the first record creates it.
fn first_table(dataset: &Dataset, warehouse: &Warehouse, schema: &Schema) -> anyhow::Result<Plan> {
    let (columns, _) = columns_for(schema, warehouse.dialect(), dataset.nested).map_err(|e| anyhow::anyhow!(e))?;
    let list = columns.iter().map(|c| format!("{} {}", quote(&c.name), c.sql_type)).collect::<Vec<_>>().join(", ");
    let rule = "no contract yet: the first record creates the table from its schema => auto (default)".to_owned();
    Ok(Plan {
        steps: vec![PlanStep {
            kind: StepKind::Ddl,
            description: format!("create table {} from this schema", dataset.table),
            sql: Some(format!("CREATE TABLE {} ({list})", quote(&dataset.table))),
            field: None,
            column: None,
            patch: None,
        }],
        policy: Policy::Auto,
        rules: vec![rule],
        decisions: Vec::new(),
    })
}

fn report(dataset: &Dataset, contract: Option<u32>, changes: &[FieldChange], plan: &Plan) -> Value {
    let changes: Vec<Value> = changes
        .iter()
        .zip(&plan.decisions)
        .map(|(change, (decision, rule))| {
            let mut value = serde_json::to_value(change).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.retain(|_, v| !v.is_null());
                object.insert("decision".into(), json!(decision.name()));
                object.insert("rule".into(), json!(rule));
            }
            value
        })
        .collect();
    json!({
        "dataset": dataset.name,
        "table": dataset.table,
        "contract_schema_id": contract,
        "changes": changes,
        "steps": plan.steps,
        "rules": plan.rules,
        "decision": plan.policy.name(),
        "exit_code": exit_code(plan.policy),
    })
}

fn print_plan(dataset: &Dataset, args: &Args, contract: Option<u32>, changes: &[FieldChange], plan: &Plan) {
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
        if let Some(patch) = &step.patch {
            for line in patch.lines() {
                println!("       {line}");
            }
        }
    }
    let meaning = match plan.policy {
        Policy::Auto => "mend would apply this on its own",
        Policy::Approve => "mend would wait for a person to approve",
        Policy::Block => "mend would keep the records quarantined and block the incident",
    };
    println!("\ndecision: {} (exit {}): {meaning}", plan.policy.name(), exit_code(plan.policy));
}
