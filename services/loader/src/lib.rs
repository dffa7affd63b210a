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
//! contract without loss (the contract check is `mend_avro`'s
//! `RecordLoader`, which the detector and the applier ask too); anything
//! else goes to quarantine, never into a guessed column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use mend_avro::codec::schema_id;
use mend_avro::copy;
use mend_avro::loader::{RecordLoader, Rejection, WriterPlan, frame, origin, read_datum};
use mend_avro::schema::columns_for;
use mend_config::Dataset;
use mend_model::{Contract, Dialect, MAX_RECORD_BYTES, Position, QuarantineKind, Row};
use mend_runtime::handler::{Disposition, Handler, Inbound, QuarantineReason};
use mend_runtime::runner::{Runner, RunnerConfig, RunnerStatus};
use mend_runtime::{Context, HandleError};
use mend_store::{Advance, Bookkeeping, Chunk, LoadTarget, QuarantinedRecord, StoreError, Warehouse};

/// Largest batch the runner hands the loader: one warehouse transaction.
/// Each batch leaves the database idle for a few milliseconds (its last
/// rows and commit, then the next batch's first reads), so larger batches
/// load faster: measured with `cargo bench --bench pipeline` (1M records),
/// append-only 0.49–0.52 of COPY with 50,000-record batches, 0.55–0.59 with
/// 100,000. A batch also ends at [`BATCH_BYTES`].
pub const BATCH: usize = 100_000;

/// Largest batch in bytes of keys and values: with large records, a batch
/// of [`BATCH`] records would hold gigabytes.
pub const BATCH_BYTES: usize = 64 << 20;

/// Records decoded before they are sent to the warehouse: the batch's COPY
/// streams chunk by chunk, so the database parses one while the loader
/// decodes the next.
pub const CHUNK: usize = 2000;

/// The loader's handler.
pub struct Loader {
    context: Arc<Context>,
}

/// What to do with one record.
enum Verdict {
    /// Its row is in the chunk.
    Loaded,
    Quarantine(QuarantineReason),
    /// Already written by an earlier delivery of this batch.
    Skip,
}

/// What a batch needs to judge its records without waiting on anything: the
/// plans and decoders of its writer schemas, the offsets already written and
/// the records quarantined then.
struct Judge<'p> {
    dataset: &'p Dataset,
    dialect: Dialect,
    /// Per writer schema: its plan and decoder, or why its records cannot load.
    writers: HashMap<u32, Result<(Arc<WriterPlan>, GenericDatumReader<'p>), Rejection>>,
    /// Next offset per partition of the dataset's topic, as stored.
    stored: HashMap<i32, i64>,
    /// Per partition: offsets below `stored` that went to quarantine and
    /// have not been loaded since (by a replay).
    requarantine: HashMap<i32, HashSet<i64>>,
    /// Records of the batch (by index) the warehouse refused a value of,
    /// with its reason: quarantined, not written.
    refused: &'p HashMap<usize, String>,
}

/// What the judge knows of the partition of the records it is judging.
struct Partition<'j> {
    /// The next offset stored for it: records below were written before.
    stored: i64,
    /// Of those, the ones that went to quarantine (judged again).
    requarantine: Option<&'j HashSet<i64>>,
}

impl Judge<'_> {
    /// Judges one record; a record that loads has its row added to `chunk`.
    fn verdict(&self, index: usize, record: &Inbound, partition: &Partition<'_>, chunk: &mut Chunk) -> Verdict {
        // Written by an earlier delivery: skip, unless it was sent to
        // quarantine then (that output may not have been delivered).
        if record.offset < partition.stored && !partition.requarantine.is_some_and(|q| q.contains(&record.offset)) {
            return Verdict::Skip;
        }
        let quarantine =
            |rejection: Rejection| Verdict::Quarantine(QuarantineReason::of(&self.dataset.name, rejection));
        if let Some(reason) = self.refused.get(&index) {
            return quarantine(Rejection::new(
                QuarantineKind::ValueRejected,
                format!("the warehouse refused a value of it: {reason}"),
            ));
        }
        let Some(payload) = record.payload.as_deref() else {
            return quarantine(Rejection::new(
                QuarantineKind::NullValue,
                "a record without a value (tombstone): mend never deletes rows",
            ));
        };
        let writer = match frame(payload) {
            Ok(writer) => writer,
            Err(rejection) => return quarantine(rejection),
        };
        let (plan, reader) = match self.writers.get(&writer) {
            Some(Ok((plan, reader))) => (plan, reader),
            Some(Err(rejection)) => return quarantine(rejection.clone()),
            // Every writer of the batch has a plan or a reason (see `load`).
            None => {
                return quarantine(Rejection::new(
                    QuarantineKind::SchemaMismatch,
                    format!("writer schema {writer} was not looked up"),
                ));
            }
        };
        let position = Position { partition: record.partition, offset: record.offset };
        let datum = &payload[5..];
        if let (Chunk::Copy(text), Some(flat)) = (&mut *chunk, &plan.flat) {
            return match flat.decode(datum, position, &plan.key, text) {
                Ok(()) => Verdict::Loaded,
                Err(error) => quarantine(plan.rejection(error)),
            };
        }
        let value = match read_datum(reader, writer, datum) {
            Ok(value) => value,
            Err(rejection) => return quarantine(rejection),
        };
        let values = match plan.load.row(value) {
            Ok(values) => values,
            Err(reason) => return quarantine(Rejection::new(QuarantineKind::ValueRejected, reason)),
        };
        if let Some(rejection) = plan.missing_key(&values) {
            return quarantine(rejection);
        }
        let row = Row { position, values };
        match chunk {
            Chunk::Rows(rows) => rows.push(row),
            Chunk::Copy(text) => copy::encode_row(&row, text),
        }
        Verdict::Loaded
    }

    /// Judges one chunk of records: the rows to write (COPY text for
    /// PostgreSQL, typed rows for SQLite), each record's disposition in
    /// `out`, and the batch's bookkeeping so far.
    fn chunk(
        &self,
        records: &[Inbound],
        indices: &[usize],
        out: &mut [Option<Disposition>],
        bookkeeping: &mut Bookkeeping,
        next_offsets: &mut BTreeMap<i32, Advance>,
    ) -> Chunk {
        let mut chunk = match self.dialect {
            Dialect::Postgres => Chunk::Copy(Vec::with_capacity(indices.len() * 80)),
            Dialect::Sqlite => Chunk::Rows(Vec::with_capacity(indices.len())),
        };
        // Records come in runs of one partition: its state is looked up once.
        for run in indices.chunk_by(|a, b| records[*a].partition == records[*b].partition) {
            let number = records[run[0]].partition;
            let partition = Partition {
                stored: self.stored.get(&number).copied().unwrap_or(0),
                requarantine: self.requarantine.get(&number),
            };
            let mut last = -1;
            for &index in run {
                let record = &records[index];
                last = last.max(record.offset);
                out[index] = Some(match self.verdict(index, record, &partition, &mut chunk) {
                    Verdict::Loaded => {
                        if record.offset < partition.stored {
                            // Quarantined by an earlier delivery, loadable now.
                            bookkeeping.reloaded.push(Position { partition: number, offset: record.offset });
                        }
                        Disposition::Emit(Vec::new())
                    }
                    Verdict::Quarantine(reason) => {
                        bookkeeping.quarantined.push(QuarantinedRecord {
                            position: Position { partition: number, offset: record.offset },
                            writer: record.payload.as_deref().and_then(schema_id),
                            // Too large to keep: the source topic keeps it.
                            payload: record.payload.clone().filter(|p| p.len() <= MAX_RECORD_BYTES),
                        });
                        Disposition::Quarantine(reason)
                    }
                    Verdict::Skip => Disposition::Emit(Vec::new()),
                });
            }
            let from = self.stored.get(&number).copied();
            let next = next_offsets.entry(number).or_insert(Advance { partition: number, from, to: 0 });
            next.to = next.to.max(last + 1);
        }
        chunk
    }
}

impl Loader {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context }
    }

    /// How records load under the dataset's contract in force (read from
    /// the warehouse with every batch: the applier moves it).
    async fn record_loader(
        &self,
        dataset: &Dataset,
        warehouse: &Warehouse,
    ) -> Result<Option<Arc<RecordLoader>>, HandleError> {
        let Some(contract) = warehouse.contract(&dataset.name).await? else { return Ok(None) };
        Ok(Some(self.context.loaders.get(&self.context.codec, dataset, contract).await?))
    }

    /// Creates the table and the first contract from the schema of the
    /// first record written with one of the dataset's subject. Returns why
    /// each writer schema tried before it cannot be the baseline.
    async fn establish(
        &self,
        dataset: &Dataset,
        warehouse: &Warehouse,
        writers: impl Iterator<Item = u32>,
    ) -> Result<HashMap<u32, Rejection>, HandleError> {
        let mut refused = HashMap::new();
        for writer in writers {
            if refused.contains_key(&writer) {
                continue;
            }
            let schema = match origin(&self.context.codec, writer, &dataset.subject()).await? {
                Ok(schema) => schema,
                Err(rejection) => {
                    refused.insert(writer, rejection);
                    continue;
                }
            };
            let (columns, mapping) = match columns_for(&schema.parsed, warehouse.dialect(), dataset.nested) {
                Ok(columns) => columns,
                Err(reason) => {
                    let reason = format!("writer schema {writer} cannot make the dataset's table: {reason}");
                    refused.insert(writer, Rejection::new(QuarantineKind::SchemaMismatch, reason));
                    continue;
                }
            };
            let contract = Contract { dataset: dataset.name.clone(), schema_id: writer, mapping };
            let established =
                warehouse.establish(&dataset.name, &dataset.table, &dataset.key, &columns, &contract).await?;
            tracing::info!(dataset = %dataset.name, table = %dataset.table, schema_id = established.schema_id, "contract established");
            break;
        }
        Ok(refused)
    }

    /// Handles the records of one dataset (indices into the batch) in one
    /// warehouse transaction, decoding chunk by chunk while earlier chunks
    /// are written.
    ///
    /// When the warehouse refuses a value the judge could not foresee (a
    /// data exception: a text PostgreSQL cannot hold, a date beyond its
    /// range), the records are loaded again in halves, each in its own
    /// transaction, down to the record it refuses, which is quarantined with
    /// the warehouse's reason: bad input never stops the loader.
    fn load<'a>(
        &'a self,
        dataset: &'a Dataset,
        batch: &'a [Inbound],
        indices: &'a [usize],
        out: &'a mut [Option<Disposition>],
        refused: HashMap<usize, String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandleError>> + Send + 'a>> {
        Box::pin(async move {
            let error = match self.load_once(dataset, batch, indices, out, &refused).await? {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if indices.is_empty() {
                return Err(error.into()); // nothing left to blame: not a record's value
            }
            if let [index] = indices {
                if refused.contains_key(index) {
                    // Refused even without its row: not the record's value.
                    return Err(error.into());
                }
                tracing::warn!(dataset = %dataset.name, offset = batch[*index].offset, %error, "the warehouse refused a record's value: quarantined");
                let mut refused = refused;
                refused.insert(*index, error.to_string());
                return self.load(dataset, batch, indices, out, refused).await;
            }
            let (first, second) = indices.split_at(indices.len() / 2);
            self.load(dataset, batch, first, out, refused.clone()).await?;
            self.load(dataset, batch, second, out, refused).await
        })
    }

    /// One attempt of [`Self::load`]: Ok(Err) when the warehouse refused a
    /// value of the batch (nothing was written).
    async fn load_once(
        &self,
        dataset: &Dataset,
        batch: &[Inbound],
        indices: &[usize],
        out: &mut [Option<Disposition>],
        values_refused: &HashMap<usize, String>,
    ) -> Result<Result<(), StoreError>, HandleError> {
        let warehouse = self.context.warehouse(dataset).await?;
        let mut loader = self.record_loader(dataset, &warehouse).await?;
        let mut refused = HashMap::new();
        if loader.is_none() {
            let writers = indices.iter().filter_map(|i| batch[*i].payload.as_deref().and_then(|p| frame(p).ok()));
            refused = self.establish(dataset, &warehouse, writers).await?;
            loader = self.record_loader(dataset, &warehouse).await?;
        }
        let stored: HashMap<i32, i64> = warehouse
            .offsets(&dataset.name)
            .await?
            .into_iter()
            .filter(|((topic, _), _)| *topic == dataset.topic)
            .map(|((_, partition), next)| (partition, next))
            .collect();
        let mut requarantine: HashMap<i32, HashSet<i64>> = HashMap::new();
        let mut plans = HashMap::new();
        // Records come in runs of one partition and mostly of one writer.
        for run in indices.chunk_by(|a, b| batch[*a].partition == batch[*b].partition) {
            let first = &batch[run[0]];
            if let Some(&next) = stored.get(&first.partition)
                && !requarantine.contains_key(&first.partition)
                && run.iter().any(|i| batch[*i].offset < next)
            {
                let quarantined = warehouse.quarantined(&dataset.name, &first.topic, first.partition, next).await?;
                requarantine.insert(first.partition, quarantined);
            }
            let mut last = None;
            for &index in run {
                let writer = batch[index].payload.as_deref().and_then(|p| frame(p).ok());
                if writer == last {
                    continue;
                }
                last = writer;
                if let Some(writer) = writer
                    && !plans.contains_key(&writer)
                {
                    let fit = match (&loader, refused.remove(&writer)) {
                        (_, Some(rejection)) => Err(rejection),
                        (Some(loader), None) => loader.fit(&self.context.codec, writer).await?,
                        (None, None) => {
                            Err(Rejection::new(QuarantineKind::SchemaMismatch, "the dataset has no contract yet"))
                        }
                    };
                    plans.insert(writer, fit);
                }
            }
        }
        let mut writers = HashMap::new();
        for (writer, plan) in &plans {
            let entry = match plan {
                Ok(plan) => plan.reader().map(|reader| (plan.clone(), reader)),
                Err(rejection) => Err(rejection.clone()),
            };
            writers.insert(*writer, entry);
        }
        // Every plan under one contract writes the same columns (the
        // contract's fields, mapped).
        let columns = writers
            .values()
            .find_map(|entry| entry.as_ref().ok().map(|(plan, _)| plan.load.columns.clone()))
            .unwrap_or_default();
        let judge =
            Judge { dataset, dialect: warehouse.dialect(), writers, stored, requarantine, refused: values_refused };

        // The batch's transaction, on a task of its own; rows reach it chunk
        // by chunk, the bookkeeping last. If judging stops half-way (it
        // cannot fail today), `done` is dropped and nothing is committed.
        let target = LoadTarget::new(dataset, columns);
        let (chunks, received) = tokio::sync::mpsc::channel::<Chunk>(2);
        let (done, bookkept) = tokio::sync::oneshot::channel();
        let received = futures::stream::unfold(received, |mut rx| async { rx.recv().await.map(|rows| (rows, rx)) });
        let writer = tokio::spawn(async move { warehouse.load_batch(&target, Box::pin(received), bookkept).await });
        let mut bookkeeping = Bookkeeping::default();
        let mut next_offsets = BTreeMap::new();
        for chunk in indices.chunks(CHUNK) {
            let rows = judge.chunk(batch, chunk, out, &mut bookkeeping, &mut next_offsets);
            if chunks.send(rows).await.is_err() {
                break; // the write failed: its error is below
            }
        }
        drop(chunks);
        bookkeeping.next_offsets = next_offsets.into_values().collect();
        // Unsent only when the write has already failed.
        let _ = done.send(bookkeeping);
        match writer.await.map_err(|e| HandleError::fatal("writing a loader batch", e))? {
            Ok(()) => Ok(Ok(())),
            Err(error) if error.refuses_a_value() => Ok(Err(error)),
            Err(error) => Err(error.into()),
        }
    }
}

impl Handler for Loader {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out: Vec<Option<Disposition>> = vec![None; batch.len()];
        let mut by_dataset: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        // Records come in runs of one topic: one dataset look-up per run.
        let mut start = 0;
        for run in batch.chunk_by(|a, b| Arc::ptr_eq(&a.topic, &b.topic)) {
            let indices = start..start + run.len();
            start = indices.end;
            match self.context.dataset_of_topic(&run[0].topic) {
                Some(dataset) => by_dataset.entry(dataset.name.as_str()).or_default().extend(indices),
                None => {
                    for index in indices {
                        out[index] = Some(Disposition::Quarantine(QuarantineReason {
                            dataset: None,
                            kind: QuarantineKind::UnknownDataset,
                            reason: format!("no dataset reads topic {}", run[0].topic),
                        }));
                    }
                }
            }
        }
        for (name, indices) in by_dataset {
            let Some(dataset) = self.context.dataset(name) else { continue };
            self.load(dataset, batch, &indices, &mut out, HashMap::new()).await?;
        }
        Ok(out.into_iter().map(|d| d.unwrap_or(Disposition::Emit(Vec::new()))).collect())
    }
}

/// The loader's runner on every dataset topic.
pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Loader>, Arc<RunnerStatus>)> {
    let topics = context.dataset_topics();
    anyhow::ensure!(!topics.is_empty(), "no datasets configured: add [[dataset]] tables to mend.toml");
    // Large batches: one transaction (one COPY) per batch is the loader's cost.
    let mut config = RunnerConfig::new("loader", &context.connections.brokers, &context.group("loader"), topics);
    config.max_batch = BATCH;
    config.max_batch_bytes = BATCH_BYTES;
    Ok(context.runner_with(config, Loader::new(context.clone()))?)
}

#[cfg(test)]
mod tests;
