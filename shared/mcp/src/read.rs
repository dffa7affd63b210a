//! The read tools: what the table looks like, what the latest records say,
//! what the registry holds, what a schema would change. Each takes the
//! process's [`Context`] (the same clients the diagnoser uses) and returns a
//! typed answer, or a sentence saying what to do instead.

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::Schema;
use mend_avro::codec::{CodecError, schema_id};
use mend_avro::drift::classify;
use mend_config::Dataset;
use mend_model::QuarantineKind;
use mend_model::api::PlanReport;
use mend_model::events::FieldChange;
use mend_runtime::{Context, kafka};
use rdkafka::message::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ToolFailure;

/// The dataset named `name`, or what the known ones are.
pub fn dataset<'c>(context: &'c Context, name: &str) -> Result<&'c Dataset, ToolFailure> {
    context.dataset(name).ok_or_else(|| {
        let known: Vec<&str> = context.config.datasets.iter().map(|d| d.name.as_str()).collect();
        format!("no dataset {name:?}; the datasets are: {}", known.join(", "))
    })
}

fn unreachable(what: &str, error: impl std::fmt::Display) -> ToolFailure {
    format!("{what} is unreachable ({error}); try again once it answers")
}

/// A column of a destination table.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ColumnInfo {
    pub name: String,
    /// SQL type in the warehouse's dialect.
    pub sql_type: String,
    pub nullable: bool,
}

/// A dataset's contract: the registry schema its table is known to match.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ContractInfo {
    pub schema_id: i64,
    pub subject: String,
    /// The schema's version under the subject, when it is registered there.
    pub version: Option<i64>,
    /// Contract field (dotted path) → column.
    pub mapping: BTreeMap<String, String>,
}

/// `describe_table`: a dataset's destination table as the warehouse has it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TableDescription {
    pub dataset: String,
    pub topic: String,
    pub table: String,
    /// `postgres` or `sqlite`.
    pub dialect: String,
    pub key: Vec<String>,
    /// From the database catalog, in table order (mend's position columns left out).
    pub columns: Vec<ColumnInfo>,
    /// None when the table does not exist yet (no record loaded).
    pub row_count: Option<i64>,
    /// None before the first record established it.
    pub contract: Option<ContractInfo>,
}

pub async fn describe_table(context: &Context, name: &str) -> Result<TableDescription, ToolFailure> {
    let dataset = dataset(context, name)?;
    let warehouse = context.warehouse(dataset).await.map_err(|e| unreachable("the warehouse", e))?;
    let columns = warehouse.columns(&dataset.table).await.map_err(|e| unreachable("the warehouse", e))?;
    let row_count = if columns.is_empty() {
        None
    } else {
        Some(warehouse.count(&dataset.table).await.map_err(|e| unreachable("the warehouse", e))?)
    };
    let contract = match warehouse.contract(&dataset.name).await.map_err(|e| unreachable("the warehouse", e))? {
        Some(contract) => {
            let subject = dataset.subject();
            let version = version_of(context, &subject, contract.schema_id).await?;
            Some(ContractInfo {
                schema_id: i64::from(contract.schema_id),
                subject,
                version: version.map(i64::from),
                mapping: contract.mapping,
            })
        }
        None => None,
    };
    Ok(TableDescription {
        dataset: dataset.name.clone(),
        topic: dataset.topic.clone(),
        table: dataset.table.clone(),
        dialect: warehouse.dialect().name().to_owned(),
        key: dataset.key.clone(),
        columns: columns
            .into_iter()
            .map(|c| ColumnInfo { name: c.name, sql_type: c.sql_type, nullable: c.nullable })
            .collect(),
        row_count,
        contract,
    })
}

/// The version of schema `id` under `subject` (newest first: a contract is
/// usually recent).
async fn version_of(context: &Context, subject: &str, id: u32) -> Result<Option<u32>, ToolFailure> {
    let versions = match context.codec.versions(subject).await {
        Ok(versions) => versions,
        Err(error) if error.is_not_found() => return Ok(None),
        Err(error) => return Err(unreachable("the schema registry", error)),
    };
    for version in versions.into_iter().rev() {
        let registered = context
            .codec
            .subject_version(subject, Some(version))
            .await
            .map_err(|e| unreachable("the schema registry", e))?;
        if registered.id == id {
            return Ok(Some(version));
        }
    }
    Ok(None)
}

/// One record of a source topic, decoded with its writer schema.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SampleRecord {
    pub partition: i32,
    pub offset: i64,
    /// None when the value is not in the Confluent wire format.
    pub writer_schema_id: Option<i64>,
    /// The value as JSON; None when it could not be decoded (see `error`).
    pub value: Option<Value>,
    pub error: Option<String>,
}

/// `sample_records`: the latest records of a dataset's source topic.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Samples {
    pub dataset: String,
    pub topic: String,
    /// Oldest first, per partition.
    pub records: Vec<SampleRecord>,
}

/// Records `sample_records` returns unless asked otherwise, and at most.
pub const SAMPLE_DEFAULT: usize = 50;
pub const SAMPLE_MAX: usize = 200;

pub async fn sample_records(
    context: &Context,
    name: &str,
    limit: Option<i64>,
    partition: Option<i32>,
    before_offset: Option<i64>,
) -> Result<Samples, ToolFailure> {
    let dataset = dataset(context, name)?;
    let limit = match usize::try_from(limit.unwrap_or(SAMPLE_DEFAULT as i64)) {
        Ok(limit) if (1..=SAMPLE_MAX).contains(&limit) => limit,
        _ => return Err(format!("limit must be between 1 and {SAMPLE_MAX}")),
    };
    let brokers = &context.connections.brokers;
    let ends = kafka::watermarks(brokers, &dataset.topic).await.map_err(|e| unreachable("the broker", e))?;
    if let Some(wanted) = partition
        && !ends.iter().any(|(p, _, _)| *p == wanted)
    {
        return Err(format!("topic {} has no partition {wanted} (it has {})", dataset.topic, ends.len()));
    }
    let mut records = Vec::new();
    for (number, low, high) in ends.into_iter().filter(|(p, _, _)| partition.is_none_or(|wanted| *p == wanted)) {
        let end = before_offset.map_or(high, |before| before.min(high));
        let from = end.saturating_sub(i64::try_from(limit).unwrap_or(i64::MAX)).max(low);
        let messages = kafka::read_range(brokers, &dataset.topic, number, from, limit, Duration::from_secs(10))
            .await
            .map_err(|e| unreachable("the broker", e))?;
        for message in messages.into_iter().filter(|m| m.offset() < end) {
            records.push(decode(context, number, message.offset(), message.payload()).await?);
        }
    }
    // Across partitions, keep the latest `limit` by offset within each.
    if records.len() > limit {
        records.sort_by_key(|r| std::cmp::Reverse(r.offset));
        records.truncate(limit);
        records.sort_by_key(|r| (r.partition, r.offset));
    }
    Ok(Samples { dataset: dataset.name.clone(), topic: dataset.topic.clone(), records })
}

/// One record decoded to JSON with its writer schema, or why it cannot be.
pub async fn decode(
    context: &Context,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) -> Result<SampleRecord, ToolFailure> {
    let writer = payload.and_then(schema_id);
    let (value, error) = match payload {
        None => (None, Some("a record without a value (tombstone)".to_owned())),
        Some(_) if writer.is_none() => (None, Some("not in the Confluent wire format".to_owned())),
        Some(bytes) => match context.codec.decode_record(bytes).await {
            Ok(value) => match Value::try_from(value) {
                Ok(json) => (Some(json), None),
                Err(error) => (None, Some(format!("not representable as JSON: {error}"))),
            },
            Err(CodecError::Invalid(reason)) => (None, Some(reason)),
            Err(unavailable) => return Err(unreachable("the schema registry", unavailable)),
        },
    };
    Ok(SampleRecord { partition, offset, writer_schema_id: writer.map(i64::from), value, error })
}

/// One registered version and what changed from the version before.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    pub version: i64,
    pub id: i64,
    /// Field-level changes from the previous version (empty for the first),
    /// each with `kind`, `field` and what evidence the schemas give.
    pub changes: Vec<FieldChange>,
}

/// `registry_history`: every version of a subject.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct History {
    pub subject: String,
    pub versions: Vec<VersionInfo>,
}

pub async fn registry_history(
    context: &Context,
    dataset_name: Option<&str>,
    subject: Option<&str>,
) -> Result<History, ToolFailure> {
    let subject = match (dataset_name, subject) {
        (_, Some(subject)) => subject.to_owned(),
        (Some(name), None) => dataset(context, name)?.subject(),
        (None, None) => return Err("name a `dataset` or a `subject`".into()),
    };
    let numbers = match context.codec.versions(&subject).await {
        Ok(numbers) => numbers,
        Err(error) if error.is_not_found() => return Err(format!("nothing is registered under subject {subject}")),
        Err(error) => return Err(unreachable("the schema registry", error)),
    };
    let mut versions = Vec::new();
    let mut previous: Option<Schema> = None;
    for number in numbers {
        let registered = context
            .codec
            .subject_version(&subject, Some(number))
            .await
            .map_err(|e| unreachable("the schema registry", e))?;
        let parsed = Schema::parse_str(&registered.schema).ok();
        let changes = match (&previous, &parsed) {
            (Some(old), Some(new)) => classify(old, new),
            _ => Vec::new(),
        };
        versions.push(VersionInfo { version: i64::from(number), id: i64::from(registered.id), changes });
        if parsed.is_some() {
            previous = parsed;
        }
    }
    Ok(History { subject, versions })
}

pub async fn compare_schema(context: &Context, name: &str, schema: &str) -> Result<PlanReport, ToolFailure> {
    let dataset = dataset(context, name)?;
    let new = Schema::parse_str(schema).map_err(|e| format!("`schema` is not a valid Avro schema: {e}"))?;
    let warehouse = context.warehouse(dataset).await.map_err(|e| unreachable("the warehouse", e))?;
    let comparison = mend_planner::compare::compare(dataset, &warehouse, &context.codec, &new)
        .await
        .map_err(|e| format!("cannot compare: {e}"))?;
    Ok(mend_planner::compare::report(dataset, &comparison))
}

/// A quarantined record, decoded where possible, with why it cannot load.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct QuarantinedRecord {
    pub partition: i32,
    pub offset: i64,
    pub writer_schema_id: Option<i64>,
    /// The value as JSON; None when it could not be decoded.
    pub value: Option<Value>,
    /// Why it cannot load under the contract in force (None: it would load
    /// now, and the next replay loads it).
    pub reason_kind: Option<QuarantineKind>,
    pub reason: String,
}

/// `quarantined_records`: what the loader could not load.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Quarantine {
    pub dataset: String,
    /// Per writer schema, how many records of this dataset were ever
    /// quarantined (those a replay has loaded since included).
    pub counts: BTreeMap<String, i64>,
    /// The first records still quarantined, in source order (at most `limit`).
    pub records: Vec<QuarantinedRecord>,
}

/// The quarantined records of `name` (of writer schema `writer` only, when
/// given), at most `limit`, each judged again under the contract in force.
pub async fn quarantined_records(
    context: &Context,
    name: &str,
    writer: Option<u32>,
    limit: Option<i64>,
) -> Result<Quarantine, ToolFailure> {
    let dataset = dataset(context, name)?;
    let limit = match limit.unwrap_or(SAMPLE_DEFAULT as i64) {
        limit @ 1..=200 => limit,
        _ => return Err(format!("limit must be between 1 and {SAMPLE_MAX}")),
    };
    let warehouse = context.warehouse(dataset).await.map_err(|e| unreachable("the warehouse", e))?;
    let counts = warehouse.quarantine_counts(&dataset.name).await.map_err(|e| unreachable("the warehouse", e))?;
    let mut writers: Vec<u32> = counts.keys().copied().filter(|w| writer.is_none_or(|only| *w == only)).collect();
    writers.sort_unstable();
    let loader = match warehouse.contract(&dataset.name).await.map_err(|e| unreachable("the warehouse", e))? {
        Some(contract) => Some(
            context
                .loaders
                .get(&context.codec, dataset, contract)
                .await
                .map_err(|e| unreachable("the schema registry", e))?,
        ),
        None => None,
    };
    let mut records = Vec::new();
    for writer in writers {
        let left = limit - i64::try_from(records.len()).unwrap_or(limit);
        if left <= 0 {
            break;
        }
        let kept = warehouse
            .quarantined_sample(&dataset.name, writer, left)
            .await
            .map_err(|e| unreachable("the warehouse", e))?;
        for (partition, offset, payload) in kept {
            let decoded = decode(context, partition, offset, payload.as_deref()).await?;
            let verdict = match (&loader, payload.as_deref()) {
                (Some(loader), Some(bytes)) => {
                    loader.row(&context.codec, bytes).await.map_err(|e| unreachable("the schema registry", e))?
                }
                _ => Err(mend_avro::Rejection::new(QuarantineKind::SchemaMismatch, "no contract or no bytes kept")),
            };
            let (reason_kind, reason) = match verdict {
                Ok(_) => (None, "loads under the contract in force: the next replay loads it".to_owned()),
                Err(rejection) => (Some(rejection.kind), rejection.reason),
            };
            records.push(QuarantinedRecord {
                partition,
                offset,
                writer_schema_id: decoded.writer_schema_id,
                value: decoded.value,
                reason_kind,
                reason,
            });
        }
    }
    Ok(Quarantine {
        dataset: dataset.name.clone(),
        counts: counts.into_iter().map(|(writer, count)| (writer.to_string(), count)).collect(),
        records,
    })
}
