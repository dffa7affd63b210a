//! Expand/contract in a plan ([`mend_store::expand`]): a widening whose
//! `ALTER COLUMN TYPE` would rewrite a table above the size gate becomes an
//! added wider column, a backfill, and a swap by renames — when the column
//! can take it. Each step stays its own step of the plan, costed and
//! shown like every other.

use mend_config::Dataset;
use mend_model::events::PlanStep;
use mend_model::{Column, Dialect, StepKind};
use mend_store::expand::{old_name, wide_name};
use mend_store::{StoreError, Warehouse, quote};

use crate::steps::{gate, step};

/// PostgreSQL's longest identifier, in bytes.
const MAX_NAME: usize = 63;

/// A column a plan widens in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widening {
    /// The ALTER's step.
    pub step: usize,
    pub field: String,
    pub column: String,
    /// The wider type, in the warehouse's dialect.
    pub sql_type: String,
}

/// Replaces each of `widenings` (steps of `steps`) over the size gate by
/// expand/contract when the dataset allows it and the column can take it;
/// a rule says which way each went and why.
pub(crate) async fn offer(
    steps: &mut Vec<PlanStep>,
    rules: &mut Vec<String>,
    widenings: &[Widening],
    dataset: &Dataset,
    warehouse: &Warehouse,
    columns: &[Column],
) -> Result<(), StoreError> {
    if warehouse.dialect() != Dialect::Postgres || !dataset.ddl.expand_contract {
        return Ok(());
    }
    let mut replaced = false;
    // From the last, so the earlier steps' positions hold.
    for widening in widenings.iter().rev() {
        let Some(step) = steps.get(widening.step) else { continue };
        let Some(over) = gate(std::slice::from_ref(step), &dataset.ddl) else { continue };
        let column = &widening.column;
        let (wide, old) = (wide_name(column), old_name(column));
        let taken = |name: &str| columns.iter().any(|c| c.name == name);
        let why_not = if dataset.key.iter().any(|k| k == column) {
            Some("it is a key column (its index would stay on the old column)".to_owned())
        } else if wide.len() > MAX_NAME || old.len() > MAX_NAME {
            Some(format!("{old} is longer than PostgreSQL's {MAX_NAME} bytes"))
        } else if taken(&wide) || taken(&old) {
            Some(format!("the table has a column {wide} or {old} already"))
        } else {
            let dependents = warehouse.dependents(&dataset.table, column).await?;
            (!dependents.is_empty())
                .then(|| format!("{} depend on it and would stay on the old column", dependents.join(", ")))
        };
        if let Some(why_not) = why_not {
            rules.push(format!("expand/contract not offered for {column}: {why_not}; the ALTER stays"));
            continue;
        }
        let nullable = columns.iter().find(|c| &c.name == column).is_none_or(|c| c.nullable);
        let replacement = expand_steps(&dataset.table, &widening.field, column, &widening.sql_type, nullable);
        steps.splice(widening.step..=widening.step, replacement);
        replaced = true;
        rules.push(format!(
            "expand/contract for {column}: the ALTER would be {}; instead a wider column beside it, both written \
             meanwhile, a backfill in short batches and a swap by renames under a short lock; the old column \
             stays as {old} until a person drops it",
            over.trim_start_matches("size gate: ").trim_end_matches(" needs a person"),
        ));
    }
    // The new statements costed (each cost reads the catalog and dry-runs
    // on an empty copy: only when the plan changed).
    if replaced {
        warehouse.cost_steps(&dataset.table, steps).await?;
    }
    Ok(())
}

/// The steps widening `column` to `sql_type` by expand/contract.
fn expand_steps(table: &str, field: &str, column: &str, sql_type: &str, nullable: bool) -> Vec<PlanStep> {
    let (wide, old, table) = (wide_name(column), old_name(column), quote(table));
    let ddl = |sql: String, description: String| PlanStep { sql: Some(sql), ..step(StepKind::Ddl, description) };
    let mut steps = vec![
        ddl(
            format!("ALTER TABLE {table} ADD COLUMN {} {sql_type}", quote(&wide)),
            format!(
                "expand: add column {wide} {sql_type} beside {column}; from now on a trigger mend installs writes \
                 {column}'s value into it on every insert and update"
            ),
        ),
        PlanStep {
            description: format!(
                "backfill: copy {column} into {wide} for every earlier row, 8 MiB of table per transaction"
            ),
            field: Some(field.to_owned()),
            column: Some(column.to_owned()),
            ..step(StepKind::Backfill, String::new())
        },
        ddl(
            format!("ALTER TABLE {table} RENAME COLUMN {} TO {}", quote(column), quote(&old)),
            format!("swap: rename {column} to {old} (kept, never dropped by mend)"),
        ),
    ];
    if !nullable {
        steps.push(ddl(
            format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(&old)),
            format!("swap: allow NULL in {old}: nothing writes it any more"),
        ));
    }
    steps.push(ddl(
        format!("ALTER TABLE {table} RENAME COLUMN {} TO {}", quote(&wide), quote(column)),
        format!("swap: rename {wide} to {column}, in the same transaction, and end the dual write"),
    ));
    steps
}
