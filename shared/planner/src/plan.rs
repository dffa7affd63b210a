//! The planner: from classified changes to an ordered remediation plan (DDL
//! for the warehouse's dialect, mapping changes, the dbt patch, the replay)
//! and the decision policy reaches on it. [`plan`] is pure; [`plan_dataset`]
//! reads the table's columns and the dbt file first.

use std::collections::BTreeMap;

use apache_avro::Schema;
use mend_avro::schema::{columns_for, record_of, sql_type, strip_null};
use mend_config::{Dataset, Nested};
use mend_model::events::{BlastRadius, FieldChange, PlanStep};
use mend_model::{ChangeKind, Column, Dialect, Policy, RenameProof, StepKind};
use mend_store::{StoreError, Warehouse, quote};

use crate::expand::{self, Widening};
use crate::place::{Place, place};
use crate::steps::{gate, step};
use crate::{blast, dbt};

/// What the planner needs to know about the destination.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub table: &'a str,
    pub dialect: Dialect,
    pub columns: &'a [Column],
    /// The contract's field → column mapping.
    pub mapping: &'a BTreeMap<String, String>,
    /// Key columns (a removed key field cannot be healed).
    pub key: &'a [String],
    /// The dataset's policy table (kind → decision); defaults fill the rest.
    pub policy: &'a BTreeMap<ChangeKind, Policy>,
    pub nested: Nested,
    /// The dbt file to patch, when the dataset has one.
    pub dbt: Option<DbtFile<'a>>,
}

/// A dbt properties file and the model in it.
#[derive(Debug, Clone)]
pub struct DbtFile<'a> {
    /// Path relative to the dbt project (named so in the patch).
    pub path: &'a str,
    pub model: &'a str,
    pub text: &'a str,
}

/// A plan: its steps, the decision, and the rule behind each change.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub policy: Policy,
    pub rules: Vec<String>,
    /// Per change (in the order given): its decision and the rule behind it.
    pub decisions: Vec<(Policy, String)>,
    /// What it does downstream in the dataset's dbt project, when the
    /// dataset names its manifest.
    pub blast_radius: Option<BlastRadius>,
    /// The columns it widens by `ALTER COLUMN TYPE` (PostgreSQL, without a
    /// conversion): expand/contract may take them instead ([`crate::expand`]).
    pub widenings: Vec<Widening>,
}

/// The schema of a field path (`a.b`, not through arrays) in a record schema.
fn schema_at(schema: &Schema, path: &str) -> Option<Schema> {
    let mut current = schema.clone();
    for part in path.split('.') {
        let (inner, _) = strip_null(&current);
        let record = record_of(inner)?;
        current = record.fields.iter().find(|f| f.name == part)?.schema.clone();
    }
    Some(current)
}

/// Plans the changes of a new writer schema (pure: no I/O). Every change
/// gets a rule naming the decision and where it came from (mend's default or
/// the dataset's policy); the plan's decision is the strictest of them.
pub fn plan(changes: &[FieldChange], writer: &Schema, target: &Target<'_>) -> Plan {
    let table = quote(target.table);
    let column_info = |column: &str| target.columns.iter().find(|c| c.name == column);
    let mut steps = Vec::new();
    let mut rules = Vec::new();
    let mut policy = Policy::Auto;
    let mut dbt_edits = Vec::new();
    let mut decisions = Vec::new();
    let mut widenings = Vec::new();
    for change in changes {
        let field = change.field.as_str();
        let place = place(field, target.nested, target.mapping);
        // Choices for a person, listed after the change's rule.
        let mut options = Vec::new();
        // The default decision and its reason, per change kind.
        let (default, why) = match (change.kind, &place) {
            (ChangeKind::FieldAdded, Place::InJson(column)) => {
                steps.push(step(StepKind::Mapping, format!("{field} is stored inside the JSON column {column}")));
                (Policy::Auto, format!("nested in the JSON column {column}"))
            }
            (ChangeKind::FieldAdded, Place::Column(column)) => {
                // One column per leaf: the field itself, or with `flatten`
                // every field of a new record.
                let leaves: Vec<(String, Column)> = match columns_for(writer, target.dialect, target.nested) {
                    Ok((columns, mapping)) => mapping
                        .into_iter()
                        .filter(|(path, _)| path == field || path.starts_with(&format!("{field}.")))
                        .filter_map(|(path, name)| columns.iter().find(|c| c.name == name).map(|c| (path, c.clone())))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let leaves = if leaves.is_empty() {
                    let sql_type =
                        schema_at(writer, field).map_or_else(|| "TEXT".to_owned(), |s| sql_type(&s, target.dialect));
                    vec![(field.to_owned(), Column { name: column.clone(), sql_type, nullable: true })]
                } else {
                    leaves
                };
                for (path, leaf) in &leaves {
                    let name = &leaf.name;
                    if column_info(name).is_none() {
                        let sql_type = &leaf.sql_type;
                        steps.push(PlanStep {
                            sql: Some(format!("ALTER TABLE {table} ADD COLUMN {} {sql_type}", quote(name))),
                            field: Some(path.clone()),
                            column: Some(name.clone()),
                            ..step(StepKind::Ddl, format!("add column {name} {sql_type} for the new field {path}"))
                        });
                    }
                    steps.push(PlanStep {
                        field: Some(path.clone()),
                        column: Some(name.clone()),
                        ..step(StepKind::Mapping, format!("map field {path} to column {name}"))
                    });
                }
                dbt_edits.push(dbt::ColumnEdit::Added { column: column.clone(), description: change.doc.clone() });
                if change.nullable == Some(true) || change.has_default == Some(true) {
                    (Policy::Auto, "nullable or with a default".to_owned())
                } else {
                    (Policy::Approve, "required and without a default: earlier records cannot have it".to_owned())
                }
            }
            (ChangeKind::FieldRenamed, place) => {
                let from = change.from.as_deref().unwrap_or_default();
                let to = change.to.as_deref().unwrap_or(field);
                match (place, self::place(from, target.nested, target.mapping)) {
                    (Place::Column(_), Place::Column(column)) => {
                        steps.push(PlanStep {
                            field: Some(to.into()),
                            column: Some(column.clone()),
                            ..step(
                                StepKind::Mapping,
                                format!("map the renamed field {to} onto the existing column {column} (was {from}), so queries on {column} keep working"),
                            )
                        });
                        dbt_edits.push(dbt::ColumnEdit::Renamed {
                            column: column.clone(),
                            field: to.to_owned(),
                            from: from.to_owned(),
                        });
                    }
                    (_, Place::InJson(column) | Place::Column(column)) => {
                        steps.push(step(
                            StepKind::Mapping,
                            format!("{to} (was {from}) is stored inside the JSON column {column} under its new name"),
                        ));
                    }
                }
                let confidence = change.confidence.unwrap_or(0.0);
                let proof = change.rename_proof.map(RenameProof::describe).unwrap_or("unproven");
                (Policy::Approve, format!("{from} -> {to}, confidence {confidence:.2}, {proof}"))
            }
            (ChangeKind::FieldRemoved, Place::InJson(column)) => {
                steps.push(step(
                    StepKind::Mapping,
                    format!("{field} no longer appears inside the JSON column {column}"),
                ));
                (Policy::Approve, "queries on the JSON path will find nothing in new records".to_owned())
            }
            (ChangeKind::FieldRemoved, Place::Column(column)) => {
                if target.key.iter().any(|k| k == column) {
                    (Policy::Block, format!("{column} is a key column: records without it cannot be upserted"))
                } else {
                    if column_info(column).is_some_and(|c| !c.nullable) {
                        steps.push(PlanStep {
                            sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(column))),
                            column: Some(column.clone()),
                            ..step(
                                StepKind::Ddl,
                                format!("allow NULL in {column}: new records no longer carry {field}"),
                            )
                        });
                    } else {
                        steps.push(PlanStep {
                            column: Some(column.clone()),
                            ..step(StepKind::Mapping, format!("keep column {column}; new records leave it NULL"))
                        });
                    }
                    (Policy::Approve, "the column is kept, never dropped".to_owned())
                }
            }
            (ChangeKind::TypeWidened, Place::InJson(column)) => {
                steps.push(step(
                    StepKind::Mapping,
                    format!("the JSON column {column} holds the wider values of {field}"),
                ));
                (Policy::Auto, "inside a JSON column".to_owned())
            }
            (ChangeKind::TypeWidened, Place::Column(column)) => {
                let new_type = schema_at(writer, field).map(|s| sql_type(&s, target.dialect));
                let current = column_info(column).map(|c| c.sql_type.to_uppercase());
                let new_type = new_type.map(|new_type| exact(current.as_deref(), new_type));
                match (target.dialect, new_type) {
                    (Dialect::Postgres, Some(new_type))
                        if current.as_deref().is_some_and(|c| !mend_store::guard::same_type(c, &new_type)) =>
                    {
                        let using = current
                            .as_deref()
                            .map(|c| mend_store::guard::using(c, &new_type, column))
                            .unwrap_or_default();
                        if using.is_empty() {
                            widenings.push(Widening {
                                step: steps.len(),
                                field: field.to_owned(),
                                column: column.clone(),
                                sql_type: new_type.clone(),
                            });
                        }
                        steps.push(PlanStep {
                            sql: Some(format!(
                                "ALTER TABLE {table} ALTER COLUMN {} TYPE {new_type}{using}",
                                quote(column)
                            )),
                            field: Some(field.into()),
                            column: Some(column.clone()),
                            ..step(StepKind::Ddl, format!("widen column {column} to {new_type}"))
                        });
                        (Policy::Approve, "rewrites a PostgreSQL column".to_owned())
                    }
                    _ => {
                        steps.push(PlanStep {
                            field: Some(field.into()),
                            column: Some(column.clone()),
                            ..step(StepKind::Mapping, format!("column {column} already holds the wider type"))
                        });
                        (Policy::Auto, "needs no DDL".to_owned())
                    }
                }
            }
            (ChangeKind::TypeChanged, place) => {
                let (old, new) = (change.old_type.as_deref().unwrap_or("?"), change.new_type.as_deref().unwrap_or("?"));
                if let Place::Column(column) = place {
                    let sql_type =
                        schema_at(writer, field).map_or_else(|| "TEXT".to_owned(), |s| sql_type(&s, target.dialect));
                    options.push(format!(
                        "option for a person: add a column {column}_{} {sql_type} and map {field} to it (the old column keeps its values)",
                        sql_type.split(['(', ' ']).next().unwrap_or("new").to_lowercase()
                    ));
                    // A cast is an option only when the sampled values all parse.
                    match &change.cast {
                        Some(cast) if cast.all_parse() => options.push(format!(
                            "option for a person: keep column {column} and cast the new values to its type ({})",
                            cast.check
                        )),
                        Some(cast) => options.push(format!("no cast: {}", cast.check)),
                        None => options.push(format!(
                            "option for a person: cast column {column} to {sql_type}, only if every quarantined value parses as {new}"
                        )),
                    }
                }
                (
                    Policy::Block,
                    format!("{old} -> {new}: the column cannot hold the new values; records stay quarantined"),
                )
            }
            (ChangeKind::NullabilityChanged, Place::Column(column)) if change.nullable == Some(true) => {
                if column_info(column).is_some_and(|c| !c.nullable) {
                    steps.push(PlanStep {
                        sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(column))),
                        column: Some(column.clone()),
                        ..step(StepKind::Ddl, format!("allow NULL in {column}"))
                    });
                    (Policy::Approve, "now nullable: relaxes NOT NULL".to_owned())
                } else {
                    (Policy::Auto, "now nullable; the column already allows NULL".to_owned())
                }
            }
            (ChangeKind::EnumSymbolsAdded, Place::Column(column)) => {
                if !change.all_symbols.is_empty() {
                    dbt_edits.push(dbt::ColumnEdit::AcceptedValues {
                        column: column.clone(),
                        values: change.all_symbols.clone(),
                    });
                }
                (Policy::Auto, "the TEXT column holds any symbol".to_owned())
            }
            (ChangeKind::Incompatible, _) => {
                let avro = change.avro_error.as_deref().unwrap_or("no reason given");
                (
                    Policy::Block,
                    format!(
                        "Avro's resolution says the contract cannot read the new schema ({avro}), and no field change \
                         explains it: a person or the supervisor decides"
                    ),
                )
            }
            (other, _) => (Policy::Auto, format!("{other} needs no change to the table")),
        };
        let (decision, source) = match target.policy.get(&change.kind) {
            Some(configured) => (*configured, "dataset policy"),
            None => (default, "default"),
        };
        policy = policy.max(decision);
        let rule = format!("{}({field}): {why} => {} ({source})", change.kind, decision.name());
        rules.push(rule.clone());
        rules.extend(options);
        decisions.push((decision, rule));
    }
    if matches!(writer, Schema::Null) {
        policy = Policy::Block;
        rules.push("the writer schema is unknown or unreadable: nothing can be planned => block (default)".into());
    } else if changes.is_empty() {
        rules.push("no change needs action => auto (default)".into());
    }
    if let Some(dbt) = &target.dbt {
        match dbt::patch(dbt.path, dbt.text, dbt.model, &dbt_edits) {
            Ok(Some(patch)) => steps.push(PlanStep {
                patch: Some(patch),
                ..step(StepKind::DbtPatch, format!("update the dbt model {} in {}", dbt.model, dbt.path))
            }),
            Ok(None) => {}
            Err(reason) => rules.push(format!("dbt: {reason}; no patch")),
        }
    }
    if !changes.is_empty() || matches!(writer, Schema::Null) {
        steps.push(step(StepKind::Replay, "replay the incident's quarantined records in their original order".into()));
    }
    Plan { steps, policy, rules, decisions, blast_radius: None, widenings }
}

/// Plans `changes` for `dataset` as things stand: the table's columns from
/// the catalog, the dataset's policy, and its dbt file when it has one.
pub async fn plan_dataset(
    dataset: &Dataset,
    warehouse: &Warehouse,
    mapping: &BTreeMap<String, String>,
    changes: &[FieldChange],
    writer: &Schema,
) -> Result<Plan, StoreError> {
    let columns = warehouse.columns(&dataset.table).await?;
    let dbt_text = dataset.dbt.as_ref().map(|dbt| {
        let path = dbt.project.join(&dbt.schema);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    });
    let schema_path = dataset.dbt.as_ref().map(|d| d.schema.to_string_lossy().into_owned()).unwrap_or_default();
    let model = dataset.dbt.as_ref().and_then(|d| d.model.clone()).unwrap_or_else(|| dataset.table.clone());
    let dbt = match &dbt_text {
        Some(Ok(text)) => Some(DbtFile { path: &schema_path, model: &model, text }),
        _ => None,
    };
    let target = Target {
        table: &dataset.table,
        dialect: warehouse.dialect(),
        columns: &columns,
        mapping,
        key: &dataset.key,
        policy: &dataset.policy,
        nested: dataset.nested,
        dbt,
    };
    let mut plan = plan(changes, writer, &target);
    if let Some(Err(reason)) = dbt_text {
        plan.rules.push(format!("dbt: {reason}; no patch"));
    }
    warehouse.cost_steps(&dataset.table, &mut plan.steps).await?;
    // What the plan does downstream is its net effect: read before
    // expand/contract spells a widening as an add and two renames.
    plan.blast_radius = blast::blast_radius(dataset, warehouse, &plan.steps, changes, mapping).await?;
    expand::offer(&mut plan.steps, &mut plan.rules, &plan.widenings, dataset, warehouse, &columns).await?;
    plan.widenings.clear();
    if let Some(rule) = gate(&plan.steps, &dataset.ddl) {
        plan.policy = plan.policy.max(Policy::Approve);
        plan.rules.push(rule);
    }
    if let Some((policy, rule)) = plan.blast_radius.as_ref().and_then(|radius| blast::gate(radius, dataset)) {
        plan.policy = plan.policy.max(policy);
        plan.rules.push(rule);
    }
    Ok(plan)
}

/// The column type that holds every value of a widened field exactly:
/// Avro promotes int and long to float and double, but `bigint` → `double
/// precision` (or `integer` → `real`) rounds every value beyond the
/// mantissa, so such a column becomes an unconstrained `NUMERIC`, which holds
/// the old integers and the new floating-point values alike (or stays one).
fn exact(current: Option<&str>, new_type: String) -> String {
    use mend_store::guard::types::{self, Builtin};
    let (Some(from), Some(to)) = (current.and_then(types::current), types::current(&new_type)) else {
        return new_type;
    };
    let rounds = matches!(to, Builtin::Real | Builtin::Double) && !types::widens(from, to);
    match from {
        Builtin::Numeric(None) if rounds => current.unwrap_or_default().to_owned(),
        Builtin::SmallInt | Builtin::Integer | Builtin::BigInt | Builtin::Numeric(_) if rounds => "NUMERIC".to_owned(),
        _ => new_type,
    }
}

#[cfg(test)]
mod tests;
