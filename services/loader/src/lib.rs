//! loader — the pipeline being healed.
//!
//! - input topics: every dataset's source topic (Avro, Confluent wire format);
//! - output topic: `mend.quarantine` (records that do not fit, with their
//!   original bytes, position and reason);
//! - key: the dataset name;
//! - delivery: exactly once into the warehouse. Each batch's rows and the next
//!   source offsets are written in one transaction, so a re-delivered batch is
//!   recognised and skipped; quarantined offsets are recorded in the same
//!   transaction, so a re-delivery quarantines them again rather than losing
//!   them. Append-only datasets load with COPY (PostgreSQL), keyed datasets
//!   through a staging table and one upsert per batch.
//!
//! A record is loaded only when its writer schema resolves to the dataset's
//! contract without loss (see `mend_shared::mapping`); anything else goes to
//! quarantine, never into a guessed column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use apache_avro::Schema;
use mend_shared::HandleError;
use mend_shared::codec::{CodecError, schema_id};
use mend_shared::config::Dataset;
use mend_shared::context::Context;
use mend_shared::mapping::{LoadPlan, columns_for};
use mend_shared::runner::{Disposition, Handler, Inbound, QuarantineReason, Runner, RunnerStatus};
use mend_shared::warehouse::{Batch, Contract, Position, QuarantinedRecord, Row, Warehouse};

/// Records per loader batch (one warehouse transaction each).
pub const BATCH: usize = 5000;

/// The loader's handler.
pub struct Loader {
    context: Arc<Context>,
    /// Per dataset: the contract in force and a plan per writer schema.
    cache: Mutex<HashMap<String, DatasetCache>>,
}

#[derive(Default)]
struct DatasetCache {
    contract: Option<(Contract, Arc<Schema>)>,
    plans: HashMap<u32, Result<Arc<LoadPlan>, String>>,
}

/// What to do with one record.
enum Verdict {
    Load(Row, Arc<LoadPlan>),
    Quarantine(QuarantineReason),
    /// Already written by an earlier delivery of this batch.
    Skip,
}

impl Loader {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context, cache: Mutex::default() }
    }

    fn cached_contract(&self, dataset: &str) -> Option<(Contract, Arc<Schema>)> {
        self.lock().get(dataset).and_then(|c| c.contract.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DatasetCache>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the contract from the warehouse; when it moved, forgets the plans.
    async fn refresh_contract(
        &self,
        dataset: &Dataset,
        warehouse: &Warehouse,
    ) -> Result<Option<(Contract, Arc<Schema>)>, HandleError> {
        let Some(contract) = warehouse.contract(&dataset.name).await? else { return Ok(None) };
        if let Some(cached) = self.cached_contract(&dataset.name)
            && cached.0 == contract
        {
            return Ok(Some(cached));
        }
        let schema = self.context.codec.schema(contract.schema_id).await.map_err(HandleError::from)?;
        let entry = (contract, Arc::new(schema.parsed.clone()));
        let mut cache = self.lock();
        let state = cache.entry(dataset.name.clone()).or_default();
        state.contract = Some(entry.clone());
        state.plans.clear();
        Ok(Some(entry))
    }

    /// Creates the table and the first contract from the first record's schema.
    async fn establish(&self, dataset: &Dataset, warehouse: &Warehouse, writer: u32) -> Result<(), HandleError> {
        let schema = self.context.codec.schema(writer).await.map_err(HandleError::from)?;
        let (columns, mapping) = columns_for(&schema.parsed, warehouse.dialect(), dataset.nested)
            .map_err(|e| HandleError::fatal(&format!("dataset {}: schema {writer}", dataset.name), e))?;
        let contract = Contract { dataset: dataset.name.clone(), schema_id: writer, mapping };
        let established = warehouse.establish(&dataset.name, &dataset.table, &dataset.key, &columns, &contract).await?;
        tracing::info!(dataset = %dataset.name, table = %dataset.table, schema_id = established.schema_id, "contract established");
        Ok(())
    }

    /// The plan for records of `writer` under the current contract (cached).
    async fn plan(&self, dataset: &Dataset, writer: u32) -> Result<Result<Arc<LoadPlan>, String>, HandleError> {
        // Hot path: one lookup per record, nothing cloned but an Arc.
        if let Some(plan) = self.lock().get(&dataset.name).and_then(|c| c.plans.get(&writer).cloned()) {
            return Ok(plan);
        }
        let Some((contract, contract_schema)) = self.cached_contract(&dataset.name) else {
            return Ok(Err("the dataset has no contract yet".into()));
        };
        let plan = match self.context.codec.schema(writer).await {
            Ok(schema) => LoadPlan::new(&schema.parsed, &contract_schema, &contract.mapping, dataset.nested)
                .map(Arc::new)
                .map_err(|reason| {
                    format!("writer schema {writer} does not match contract schema {}: {reason}", contract.schema_id)
                }),
            Err(CodecError::Invalid(reason)) => {
                Err(format!("writer schema {writer} is unknown to the registry: {reason}"))
            }
            Err(unavailable) => return Err(unavailable.into()),
        };
        self.lock().entry(dataset.name.clone()).or_default().plans.insert(writer, plan.clone());
        Ok(plan)
    }

    async fn judge(&self, dataset: &Dataset, record: &Inbound) -> Result<Verdict, HandleError> {
        let quarantine = |kind: &str, reason: String| {
            Ok(Verdict::Quarantine(QuarantineReason { dataset: Some(dataset.name.clone()), kind: kind.into(), reason }))
        };
        let Some(payload) = record.payload.as_deref() else {
            return quarantine("null_value", "a record without a value (tombstone): mend never deletes rows".into());
        };
        let Some(writer) = schema_id(payload) else {
            return quarantine(
                "undecodable",
                "the value is not in the Confluent wire format (magic byte 0 + schema id)".into(),
            );
        };
        let plan = match self.plan(dataset, writer).await? {
            Ok(plan) => plan,
            Err(reason) => return quarantine("schema_mismatch", reason),
        };
        let value = match self.context.codec.decode(payload).await {
            Ok(value) => value,
            Err(CodecError::Invalid(reason)) => return quarantine("undecodable", reason),
            Err(unavailable) => return Err(unavailable.into()),
        };
        match plan.row(value) {
            Ok(values) => {
                let position = Position { partition: record.partition, offset: record.offset };
                Ok(Verdict::Load(Row { position, values }, plan))
            }
            Err(reason) => quarantine("value_rejected", reason),
        }
    }

    /// Handles the records of one dataset (indices into the batch).
    async fn load(
        &self,
        dataset: &Dataset,
        batch: &[Inbound],
        indices: &[usize],
        out: &mut [Option<Disposition>],
    ) -> Result<(), HandleError> {
        let warehouse = self.context.warehouse(dataset).await?;
        if self.refresh_contract(dataset, &warehouse).await?.is_none() {
            let first = indices.iter().find_map(|i| batch[*i].payload.as_deref().and_then(schema_id));
            if let Some(writer) = first {
                self.establish(dataset, &warehouse, writer).await?;
                self.refresh_contract(dataset, &warehouse).await?;
            }
        }
        // Next offset per partition of the dataset's topic.
        let stored: HashMap<i32, i64> = warehouse
            .offsets(&dataset.name)
            .await?
            .into_iter()
            .filter(|((topic, _), _)| *topic == dataset.topic)
            .map(|((_, partition), next)| (partition, next))
            .collect();
        let mut requarantine: HashMap<i32, HashSet<i64>> = HashMap::new();
        let mut verdicts = Vec::with_capacity(indices.len());
        for &index in indices {
            let record = &batch[index];
            let next = stored.get(&record.partition).copied().unwrap_or(0);
            let verdict = if record.offset < next {
                // Written by an earlier delivery: skip, unless it was sent to
                // quarantine then (that output may not have been delivered).
                if let std::collections::hash_map::Entry::Vacant(entry) = requarantine.entry(record.partition) {
                    entry.insert(warehouse.quarantined(&dataset.name, &record.topic, record.partition, next).await?);
                }
                if requarantine.get(&record.partition).is_some_and(|q| q.contains(&record.offset)) {
                    self.judge(dataset, record).await?
                } else {
                    Verdict::Skip
                }
            } else {
                self.judge(dataset, record).await?
            };
            verdicts.push((index, verdict));
        }

        let mut rows = Vec::new();
        // Every plan under one contract writes the same columns (the
        // contract's fields, mapped), so the first row's plan names them.
        let mut columns: Vec<String> = Vec::new();
        let mut quarantined = Vec::new();
        let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        for (index, verdict) in verdicts {
            let record = &batch[index];
            let next = next_offsets.entry(record.partition).or_insert(0);
            *next = (*next).max(record.offset + 1);
            out[index] = Some(match verdict {
                Verdict::Load(row, plan) => {
                    if columns.is_empty() {
                        columns.clone_from(&plan.columns);
                    }
                    rows.push(row);
                    Disposition::Emit(Vec::new())
                }
                Verdict::Quarantine(reason) => {
                    let writer = record.payload.as_deref().and_then(schema_id);
                    quarantined.push(QuarantinedRecord {
                        position: Position { partition: record.partition, offset: record.offset },
                        writer,
                        payload: record.payload.as_deref(),
                    });
                    Disposition::Quarantine(reason)
                }
                Verdict::Skip => Disposition::Emit(Vec::new()),
            });
        }
        let next_offsets: Vec<(i32, i64)> = next_offsets.into_iter().collect();
        warehouse
            .load_batch(&Batch {
                dataset: &dataset.name,
                topic: &dataset.topic,
                table: &dataset.table,
                key: &dataset.key,
                columns: &columns,
                rows: &rows,
                quarantined: &quarantined,
                next_offsets: &next_offsets,
            })
            .await?;
        Ok(())
    }
}

impl Handler for Loader {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out: Vec<Option<Disposition>> = vec![None; batch.len()];
        let mut by_dataset: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (index, record) in batch.iter().enumerate() {
            match self.context.dataset_of_topic(&record.topic) {
                Some(dataset) => by_dataset.entry(dataset.name.as_str()).or_default().push(index),
                None => {
                    out[index] = Some(Disposition::Quarantine(QuarantineReason {
                        dataset: None,
                        kind: "unknown_dataset".into(),
                        reason: format!("no dataset reads topic {}", record.topic),
                    }));
                }
            }
        }
        for (name, indices) in by_dataset {
            let Some(dataset) = self.context.dataset(name) else { continue };
            self.load(dataset, batch, &indices, &mut out).await?;
        }
        Ok(out.into_iter().map(|d| d.unwrap_or(Disposition::Emit(Vec::new()))).collect())
    }
}

/// The loader's runner on every dataset topic.
pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Loader>, Arc<RunnerStatus>)> {
    let topics = context.dataset_topics();
    anyhow::ensure!(!topics.is_empty(), "no datasets configured: add [[dataset]] tables to mend.toml");
    // Large batches: one transaction (one COPY) per batch is the loader's cost.
    Ok(context.runner_batched("loader", &context.group("loader"), topics, BATCH, Loader::new(context.clone()))?)
}
