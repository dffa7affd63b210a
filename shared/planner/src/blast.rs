//! A plan's blast radius in the dataset's dbt project: what its steps and
//! changes do to the table's columns ([`effects`]), read through the same
//! allow-list the applier uses, then walked through the project's compiled
//! manifest ([`mend_lineage`]); and the policy gate on what it breaks.

use std::collections::BTreeMap;

use mend_config::Dataset;
use mend_lineage::{Change, Effect};
use mend_model::events::{BlastRadius, FieldChange, PlanStep};
use mend_model::{ChangeKind, Impact, Policy, StepKind};
use mend_store::guard::{self, types};
use mend_store::{StoreError, Warehouse};

use crate::place::{Place, place};

/// What `steps` and `changes` do to the columns of `target`: each DDL
/// statement as the allow-list reads it (renamed, retyped, added columns),
/// then the changes no statement shows (a removed field's column is NULL
/// from now on; an enum's column takes new symbols). A statement the
/// allow-list refuses ends the reading: the plan cannot apply past it.
pub fn effects(
    target: &guard::Target,
    steps: &[PlanStep],
    changes: &[FieldChange],
    mapping: &BTreeMap<String, String>,
    nested: mend_config::Nested,
) -> Vec<Effect> {
    let dialect = target.dialect;
    let mut target = target.clone();
    let mut effects = Vec::new();
    for sql in steps.iter().filter(|s| s.kind == StepKind::Ddl).filter_map(|s| s.sql.as_deref()) {
        let Ok(allowed) = guard::check(sql, &target) else { break };
        for effect in &allowed.effects {
            let change = match effect {
                guard::Effect::AddColumn { column, sql_type } => {
                    Some((column, Change::Added { sql_type: sql_type.name(dialect) }))
                }
                guard::Effect::SetType { column, sql_type } => {
                    let current = target.columns.iter().find(|c| c.name.eq_ignore_ascii_case(column));
                    let from = current.and_then(|c| types::current(&c.sql_type));
                    // The catalog's names on both sides (int4 to int8).
                    let from_type = match (from, current) {
                        (Some(from), _) => from.name(dialect),
                        (None, Some(c)) => c.sql_type.clone(),
                        (None, None) => "an unknown type".to_owned(),
                    };
                    let widening = from.is_some_and(|from| {
                        use types::Builtin as B;
                        // Text and bytes are one to mend's loader, not to
                        // SQL reading them.
                        types::widens(from, *sql_type)
                            && !matches!((from, *sql_type), (B::Text, B::Bytes) | (B::Bytes, B::Text))
                    });
                    Some((column, Change::Retyped { from: from_type, to: sql_type.name(dialect), widening }))
                }
                guard::Effect::RenameColumn { from, to } => Some((from, Change::Renamed { to: to.clone() })),
                guard::Effect::DropNotNull { .. } | guard::Effect::CreateChild { .. } => None,
            };
            if let Some((column, change)) = change {
                effects.push(Effect { column: column.clone(), change });
            }
        }
        target.apply(&allowed);
    }
    for change in changes {
        let Place::Column(column) = place(&change.field, nested, mapping) else { continue };
        if !target.columns.iter().any(|c| c.name.eq_ignore_ascii_case(&column)) {
            continue;
        }
        let effect = match change.kind {
            ChangeKind::FieldRemoved => Change::Nulls,
            ChangeKind::EnumSymbolsAdded => {
                let added = change.evidence.get("symbols").map(|s| s.split(',').map(str::to_owned).collect());
                Change::Values { added: added.unwrap_or_default() }
            }
            _ => continue,
        };
        effects.push(Effect { column, change: effect });
    }
    effects
}

/// The blast radius of a plan on `dataset`, when it names a dbt manifest.
pub async fn blast_radius(
    dataset: &Dataset,
    warehouse: &Warehouse,
    steps: &[PlanStep],
    changes: &[FieldChange],
    mapping: &BTreeMap<String, String>,
) -> Result<Option<BlastRadius>, StoreError> {
    let Some(manifest) = &dataset.dbt_manifest else { return Ok(None) };
    let target = warehouse.target(&dataset.table).await?;
    let effects = effects(&target, steps, changes, mapping, dataset.nested);
    let path = manifest.clone();
    let (schema, table) = (target.schema.clone(), dataset.table.clone());
    // Reading a large manifest and its SQL is CPU work: off the runtime's
    // threads.
    let read = tokio::task::spawn_blocking(move || mend_lineage::blast_radius(&path, Some(&schema), &table, &effects));
    Ok(Some(read.await.unwrap_or_else(|e| BlastRadius {
        manifest: manifest.display().to_string(),
        error: Some(format!("reading the manifest stopped: {e}")),
        ..BlastRadius::default()
    })))
}

/// The dbt fix for the columns `steps` rename (a drafted RENAME COLUMN:
/// mend's own renames keep the column), given their blast radius: a
/// dbt_patch step per model reading the table directly that can alias the
/// new name back to the old ([`mend_lineage::aliases`]), and a rule listing
/// what a person must fix. The project is the dataset's dbt project, else
/// the directory above the manifest's `target/`.
pub async fn dbt_fixes(
    dataset: &Dataset,
    warehouse: &Warehouse,
    steps: &[PlanStep],
    radius: &BlastRadius,
) -> Result<(Vec<PlanStep>, Vec<String>), StoreError> {
    let Some(manifest) = dataset.dbt_manifest.clone() else { return Ok((Vec::new(), Vec::new())) };
    let target = warehouse.target(&dataset.table).await?;
    let effects = effects(&target, steps, &[], &BTreeMap::new(), dataset.nested);
    if !effects.iter().any(|e| matches!(e.change, Change::Renamed { .. })) {
        return Ok((Vec::new(), Vec::new()));
    }
    let project = match &dataset.dbt {
        Some(dbt) => dbt.project.clone(),
        None => {
            manifest.parent().and_then(std::path::Path::parent).map(std::path::Path::to_path_buf).unwrap_or_default()
        }
    };
    let radius = radius.clone();
    let read = tokio::task::spawn_blocking(move || mend_lineage::aliases(&manifest, &project, &radius, &effects));
    let (fixed, for_a_person) =
        read.await.unwrap_or_else(|e| (Vec::new(), vec![format!("reading the project stopped: {e}")]));
    let patches = fixed
        .iter()
        .map(|alias| PlanStep {
            kind: StepKind::DbtPatch,
            description: format!(
                "alias the renamed columns back to their old names in {} ({}), so what builds on it keeps working",
                alias.model, alias.path
            ),
            sql: None,
            field: None,
            column: None,
            patch: Some(crate::dbt::diff(&alias.path, &alias.before, &alias.after)),
            cost: None,
        })
        .collect();
    let rules = if for_a_person.is_empty() {
        Vec::new()
    } else {
        vec![format!("dbt: for a person to fix, read the table directly: {}", for_a_person.join("; "))]
    };
    Ok((patches, rules))
}

/// The downstream gate: the policy `dataset` sets for a plan that breaks
/// something in its dbt project, and the rule saying so, if it does.
pub fn gate(radius: &BlastRadius, dataset: &Dataset) -> Option<(Policy, String)> {
    let breaking: Vec<&str> =
        radius.nodes.iter().filter(|n| n.impact == Impact::Breaking).map(|n| n.name.as_str()).collect();
    if breaking.is_empty() {
        return None;
    }
    let shown = breaking.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    let more = if breaking.len() > 5 { format!(" and {} more", breaking.len() - 5) } else { String::new() };
    let policy = dataset.downstream_breaking.unwrap_or(Policy::Approve);
    Some((policy, format!("downstream: breaks {shown}{more} in the dbt project => {policy} (downstream_breaking)")))
}
