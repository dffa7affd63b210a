//! The warehouse: PostgreSQL ([`pg`]) or SQLite ([`sqlite`]) through sqlx,
//! each an engine of the [`Store`] trait in a file of its own, with the SQL
//! both speak alike written once ([`sql`]); and the guardrails every plan's
//! SQL passes before it runs: the allow-list ([`guard`]), then a dry run
//! proven on the catalog ([`proof`]), both through [`Warehouse::vet`].
//!
//! Besides the destination tables, mend keeps its own state here, so that it
//! changes in the same transaction as the data it describes:
//! - `mend_offsets`: the next source offset per dataset and partition, written
//!   with the rows of each batch (exactly-once loading);
//! - `mend_quarantined`: source offsets the loader sent to quarantine, with
//!   their bytes, so a batch re-delivered after a crash quarantines them
//!   again instead of skipping them, and whether each has been loaded since
//!   (by a replay, or by the loader re-judging it): the one claim that
//!   makes every later load of that position a no-op. Replays read the
//!   bytes here, so their cost grows with the incident, not with the
//!   quarantine topic;
//! - `mend_contracts`: each dataset's contract snapshot (schema id and the
//!   field → column mapping), moved by the applier with its DDL;
//! - `mend_applied`: proposals applied, recorded with their DDL.
//!
//! Every destination table carries `_mend_partition` and `_mend_offset`, the
//! source position of its row. Rows are written once per position: the
//! loader's by its offsets, a quarantined record's by its claim in
//! `mend_quarantined`, both in the transaction that writes the row. So an
//! append-only table needs no index on the position (measured here: a unique
//! index on it halves PostgreSQL's COPY rate, 1.7M to 850k rows/s). A keyed
//! row is only replaced by a record from a later offset.

use std::collections::{HashMap, HashSet};

use futures::Stream;
use mend_config::Dataset;
use mend_model::{Classify, Column, Contract, Next, Position, Row};

pub mod cost;
pub mod expand;
pub mod guard;
pub mod lint;
pub mod pg;
mod proof;
mod sql;
pub mod sqlite;
mod warehouse;

pub use cost::Size;
pub use sql::quote;
pub use warehouse::Warehouse;

/// A failure talking to the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported warehouse URL {0:?}: use postgres://… or sqlite://…")]
    Url(String),
    #[error("warehouse: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("warehouse: {0}")]
    Invalid(String),
    /// Another writer got there first; the work is judged again.
    #[error("warehouse: {0}")]
    Conflict(String),
}

impl StoreError {
    /// Whether a statement gave up waiting for a lock (`lock_timeout`,
    /// SQLSTATE 55P03): nothing of its transaction was applied.
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Self::Sql(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03"))
    }

    /// Whether the database refused a value of what was written (a data
    /// exception, a NULL or a check it will not take), as opposed to failing
    /// or refusing the statement: the record holding it goes to quarantine.
    pub fn refuses_a_value(&self) -> bool {
        let Self::Sql(sqlx::Error::Database(e)) = self else { return false };
        let code = e.code().unwrap_or_default();
        code.starts_with("22")
            || matches!(&*code, "23502" | "23514")
            || e.message().contains("NOT NULL constraint failed")
            || e.message().contains("CHECK constraint failed")
    }
}

impl Classify for StoreError {
    /// Connection-level failures, a database restarting or short of
    /// resources, and lost serialisation races are worth retrying; a refused
    /// statement or a bad URL is not.
    fn next(&self) -> Next {
        let transient = match self {
            Self::Sql(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_),
            ) => true,
            Self::Sql(sqlx::Error::Database(e)) => {
                // SQLite: busy or locked. PostgreSQL SQLSTATEs: connection
                // exceptions (08), serialisation failures and deadlocks
                // (40001, 40P01), insufficient resources (53), an
                // administrator shutting the server down or a server still
                // starting (57P01–57P03), a lock not available (55P03).
                let code = e.code().unwrap_or_default();
                e.message().contains("locked")
                    || e.message().contains("busy")
                    || code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(&*code, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "55P03")
            }
            Self::Conflict(_) => true,
            _ => false,
        };
        if transient { Next::Retry } else { Next::Fatal }
    }
}

/// Rows of a loader batch on their way to the warehouse.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Typed rows (either dialect).
    Rows(Vec<Row>),
    /// Rows already in PostgreSQL's COPY text format, source position last
    /// (see `mend_avro::copy`); PostgreSQL only.
    Copy(Vec<u8>),
}

/// How rows reach the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The loader's path: offsets guarantee no row is written twice.
    Load,
    /// Replays of claimed quarantined records: a keyed row is replaced only
    /// by a record from a later position.
    Replay,
}

/// Where a loader batch goes.
#[derive(Debug, Clone)]
pub struct LoadTarget {
    pub dataset: String,
    pub topic: String,
    pub table: String,
    pub key: Vec<String>,
    /// The columns every row fills, in order.
    pub columns: Vec<String>,
}

impl LoadTarget {
    /// Where rows of `dataset` go, filling `columns` in order.
    pub fn new(dataset: &Dataset, columns: Vec<String>) -> Self {
        Self {
            dataset: dataset.name.clone(),
            topic: dataset.topic.clone(),
            table: dataset.table.clone(),
            key: dataset.key.clone(),
            columns,
        }
    }
}

/// What a loader batch records besides its rows, in the same transaction.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    /// Records sent to quarantine in this batch.
    pub quarantined: Vec<QuarantinedRecord>,
    /// Records quarantined by an earlier delivery that this batch loaded.
    pub reloaded: Vec<Position>,
    /// Next offset per partition after this batch.
    pub next_offsets: Vec<Advance>,
}

/// A partition's next offset moved by a batch: from the one the batch was
/// judged against (None: nothing stored yet) to the one after it. Stored
/// only if still `from`: a batch another process loaded meanwhile (two
/// instances briefly reading one partition) fails with
/// [`StoreError::Conflict`] and is judged again, so nothing loads twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
}

/// A record the loader quarantined: kept with its bytes in the warehouse (in
/// the batch's transaction), so its incident's replay reads exactly these.
#[derive(Debug, Clone)]
pub struct QuarantinedRecord {
    pub position: Position,
    /// Its writer schema, when it had one.
    pub writer: Option<u32>,
    /// Its value bytes (Confluent wire format); None for a tombstone and for
    /// a record over `MAX_RECORD_BYTES` (the source topic keeps it).
    pub payload: Option<Vec<u8>>,
}

/// A quarantined record as kept: (partition, offset, bytes); bytes are None
/// for a tombstone and a record too large to keep, which never load.
pub type Kept = (i32, i64, Option<Vec<u8>>);

/// An approved plan, ready to apply.
#[derive(Debug)]
pub struct Apply<'a> {
    pub proposal_id: &'a str,
    pub decision_id: &'a str,
    /// mend's renderings of the plan's statements ([`Vetted::statements`]).
    pub statements: &'a [String],
    /// The dataset's schema ([`Vetted::schema`]): the statements run with
    /// nothing else on the search path but the catalog.
    pub schema: &'a str,
    pub contract: &'a Contract,
    /// How long the statements may wait for their locks and run.
    pub limits: Limits,
    /// mend's own statements run after the plan's in its transaction
    /// (expand/contract's swap drops the dual write's trigger): not the
    /// plan's, so not vetted as a plan's are.
    pub then: &'a [String],
}

/// How a dry run runs a plan's statements.
#[derive(Debug, Clone, Copy, Default)]
pub struct DryRun {
    /// A statement rewrites the table: the engine may empty it first, in
    /// the dry run's transaction, so the dry run rewrites nothing.
    pub rewrites: bool,
    /// How long it waits for the table's lock (zero: no limit).
    pub lock_timeout: std::time::Duration,
}

/// How long a plan's statements may wait for their locks and run
/// (PostgreSQL; SQLite's writer waits its busy timeout).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// `lock_timeout`: every query queued behind a waiting statement waits
    /// at most this long. Zero: no limit.
    pub lock_timeout: std::time::Duration,
    /// Each statement's `statement_timeout`, in order; zero or missing: no limit.
    pub statement_timeouts: Vec<std::time::Duration>,
}

/// What the guardrails make of a plan's statements ([`Warehouse::vet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetted {
    /// Why the plan cannot run, each with the statement it concerns (its
    /// index in the plan's statements) when it concerns one. Empty when
    /// it can run.
    pub refused: Vec<Refusal>,
    /// mend's rendering of each statement: what the apply runs.
    pub statements: Vec<String>,
    /// The schema holding the dataset's table.
    pub schema: String,
}

/// One reason a plan cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub statement: Option<usize>,
    pub check: Check,
    pub reason: String,
}

/// Which check refused a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The allow-list ([`guard`]): nothing ran.
    AllowList,
    /// The database refused a statement in the dry run: the plan fails.
    DryRun,
    /// The dry run changed the catalog beyond the dataset's table ([`proof`]).
    Catalog,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.statement {
            Some(index) => write!(f, "statement {}: {}", index + 1, self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// What a warehouse engine does. One engine per dialect, each in a file of
/// its own; [`Warehouse`] picks one by URL.
///
/// The futures are used through the concrete engines (by [`Warehouse`]),
/// where their `Send` is known, so plain `async fn` is enough here.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// Creates mend's own tables when missing, and adds the columns later
    /// versions need.
    async fn create_state_tables(&self) -> Result<(), StoreError>;
    /// The contract of `dataset`, if it has one.
    async fn contract(&self, dataset: &str) -> Result<Option<Contract>, StoreError>;
    /// The columns of `table` from the database catalog, in table order
    /// (mend's position columns excluded). Empty when the table is missing.
    async fn columns(&self, table: &str) -> Result<Vec<Column>, StoreError>;
    /// Creates the destination table and the dataset's first contract, in
    /// one transaction, unless the dataset already has a contract.
    async fn establish(&self, dataset: &str, create_table: &str, contract: &Contract) -> Result<(), StoreError>;
    /// Next offsets stored for `dataset`: (topic, partition) → next offset.
    async fn offsets(&self, dataset: &str) -> Result<HashMap<(String, i32), i64>, StoreError>;
    /// The records of `dataset` quarantined with writer `writer`, in source order.
    async fn quarantined_records(&self, dataset: &str, writer: u32) -> Result<Vec<Kept>, StoreError>;
    /// The first `limit` records of `dataset` quarantined with writer
    /// `writer` and not loaded since, in source order.
    async fn quarantined_sample(&self, dataset: &str, writer: u32, limit: i64) -> Result<Vec<Kept>, StoreError>;
    /// How many records of `dataset` were quarantined, per writer schema.
    async fn quarantine_counts(&self, dataset: &str) -> Result<HashMap<u32, i64>, StoreError>;
    /// Offsets of `topic` below `below` quarantined and not loaded since.
    async fn quarantined(
        &self,
        dataset: &str,
        topic: &str,
        partition: i32,
        below: i64,
    ) -> Result<HashSet<i64>, StoreError>;
    /// Writes a loader batch in one transaction (see [`Warehouse::load_batch`]).
    async fn load_batch(
        &self,
        target: &LoadTarget,
        chunks: impl Stream<Item = Chunk> + Unpin + Send,
        done: tokio::sync::oneshot::Receiver<Bookkeeping>,
    ) -> Result<(), StoreError>;
    /// Claims and writes replayed rows (see [`Warehouse::replay_rows`]).
    async fn replay_rows(&self, target: &LoadTarget, rows: &[Row]) -> Result<usize, StoreError>;
    /// The schema holding `table` (where it would be created when missing).
    async fn schema_of(&self, table: &str) -> Result<String, StoreError>;
    /// Runs `statements` in a transaction that is rolled back, and compares
    /// the catalog before and after: what changed that is not one of
    /// `tables` (the dataset's and its new children) in the ways allowed
    /// statements change them.
    async fn prove(
        &self,
        target: &guard::Target,
        tables: &[String],
        statements: &[String],
        how: DryRun,
    ) -> Result<Vec<String>, StoreError>;
    /// The table's size as the catalog knows it (zero when it is missing).
    async fn size(&self, schema: &str, table: &str) -> Result<cost::Size, StoreError>;
    /// Runs each of mend's renderings of `statements` on an empty copy of
    /// the table, where the engine can, and says what each did to it
    /// (None: not probed).
    async fn probe(
        &self,
        target: &guard::Target,
        statements: &[String],
    ) -> Result<Vec<Option<Result<cost::Probe, String>>>, StoreError>;
    /// How many plans of `dataset` have been applied.
    async fn applied_count(&self, dataset: &str) -> Result<i64, StoreError>;
    /// Whether a proposal has been applied already.
    async fn applied(&self, proposal_id: &str) -> Result<bool, StoreError>;
    /// The plans of `dataset` recorded as applied: (proposal, decision).
    async fn applied_plans(&self, dataset: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Who last moved `dataset`'s contract: `loader` (it established it) or
    /// the decision id whose plan moved it.
    async fn contract_mover(&self, dataset: &str) -> Result<Option<String>, StoreError>;
    /// Applies a plan exactly once; false when it was applied before.
    async fn apply(&self, application: &Apply<'_>) -> Result<bool, StoreError>;
    /// Every row of `table` as text, `columns` in order.
    async fn rows_as_text(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Option<String>>>, StoreError>;
    /// Up to `limit` distinct values of one column, as text.
    async fn column_values(&self, table: &str, column: &str, limit: i64) -> Result<Vec<String>, StoreError>;
    /// Counts the rows of a table.
    async fn count(&self, table: &str) -> Result<i64, StoreError>;
}

#[cfg(test)]
mod tests;
