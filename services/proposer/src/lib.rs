//! proposer — turns a diagnosis into an ordered remediation plan and applies
//! the dataset's policy to it.
//!
//! - input topic: `mend.diagnoses`;
//! - output topics: `mend.proposals`, and `mend.decisions` when policy
//!   approves automatically;
//! - key: the dataset name;
//! - delivery: at least once; the proposal id is derived from the incident,
//!   so a re-delivered diagnosis yields the same proposal, which the applier
//!   applies at most once; a diagnosis of an incident already healed yields
//!   nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;
use mend_shared::config::{Dataset, Nested};
use mend_shared::context::Context;
use mend_shared::drift::kind;
use mend_shared::events::{Decision, Diagnosis, Envelope, Event, FieldChange, PlanStep, Proposal};
use mend_shared::mapping::{column_name, columns_for, record_of, sql_type};
use mend_shared::runner::{Disposition, Handler, Inbound, Outbound, Runner, RunnerStatus, decode_event};
use mend_shared::warehouse::{Column, Dialect, Warehouse, quote};
use mend_shared::{HandleError, topics};

const SERVICE: &str = "proposer";
/// Namespace of proposal ids (UUIDv5 of the incident id).
const PROPOSAL_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d65_6e64_7072_6f70_6f73_616c_0000_0001);

pub mod dbt;
pub mod github;

pub use mend_shared::config::Policy;

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
    pub policy: &'a BTreeMap<String, Policy>,
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
}

fn step(kind: &str, description: String) -> PlanStep {
    PlanStep { kind: kind.into(), description, sql: None, field: None, column: None, patch: None }
}

/// Where a (possibly nested) field path lives in the table: its own column
/// (top level, or flattened to `parent__child`), or inside the JSON column of
/// its top-level parent (nested records in `json` mode, anything in arrays
/// and maps).
enum Place {
    Column(String),
    InJson(String),
}

fn place(path: &str, nested: Nested, mapping: &BTreeMap<String, String>) -> Place {
    let top = path.split(['.', '[', '{']).next().unwrap_or(path);
    let column_of = |field: &str| mapping.get(field).cloned().unwrap_or_else(|| column_name(field));
    if top == path {
        Place::Column(column_of(path))
    } else if nested == Nested::Flatten && !path.contains(['[', '{']) {
        Place::Column(mapping.get(path).cloned().unwrap_or_else(|| path.replace('.', "__")))
    } else {
        Place::InJson(column_of(top))
    }
}

/// The schema of a field path (`a.b`, not through arrays) in a record schema.
fn schema_at(schema: &Schema, path: &str) -> Option<Schema> {
    let mut current = schema.clone();
    for part in path.split('.') {
        let (inner, _) = mend_shared::mapping::strip_null(&current);
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
    for change in changes {
        let field = change.field.as_str();
        let place = place(field, target.nested, target.mapping);
        // Choices for a person, listed after the change's rule.
        let mut options = Vec::new();
        // The default decision and its reason, per change kind.
        let (default, why) = match (change.kind.as_str(), &place) {
            (kind::FIELD_ADDED, Place::InJson(column)) => {
                steps.push(step("mapping", format!("{field} is stored inside the JSON column {column}")));
                (Policy::Auto, format!("nested in the JSON column {column}"))
            }
            (kind::FIELD_ADDED, Place::Column(column)) => {
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
                            ..step("ddl", format!("add column {name} {sql_type} for the new field {path}"))
                        });
                    }
                    steps.push(PlanStep {
                        field: Some(path.clone()),
                        column: Some(name.clone()),
                        ..step("mapping", format!("map field {path} to column {name}"))
                    });
                }
                dbt_edits.push(dbt::ColumnEdit::Added {
                    column: column.clone(),
                    description: change.evidence.get("doc").cloned(),
                });
                if change.nullable == Some(true) || change.has_default == Some(true) {
                    (Policy::Auto, "nullable or with a default".to_owned())
                } else {
                    (Policy::Approve, "required and without a default: earlier records cannot have it".to_owned())
                }
            }
            (kind::FIELD_RENAMED, place) => {
                let from = change.from.as_deref().unwrap_or_default();
                let to = change.to.as_deref().unwrap_or(field);
                match (place, self::place(from, target.nested, target.mapping)) {
                    (Place::Column(_), Place::Column(column)) => {
                        steps.push(PlanStep {
                            field: Some(to.into()),
                            column: Some(column.clone()),
                            ..step(
                                "mapping",
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
                            "mapping",
                            format!("{to} (was {from}) is stored inside the JSON column {column} under its new name"),
                        ));
                    }
                }
                let confidence = change.confidence.unwrap_or(0.0);
                let proof = change.evidence.get("method").cloned().unwrap_or_default();
                (Policy::Approve, format!("{from} -> {to}, confidence {confidence:.2}, {proof}"))
            }
            (kind::FIELD_REMOVED, Place::InJson(column)) => {
                steps.push(step("mapping", format!("{field} no longer appears inside the JSON column {column}")));
                (Policy::Approve, "queries on the JSON path will find nothing in new records".to_owned())
            }
            (kind::FIELD_REMOVED, Place::Column(column)) => {
                if target.key.iter().any(|k| k == column) {
                    (Policy::Block, format!("{column} is a key column: records without it cannot be upserted"))
                } else {
                    if column_info(column).is_some_and(|c| !c.nullable) {
                        steps.push(PlanStep {
                            sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(column))),
                            column: Some(column.clone()),
                            ..step("ddl", format!("allow NULL in {column}: new records no longer carry {field}"))
                        });
                    } else {
                        steps.push(PlanStep {
                            column: Some(column.clone()),
                            ..step("mapping", format!("keep column {column}; new records leave it NULL"))
                        });
                    }
                    (Policy::Approve, "the column is kept, never dropped".to_owned())
                }
            }
            (kind::TYPE_WIDENED, Place::InJson(column)) => {
                steps.push(step("mapping", format!("the JSON column {column} holds the wider values of {field}")));
                (Policy::Auto, "inside a JSON column".to_owned())
            }
            (kind::TYPE_WIDENED, Place::Column(column)) => {
                let new_type = schema_at(writer, field).map(|s| sql_type(&s, target.dialect));
                let current = column_info(column).map(|c| c.sql_type.to_uppercase());
                match (target.dialect, new_type) {
                    (Dialect::Postgres, Some(new_type))
                        if current.as_deref().is_some_and(|c| !mend_shared::guard::same_type(c, &new_type)) =>
                    {
                        let using = match (current.as_deref(), new_type.as_str()) {
                            (Some("TEXT"), "BYTEA") => format!(" USING convert_to({}, 'UTF8')", quote(column)),
                            (Some("BYTEA"), "TEXT") => format!(" USING convert_from({}, 'UTF8')", quote(column)),
                            _ => String::new(),
                        };
                        steps.push(PlanStep {
                            sql: Some(format!(
                                "ALTER TABLE {table} ALTER COLUMN {} TYPE {new_type}{using}",
                                quote(column)
                            )),
                            field: Some(field.into()),
                            column: Some(column.clone()),
                            ..step("ddl", format!("widen column {column} to {new_type}"))
                        });
                        (Policy::Approve, "rewrites a PostgreSQL column".to_owned())
                    }
                    _ => {
                        steps.push(PlanStep {
                            field: Some(field.into()),
                            column: Some(column.clone()),
                            ..step("mapping", format!("column {column} already holds the wider type"))
                        });
                        (Policy::Auto, "needs no DDL".to_owned())
                    }
                }
            }
            (kind::TYPE_CHANGED, place) => {
                let (old, new) = (change.old_type.as_deref().unwrap_or("?"), change.new_type.as_deref().unwrap_or("?"));
                if let Place::Column(column) = place {
                    let sql_type =
                        schema_at(writer, field).map_or_else(|| "TEXT".to_owned(), |s| sql_type(&s, target.dialect));
                    options.push(format!(
                        "option for a person: add a column {column}_{} {sql_type} and map {field} to it (the old column keeps its values)",
                        sql_type.split(['(', ' ']).next().unwrap_or("new").to_lowercase()
                    ));
                    // A cast is an option only when the sampled values all parse.
                    let count = |key: &str| change.evidence.get(key).and_then(|v| v.parse::<usize>().ok());
                    let check = change.evidence.get("cast_check").cloned().unwrap_or_default();
                    match (count("cast_sampled"), count("cast_parsing")) {
                        (Some(sampled), Some(parsing)) if sampled > 0 && parsing == sampled => options.push(format!(
                            "option for a person: keep column {column} and cast the new values to its type ({check})"
                        )),
                        (Some(_), Some(_)) => options.push(format!("no cast: {check}")),
                        _ => options.push(format!(
                            "option for a person: cast column {column} to {sql_type}, only if every quarantined value parses as {new}"
                        )),
                    }
                }
                (
                    Policy::Block,
                    format!("{old} -> {new}: the column cannot hold the new values; records stay quarantined"),
                )
            }
            (kind::NULLABILITY_CHANGED, Place::Column(column)) if change.nullable == Some(true) => {
                if column_info(column).is_some_and(|c| !c.nullable) {
                    steps.push(PlanStep {
                        sql: Some(format!("ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL", quote(column))),
                        column: Some(column.clone()),
                        ..step("ddl", format!("allow NULL in {column}"))
                    });
                    (Policy::Approve, "now nullable: relaxes NOT NULL".to_owned())
                } else {
                    (Policy::Auto, "now nullable; the column already allows NULL".to_owned())
                }
            }
            (kind::ENUM_SYMBOLS_ADDED, Place::Column(column)) => {
                if let Some(all) = change.evidence.get("all_symbols") {
                    dbt_edits.push(dbt::ColumnEdit::AcceptedValues {
                        column: column.clone(),
                        values: all.split(',').map(str::to_owned).collect(),
                    });
                }
                (Policy::Auto, "the TEXT column holds any symbol".to_owned())
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
                ..step("dbt_patch", format!("update the dbt model {} in {}", dbt.model, dbt.path))
            }),
            Ok(None) => {}
            Err(reason) => rules.push(format!("dbt: {reason}; no patch")),
        }
    }
    if !changes.is_empty() || matches!(writer, Schema::Null) {
        steps.push(step("replay", "replay the incident's quarantined records in their original order".into()));
    }
    Plan { steps, policy, rules, decisions }
}

/// Plans `changes` for `dataset` as things stand: the table's columns from
/// the catalog, the dataset's policy, and its dbt file when it has one.
pub async fn plan_dataset(
    dataset: &Dataset,
    warehouse: &Warehouse,
    mapping: &BTreeMap<String, String>,
    changes: &[FieldChange],
    writer: &Schema,
) -> Result<Plan, mend_shared::warehouse::WarehouseError> {
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
    Ok(plan)
}

pub struct Proposer {
    context: Arc<Context>,
    http: reqwest::Client,
}

impl Proposer {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context, http: reqwest::Client::new() }
    }

    /// Tells people a proposal waits for them (Slack). A notification that
    /// fails is logged, never retried at the pipeline's expense: the
    /// proposal is on `mend.proposals` and in the API either way.
    /// Opens the pull request of a plan with a dbt patch, when the dataset
    /// names a GitHub repository and mend has a token. Failures are logged
    /// (the API and Slack still offer the decision).
    async fn pull_request(&self, proposal: &Proposal) {
        let integrations = &self.context.integrations;
        let (Some(dataset), Some(token)) =
            (self.context.dataset(&proposal.envelope.dataset), &integrations.github_token)
        else {
            return;
        };
        let (Some(repo), Some(dbt)) = (&dataset.github, &dataset.dbt) else { return };
        let Some(patch) = proposal.steps.iter().find(|s| s.kind == "dbt_patch").and_then(|s| s.patch.as_deref()) else {
            return;
        };
        let schema = dbt.schema.to_string_lossy();
        let path = if repo.directory.is_empty() {
            schema.into_owned()
        } else {
            format!("{}/{schema}", repo.directory.trim_end_matches('/'))
        };
        let client = github::Client { http: &self.http, api: &integrations.github_api_url, token, repo };
        match client.open(proposal, &path, patch).await {
            Ok(url) => tracing::info!(proposal = %proposal.proposal_id, %url, "pull request opened"),
            Err(error) => tracing::warn!(proposal = %proposal.proposal_id, %error, "pull request failed"),
        }
    }

    async fn notify(&self, proposal: &Proposal) {
        if let Some(url) = &self.context.integrations.slack_webhook_url {
            let message = mend_shared::slack::proposal_message(proposal, false);
            match mend_shared::slack::post(&self.http, url, &message).await {
                Ok(()) => tracing::info!(proposal = %proposal.proposal_id, "approval requested on Slack"),
                Err(error) => tracing::warn!(proposal = %proposal.proposal_id, %error, "Slack notification failed"),
            }
        }
    }

    /// The proposal (and, when policy allows, the decision) for a diagnosis;
    /// None when the incident is healed already (the contract has moved to
    /// its writer schema: a diagnosis re-delivered after the apply).
    pub async fn propose(&self, diagnosis: &Diagnosis) -> Result<Option<(Proposal, Option<Decision>)>, HandleError> {
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
        if diagnosis.writer_schema_id.is_some_and(|id| i64::from(id) == i64::from(contract.schema_id)) {
            tracing::info!(incident = %diagnosis.envelope.incident_id, "already healed: the contract is at the writer schema");
            return Ok(None);
        }
        let writer = match diagnosis.writer_schema_id.and_then(|id| u32::try_from(id).ok()) {
            Some(id) => match self.context.codec.schema(id).await {
                Ok(schema) => schema.parsed.clone(),
                Err(mend_shared::codec::CodecError::Invalid(_)) => Schema::Null,
                Err(unavailable) => return Err(unavailable.into()),
            },
            None => Schema::Null,
        };
        let plan = plan_dataset(dataset, &warehouse, &contract.mapping, &diagnosis.changes, &writer).await?;
        let plan_hash = Proposal::hash_steps(&plan.steps);
        // One proposal per incident: a diagnosis re-delivered after a crash
        // (even when the table has changed since, so the plan differs) names
        // the same proposal, which the applier applies at most once.
        let proposal_id =
            uuid::Uuid::new_v5(&PROPOSAL_NAMESPACE, diagnosis.envelope.incident_id.0.as_bytes()).to_string();
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
        Ok(Some((proposal, decision)))
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
            let Some((proposal, decision)) = self.propose(&diagnosis).await? else {
                out.push(Disposition::Emit(Vec::new()));
                continue;
            };
            tracing::info!(
                incident = %proposal.envelope.incident_id, proposal = %proposal.proposal_id, policy = %proposal.policy,
                "proposed"
            );
            if proposal.policy == Policy::Approve.name() {
                self.notify(&proposal).await;
            }
            if proposal.policy != Policy::Block.name() {
                self.pull_request(&proposal).await;
            }
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
        plan_with(old, new, dialect, &BTreeMap::new(), None)
    }

    fn plan_with(
        old: &str,
        new: &str,
        dialect: Dialect,
        policy: &BTreeMap<String, Policy>,
        dbt: Option<DbtFile<'_>>,
    ) -> Plan {
        let (old, new) = (schema(old), schema(new));
        let (columns, mapping) = mend_shared::mapping::columns_for(&old, dialect, Nested::Json).unwrap();
        let key = ["id".to_owned()];
        let target = Target {
            table: "orders",
            dialect,
            columns: &columns,
            mapping: &mapping,
            key: &key,
            policy,
            nested: Nested::Json,
            dbt,
        };
        plan(&classify(&old, &new), &new, &target)
    }

    #[test]
    fn the_dataset_policy_overrides_the_default_and_says_so() {
        let new = r#"{"name":"id","type":"long"},{"name":"customer_email","type":"string","aliases":["email"]}"#;
        let policy = BTreeMap::from([("field_renamed".to_owned(), Policy::Auto)]);
        let plan = plan_with(BASE, new, Dialect::Sqlite, &policy, None);
        assert_eq!(plan.policy, Policy::Auto);
        assert!(plan.rules[0].ends_with("=> auto (dataset policy)"), "{:?}", plan.rules);
        assert!(plan_for(BASE, new, Dialect::Sqlite).rules[0].ends_with("=> approve (default)"));
    }

    #[test]
    fn removing_a_key_field_is_blocked_and_other_removals_keep_the_column() {
        let plan = plan_for(BASE, r#"{"name":"email","type":"string"}"#, Dialect::Postgres);
        assert_eq!(plan.policy, Policy::Block);
        let plan = plan_for(BASE, r#"{"name":"id","type":"long"}"#, Dialect::Postgres);
        assert_eq!(plan.policy, Policy::Approve);
        // email was NOT NULL on PostgreSQL: relaxed, never dropped.
        assert_eq!(plan.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ALTER COLUMN "email" DROP NOT NULL"#));
        assert!(plan.steps.iter().filter_map(|s| s.sql.as_deref()).all(|sql| !sql.contains("DROP COLUMN")));
    }

    #[test]
    fn a_type_change_offers_options_to_a_person() {
        let plan = plan_for(BASE, r#"{"name":"id","type":"long"},{"name":"email","type":"long"}"#, Dialect::Postgres);
        assert_eq!(plan.policy, Policy::Block);
        assert!(plan.rules.iter().any(|r| r.contains("add a column email_bigint BIGINT")), "{:?}", plan.rules);
        assert!(plan.rules.iter().any(|r| r.contains("cast column email to BIGINT")), "{:?}", plan.rules);
        assert!(plan.steps.iter().all(|s| s.sql.is_none()));
    }

    #[test]
    fn nested_additions_are_columns_when_flattened_and_json_otherwise() {
        let ship = |extra: &str| {
            format!(
                r#"{{"name":"id","type":"long"}},{{"name":"ship","type":{{"type":"record","name":"S","fields":[{{"name":"city","type":"string"}}{extra}]}}}}"#
            )
        };
        let (old, new) =
            (schema(&ship("")), schema(&ship(r#",{"name":"zip","type":["null","string"],"default":null}"#)));
        let (columns, mapping) = columns_for(&old, Dialect::Postgres, Nested::Flatten).unwrap();
        let policy = BTreeMap::new();
        let key = ["id".to_owned()];
        let target = |nested| Target {
            table: "orders",
            dialect: Dialect::Postgres,
            columns: &columns,
            mapping: &mapping,
            key: &key,
            policy: &policy,
            nested,
            dbt: None,
        };
        let flat = plan(&classify(&old, &new), &new, &target(Nested::Flatten));
        assert_eq!(flat.policy, Policy::Auto);
        assert_eq!(flat.steps[0].sql.as_deref(), Some(r#"ALTER TABLE "orders" ADD COLUMN "ship__zip" TEXT"#));
        assert_eq!(
            (flat.steps[1].field.as_deref(), flat.steps[1].column.as_deref()),
            (Some("ship.zip"), Some("ship__zip"))
        );
        let json = plan(&classify(&old, &new), &new, &target(Nested::Json));
        assert!(json.steps.iter().all(|s| s.sql.is_none()), "stored inside the JSON column");
        // A whole new record, flattened: one column per field.
        let bill = format!(
            r#"{},{{"name":"bill","type":["null",{{"type":"record","name":"B","fields":[{{"name":"city","type":"string"}},{{"name":"zip","type":"string"}}]}}],"default":null}}"#,
            ship("")
        );
        let with_bill = plan(&classify(&old, &schema(&bill)), &schema(&bill), &target(Nested::Flatten));
        let sql: Vec<&str> = with_bill.steps.iter().filter_map(|s| s.sql.as_deref()).collect();
        assert_eq!(
            sql,
            [
                r#"ALTER TABLE "orders" ADD COLUMN "bill__city" TEXT"#,
                r#"ALTER TABLE "orders" ADD COLUMN "bill__zip" TEXT"#
            ]
        );
    }

    #[test]
    fn a_dbt_file_gets_a_patch_step() {
        let text = "version: 2\nmodels:\n  - name: orders\n    columns:\n      - name: id\n";
        let dbt = DbtFile { path: "models/schema.yml", model: "orders", text };
        let new = format!(r#"{BASE},{{"name":"coupon","type":["null","string"],"default":null,"doc":"promo"}}"#);
        let plan = plan_with(BASE, &new, Dialect::Sqlite, &BTreeMap::new(), Some(dbt));
        let patch = plan.steps.iter().find(|s| s.kind == "dbt_patch").and_then(|s| s.patch.clone()).unwrap();
        assert!(patch.contains("+      - name: coupon\n+        description: \"promo\"\n"), "{patch}");
        assert_eq!(plan.steps.last().map(|s| s.kind.as_str()), Some("replay"));
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
