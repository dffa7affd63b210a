//! What mend would do if a schema arrived now, changing nothing: the
//! changes against the dataset's contract (or, without one, the subject's
//! latest registered version), the plan and the decision. `mend plan` prints
//! it; the MCP tool `compare_schema` returns the same JSON.

use std::collections::BTreeMap;

use apache_avro::Schema;
use mend_avro::codec::{Codec, CodecError};
use mend_avro::drift::classify;
use mend_avro::schema::columns_for;
use mend_config::Dataset;
use mend_model::api::{PlanReport, PlannedChange};
use mend_model::events::{FieldChange, PlanStep};
use mend_model::{Policy, StepKind};
use mend_store::{StoreError, Warehouse, quote};

use crate::plan::{Plan, plan_dataset};

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Registry(#[from] CodecError),
    #[error(transparent)]
    Warehouse(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// A schema compared with what the dataset's table holds now.
#[derive(Debug)]
pub struct Comparison {
    /// The schema compared against: the contract's, or None without one.
    pub contract_schema_id: Option<u32>,
    pub changes: Vec<FieldChange>,
    pub plan: Plan,
    /// Whether Avro's resolution lets the contract's schema read records of
    /// the new one (None without a contract).
    pub contract_can_read: Option<bool>,
}

impl Comparison {
    /// `mend plan`'s exit code: the decision's ([`exit_code`]), but 4 when
    /// mend would heal it on its own while readers of the contract's schema
    /// cannot read the new one (a producer's CI gate hears of it; 1 stays
    /// an error).
    pub fn exit_code(&self) -> u8 {
        match (self.plan.policy, self.contract_can_read) {
            (Policy::Auto, Some(false)) => 4,
            (policy, _) => exit_code(policy),
        }
    }
}

/// The exit code of a decision (`mend plan`): 0 applied on its own, 2 needs
/// approval, 3 blocked (see also [`Comparison::exit_code`]).
pub fn exit_code(policy: Policy) -> u8 {
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
) -> Result<Option<(u32, Schema, BTreeMap<String, String>)>, CompareError> {
    if let Some(contract) = warehouse.contract(&dataset.name).await? {
        let schema = codec.schema(contract.schema_id).await?;
        return Ok(Some((contract.schema_id, schema.parsed.clone(), contract.mapping)));
    }
    let latest = match codec.subject_version(&dataset.subject(), None).await {
        Ok(latest) => latest,
        // A subject nothing was registered under: no table yet either.
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let schema = Schema::parse_str(&latest.schema).map_err(|e| {
        CompareError::Invalid(format!("the latest version of {} does not parse: {e}", dataset.subject()))
    })?;
    let (_, mapping) = columns_for(&schema, warehouse.dialect(), dataset.nested).map_err(CompareError::Invalid)?;
    Ok(Some((latest.id, schema, mapping)))
}

/// Compares `new` with what `dataset`'s table holds now.
pub async fn compare(
    dataset: &Dataset,
    warehouse: &Warehouse,
    codec: &Codec,
    new: &Schema,
) -> Result<Comparison, CompareError> {
    Ok(match baseline(dataset, warehouse, codec).await? {
        Some((id, old, mapping)) => {
            let changes = classify(&old, new);
            let plan = plan_dataset(dataset, warehouse, &mapping, &changes, new).await?;
            let readable = apache_avro::schema_compatibility::SchemaCompatibility::can_read(new, &old).is_ok();
            Comparison { contract_schema_id: Some(id), changes, plan, contract_can_read: Some(readable) }
        }
        None => {
            let plan = first_table(dataset, warehouse, new)?;
            Comparison { contract_schema_id: None, changes: Vec::new(), plan, contract_can_read: None }
        }
    })
}

/// A dataset without a table yet: the first record creates it.
fn first_table(dataset: &Dataset, warehouse: &Warehouse, schema: &Schema) -> Result<Plan, CompareError> {
    let (columns, _) = columns_for(schema, warehouse.dialect(), dataset.nested).map_err(CompareError::Invalid)?;
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
            cost: None,
        }],
        policy: Policy::Auto,
        rules: vec![rule],
        decisions: Vec::new(),
        blast_radius: None,
        widenings: Vec::new(),
    })
}

/// The comparison as `mend plan --json` prints it and `compare_schema` answers.
pub fn report(dataset: &Dataset, comparison: &Comparison) -> PlanReport {
    let Comparison { contract_schema_id, changes, plan, contract_can_read } = comparison;
    PlanReport {
        dataset: dataset.name.clone(),
        table: dataset.table.clone(),
        contract_schema_id: *contract_schema_id,
        changes: changes
            .iter()
            .zip(&plan.decisions)
            .map(|(change, (decision, rule))| PlannedChange {
                change: change.clone(),
                decision: *decision,
                rule: rule.clone(),
            })
            .collect(),
        steps: plan.steps.clone(),
        rules: plan.rules.clone(),
        decision: plan.policy,
        contract_can_read: *contract_can_read,
        exit_code: comparison.exit_code(),
        blast_radius: plan.blast_radius.clone(),
    }
}
