//! proposer — turns a diagnosis into an ordered remediation plan and applies
//! the dataset's policy to it.
//!
//! - input topic: `mend.diagnoses`;
//! - output topics: `mend.proposals`, and `mend.decisions` when policy
//!   approves automatically;
//! - key: the dataset name;
//! - delivery: at least once; the proposal id is derived from the incident and
//!   the plan, so a re-delivered diagnosis yields the same proposal, which the
//!   applier applies at most once.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;
use mend_shared::context::Context;
use mend_shared::drift::kind;
use mend_shared::events::{Decision, Diagnosis, Envelope, Event, FieldChange, PlanStep, Proposal};
use mend_shared::mapping::{column_name, record_of, sql_type};
use mend_shared::runner::{Disposition, Handler, Inbound, Outbound, Runner, RunnerStatus, decode_event};
use mend_shared::warehouse::{Column, Dialect, quote};
use mend_shared::{HandleError, topics};

const SERVICE: &str = "proposer";
const PROPOSAL_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_6e64_7072_6f70_6f73_616c_0000_0001);

/// What policy decides for a change, most permissive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    Auto,
    Approve,
    Block,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::Block => "block",
        }
    }
}

/// What the planner needs to know about the destination.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub table: &'a str,
    pub dialect: Dialect,
    pub columns: &'a [Column],
    /// The contract's field → column mapping.
    pub mapping: &'a BTreeMap<String, String>,
}

/// A plan: its steps, the decision, and the rule behind each change.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub policy: Policy,
    pub rules: Vec<String>,
}

fn step(kind: &str, description: String) -> PlanStep {
    PlanStep { kind: kind.into(), description, sql: None, field: None, column: None, patch: None }
}

/// Plans the changes of a new writer schema (pure: no I/O).
pub fn plan(changes: &[FieldChange], writer: &Schema, target: &Target<'_>) -> Plan {
    let table = quote(target.table);
    let field_schema =
        |name: &str| record_of(writer).and_then(|r| r.fields.iter().find(|f| f.name == name)).map(|f| f.schema.clone());
    let column_of = |field: &str| target.mapping.get(field).cloned().unwrap_or_else(|| column_name(field));
    let column_info = |column: &str| target.columns.iter().find(|c| c.name == column);
    let mut steps = Vec::new();
    let mut rules = Vec::new();
    let mut policy = Policy::Auto;
    let mut decide = |decision: Policy, rule: String, rules: &mut Vec<String>| {
        policy = policy.max(decision);
        rules.push(format!("{rule} => {}", decision.name()));
    };
    for change in changes {
        let field = change.field.as_str();
        let nested = field.contains('.');
        match change.kind.as_str() {
            kind::FIELD_ADDED if nested => {
                let parent = field.split('.').next().unwrap_or(field);
                steps.push(step("mapping", format!("{field} is stored inside the JSON column of {parent}")));
                decide(Policy::Auto, format!("field_added({field}) nested in a JSON column"), &mut rules);
            }
            kind::FIELD_ADDED => {
                let column = column_name(field);
                let sql_type = field_schema(field).map_or_else(|| "TEXT".to_owned(), |s| sql_type(&s, target.dialect));
                let sql = format!("ALTER TABLE {table} ADD COLUMN {} {sql_type}", quote(&column));
                steps.push(PlanStep {
                    sql: Some(sql),
                    field: Some(field.into()),
                    column: Some(column.clone()),
                    ..step("ddl", format!("add column {column} {sql_type} for the new field {field}"))
                });
                steps.push(PlanStep {
                    field: Some(field.into()),
                    column: Some(column.clone()),
                    ..step("mapping", format!("map field {field} to column {column}"))
                });
                let optional = change.nullable == Some(true) || change.has_default == Some(true);
                let decision = if optional { Policy::Auto } else { Policy::Approve };
                let how = if optional { "nullable or with a default" } else { "required, without a default" };
                decide(decision, format!("field_added({field}, {how})"), &mut rules);
            }
            kind::FIELD_RENAMED => {
                let from = change.from.as_deref().unwrap_or_default();
                let to = change.to.as_deref().unwrap_or(field);
                let column = column_of(from);
                steps.push(PlanStep {
                    field: Some(to.into()),
                    column: Some(column.clone()),
                    ..step(
                        "mapping",
                        format!("map the renamed field {to} onto the existing column {column} (was {from}), so queries on {column} keep working"),
                    )
                });
                let confidence = change.confidence.unwrap_or(0.0);
                decide(
                    Policy::Approve,
                    format!("field_renamed({from} -> {to}, confidence {confidence:.2})"),
                    &mut rules,
                );
            }
            kind::FIELD_REMOVED => {
                let column = column_of(field);
                if column_info(&column).is_some_and(|c| !c.nullable) && target.dialect == Dialect::Postgres {
                    steps.push(PlanStep {
                        sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(&column))),
                        column: Some(column.clone()),
                        ..step("ddl", format!("allow NULL in {column}: new records no longer carry {field}"))
                    });
                } else {
                    steps.push(step("mapping", format!("keep column {column}; new records leave it NULL")));
                }
                decide(Policy::Approve, format!("field_removed({field}); the column is kept"), &mut rules);
            }
            kind::TYPE_WIDENED => {
                let column = column_of(field);
                let new_type = field_schema(field).map(|s| sql_type(&s, target.dialect));
                let current = column_info(&column).map(|c| c.sql_type.to_uppercase());
                match (target.dialect, new_type) {
                    (Dialect::Postgres, Some(new_type)) if current.as_deref() != Some(new_type.as_str()) => {
                        steps.push(PlanStep {
                            sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} TYPE {new_type}", quote(&column))),
                            field: Some(field.into()),
                            column: Some(column.clone()),
                            ..step("ddl", format!("widen column {column} to {new_type}"))
                        });
                        decide(
                            Policy::Approve,
                            format!("type_widened({field}) rewrites a PostgreSQL column"),
                            &mut rules,
                        );
                    }
                    _ => {
                        steps.push(step("mapping", format!("column {column} already holds the wider type")));
                        decide(Policy::Auto, format!("type_widened({field}) needs no DDL"), &mut rules);
                    }
                }
            }
            kind::NULLABILITY_CHANGED if change.nullable == Some(true) => {
                let column = column_of(field);
                if column_info(&column).is_some_and(|c| !c.nullable) {
                    steps.push(PlanStep {
                        sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(&column))),
                        column: Some(column.clone()),
                        ..step("ddl", format!("allow NULL in {column}"))
                    });
                }
                decide(Policy::Approve, format!("nullability_changed({field}, now nullable)"), &mut rules);
            }
            kind::TYPE_CHANGED => {
                decide(
                    Policy::Block,
                    format!(
                        "type_changed({field}: {} -> {}) the column cannot hold the new values; records stay quarantined",
                        change.old_type.as_deref().unwrap_or("?"),
                        change.new_type.as_deref().unwrap_or("?")
                    ),
                    &mut rules,
                );
            }
            other => decide(Policy::Auto, format!("{other}({field}) needs no change to the table"), &mut rules),
        }
    }
    if changes.is_empty() {
        decide(Policy::Block, "no classified change (unknown or unreadable schema)".into(), &mut rules);
    }
    steps.push(step("replay", "replay the incident's quarantined records in their original order".into()));
    Plan { steps, policy, rules }
}

pub struct Proposer {
    context: Arc<Context>,
}

impl Proposer {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context }
    }

    /// The proposal (and, when policy allows, the decision) for a diagnosis.
    pub async fn propose(&self, diagnosis: &Diagnosis) -> Result<(Proposal, Option<Decision>), HandleError> {
        let name = &diagnosis.envelope.dataset;
        let dataset = self
            .context
            .dataset(name)
            .ok_or_else(|| HandleError::Fatal(format!("diagnosis for unknown dataset {name}")))?;
        let warehouse = self.context.warehouse(dataset).await?;
        let contract = warehouse.contract(name).await?.unwrap_or_else(|| mend_shared::warehouse::Contract {
            dataset: name.clone(),
            schema_id: 0,
            mapping: BTreeMap::new(),
        });
        let columns = warehouse.columns(&dataset.table).await?;
        let writer = match diagnosis.writer_schema_id.and_then(|id| u32::try_from(id).ok()) {
            Some(id) => match self.context.codec.schema(id).await {
                Ok(schema) => schema.parsed.clone(),
                Err(mend_shared::codec::CodecError::Invalid(_)) => Schema::Null,
                Err(unavailable) => return Err(unavailable.into()),
            },
            None => Schema::Null,
        };
        let target = Target {
            table: &dataset.table,
            dialect: warehouse.dialect(),
            columns: &columns,
            mapping: &contract.mapping,
        };
        let plan = plan(&diagnosis.changes, &writer, &target);
        let plan_hash = Proposal::hash_steps(&plan.steps);
        let proposal_id = uuid::Uuid::new_v5(
            &PROPOSAL_NAMESPACE,
            format!("{}\u{0}{plan_hash}", diagnosis.envelope.incident_id).as_bytes(),
        )
        .to_string();
        let mut proposal = Proposal {
            envelope: Envelope::answering(SERVICE, &diagnosis.envelope),
            proposal_id,
            writer_schema_id: diagnosis.writer_schema_id,
            changes: diagnosis.changes.clone(),
            steps: plan.steps,
            plan_hash,
            policy: plan.policy.name().into(),
            rules: plan.rules,
        };
        proposal.seal();
        let decision = (plan.policy == Policy::Auto).then(|| {
            let reason = Some(proposal.rules.join("; "));
            Decision::on(&proposal, SERVICE, "approved", "policy".into(), "policy".into(), reason)
        });
        Ok((proposal, decision))
    }
}

impl Handler for Proposer {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out = Vec::with_capacity(batch.len());
        for record in batch {
            let diagnosis: Diagnosis = match decode_event(&self.context.codec, record).await? {
                Ok(event) => event,
                Err(bad) => {
                    out.push(bad);
                    continue;
                }
            };
            if !self.context.manages(&diagnosis.envelope.dataset) {
                out.push(Disposition::Emit(Vec::new())); // another deployment's dataset
                continue;
            }
            let (proposal, decision) = self.propose(&diagnosis).await?;
            tracing::info!(
                incident = %proposal.envelope.incident_id, proposal = %proposal.proposal_id, policy = %proposal.policy,
                "proposed"
            );
            let key = proposal.envelope.dataset.clone().into_bytes();
            let mut outputs = vec![Outbound {
                topic: Proposal::TOPIC.to_owned(),
                key: key.clone(),
                payload: self.context.codec.encode_event(&proposal).await.map_err(HandleError::from)?,
                headers: record.headers.clone(),
            }];
            if let Some(decision) = decision {
                outputs.push(Outbound {
                    topic: Decision::TOPIC.to_owned(),
                    key,
                    payload: self.context.codec.encode_event(&decision).await.map_err(HandleError::from)?,
                    headers: record.headers.clone(),
                });
            }
            out.push(Disposition::Emit(outputs));
        }
        Ok(out)
    }
}

pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Proposer>, Arc<RunnerStatus>)> {
    Ok(context.runner(
        SERVICE,
        &context.group("proposer"),
        vec![topics::DIAGNOSES.to_owned()],
        Proposer::new(context.clone()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_shared::drift::classify;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"O","fields":[{fields}]}}"#)).unwrap()
    }

    fn plan_for(old: &str, new: &str, dialect: Dialect) -> Plan {
        let (old, new) = (schema(old), schema(new));
        let (columns, mapping) = mend_shared::mapping::columns_for(&old, dialect).unwrap();
        let target = Target { table: "orders", dialect, columns: &columns, mapping: &mapping };
        plan(&classify(&old, &new), &new, &target)
    }

    const BASE: &str = r#"{"name":"id","type":"long"},{"name":"email","type":"string"}"#;

    #[test]
    fn a_nullable_addition_is_automatic_ddl() {
        let plan = plan_for(
            BASE,
            &format!(r#"{BASE},{{"name":"coupon","type":["null","string"],"default":null}}"#),
            Dialect::Postgres,
        );
        assert_eq!(plan.policy, Policy::Auto);
        assert_eq!(plan.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#));
        assert_eq!(plan.steps.last().map(|s| s.kind.as_str()), Some("replay"));
    }

    #[test]
    fn an_aliased_rename_maps_onto_the_old_column_and_needs_approval() {
        let plan = plan_for(
            BASE,
            r#"{"name":"id","type":"long"},{"name":"customer_email","type":"string","aliases":["email"]}"#,
            Dialect::Sqlite,
        );
        assert_eq!(plan.policy, Policy::Approve);
        let mapping = &plan.steps[0];
        assert_eq!((mapping.field.as_deref(), mapping.column.as_deref()), (Some("customer_email"), Some("email")));
        assert!(plan.steps.iter().all(|s| s.sql.is_none()), "a rename needs no DDL");
    }

    #[test]
    fn an_incompatible_type_change_is_blocked() {
        let plan = plan_for(BASE, r#"{"name":"id","type":"string"},{"name":"email","type":"string"}"#, Dialect::Sqlite);
        assert_eq!(plan.policy, Policy::Block);
        assert!(plan.rules[0].contains("type_changed(id"), "{:?}", plan.rules);
    }

    #[test]
    fn widening_is_mapping_only_on_sqlite_and_ddl_on_postgres() {
        let (old, new) = (r#"{"name":"n","type":"int"}"#, r#"{"name":"n","type":"long"}"#);
        assert_eq!(plan_for(old, new, Dialect::Sqlite).policy, Policy::Auto);
        let pg = plan_for(old, new, Dialect::Postgres);
        assert_eq!(pg.policy, Policy::Approve);
        assert_eq!(pg.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "n" TYPE BIGINT"#));
    }
}
