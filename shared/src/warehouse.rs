//! The warehouse: PostgreSQL or SQLite through sqlx.
//!
//! Besides the destination tables, mend keeps its own state here, so that it
//! changes in the same transaction as the data it describes:
//! - `mend_offsets`: the next source offset per dataset and partition, written
//!   with the rows of each batch (exactly-once loading);
//! - `mend_quarantined`: source offsets the loader sent to quarantine, with
//!   their bytes, so a batch re-delivered after a crash quarantines them
//!   again instead of skipping them, and whether each has been loaded since
//!   (by a replay, or by the loader re-judging it): the one claim that
//!   makes every later load of that position a no-op;
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Postgres, Sqlite, Transaction};

use crate::config::Dataset;
use crate::copy;
use crate::error::HandleError;

/// Which SQL the warehouse speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A failure talking to the warehouse.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("unsupported warehouse URL {0:?}: use postgres://… or sqlite://…")]
    Url(String),
    #[error("warehouse: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("warehouse: {0}")]
    Invalid(String),
}

impl WarehouseError {
    /// Connection-level failures are worth retrying; a refused statement is not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Sql(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_)
            )
        ) || matches!(self, Self::Sql(sqlx::Error::Database(e)) if e.message().contains("locked"))
    }
}

impl From<WarehouseError> for HandleError {
    fn from(error: WarehouseError) -> Self {
        // A database that refuses a statement now may accept it after an
        // operator fixes it; retrying never loses a record, stopping would
        // stall every dataset. Both are retried, with backoff.
        HandleError::Retry(error.to_string())
    }
}

/// A SQL value, typed by the column it goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON text (nested records, arrays, maps).
    Json(String),
    /// UTC timestamp, ISO 8601 text.
    Timestamp(String),
    /// Calendar date, `YYYY-MM-DD`.
    Date(String),
    /// Exact decimal as text.
    Decimal(String),
}

/// A column of a destination table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// SQL type in the warehouse's dialect.
    pub sql_type: String,
    pub nullable: bool,
}

/// A dataset's contract snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub dataset: String,
    pub schema_id: u32,
    /// Contract field name → column name (identity unless renamed).
    pub mapping: BTreeMap<String, String>,
}

/// The source position of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// A row to write: its values in column order, and where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub position: Position,
    pub values: Vec<SqlValue>,
}

/// Rows of a loader batch on their way to the warehouse.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Typed rows (either dialect).
    Rows(Vec<Row>),
    /// Rows already in PostgreSQL's COPY text format, source position last
    /// (see [`crate::copy`]); PostgreSQL only.
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

/// A connection pool to the warehouse.
#[derive(Debug, Clone)]
pub enum Warehouse {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

const POSITION_COLUMNS: [&str; 2] = ["_mend_partition", "_mend_offset"];

/// Records a loader batch's quarantined offsets and next offsets in the
/// batch's transaction. The SQL is the same on both dialects but for the name
/// of the two-argument maximum (`$max`).
macro_rules! bookkeeping {
    ($tx:expr, $target:expr, $bookkeeping:expr, $max:literal) => {{
        let (batch, bookkeeping): (&LoadTarget, &Bookkeeping) = ($target, $bookkeeping);
        for record in &bookkeeping.quarantined {
            sqlx::query(
                "INSERT INTO mend_quarantined (dataset, topic, partition_id, source_offset, writer_schema_id, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(&batch.dataset)
            .bind(&batch.topic)
            .bind(record.position.partition)
            .bind(record.position.offset)
            .bind(record.writer.map(i64::from))
            .bind(record.payload.as_deref())
            .execute(&mut *$tx)
            .await?;
        }
        // Quarantined records this batch loaded after all (a re-delivery
        // under a contract that has moved since): claimed here, or the batch
        // fails if a replay loaded one meanwhile (the retry skips it).
        for position in &bookkeeping.reloaded {
            let claimed = sqlx::query(
                "UPDATE mend_quarantined SET loaded = TRUE WHERE dataset = $1 AND topic = $2 AND partition_id = $3 \
                 AND source_offset = $4 AND NOT loaded",
            )
            .bind(&batch.dataset)
            .bind(&batch.topic)
            .bind(position.partition)
            .bind(position.offset)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            if claimed != 1 {
                return Err(WarehouseError::Invalid(format!(
                    "quarantined record {}:{} of {} was loaded by a replay while this batch judged it again",
                    position.partition, position.offset, batch.topic
                )));
            }
        }
        for (partition, next) in &bookkeeping.next_offsets {
            sqlx::query(concat!(
                "INSERT INTO mend_offsets (dataset, topic, partition_id, next_offset) VALUES ($1, $2, $3, $4) ",
                "ON CONFLICT (dataset, topic, partition_id) DO UPDATE SET next_offset = ",
                $max,
                "(mend_offsets.next_offset, excluded.next_offset)"
            ))
            .bind(&batch.dataset)
            .bind(&batch.topic)
            .bind(*partition)
            .bind(*next)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

impl Warehouse {
    /// Connects and creates mend's own tables when missing.
    pub async fn connect(url: &str) -> Result<Self, WarehouseError> {
        let warehouse = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool =
                PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            Self::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            if let Some(path) = url.strip_prefix("sqlite://").and_then(|p| std::path::Path::new(p).parent())
                && !path.as_os_str().is_empty()
            {
                std::fs::create_dir_all(path)
                    .map_err(|e| WarehouseError::Invalid(format!("cannot create {}: {e}", path.display())))?;
            }
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
            Self::Sqlite(pool)
        } else {
            return Err(WarehouseError::Url(url.to_owned()));
        };
        warehouse.create_state_tables().await?;
        Ok(warehouse)
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Creates mend's own tables, and adds the columns later versions need.
    /// On PostgreSQL what exists is looked up first, so a role that may only
    /// read and write these tables connects (CREATE TABLE IF NOT EXISTS needs
    /// the right to create in the schema even when the table exists).
    async fn create_state_tables(&self) -> Result<(), WarehouseError> {
        let tables = [
            (
                "mend_offsets",
                "CREATE TABLE IF NOT EXISTS mend_offsets (dataset TEXT NOT NULL, topic TEXT NOT NULL, \
                 partition_id INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (dataset, topic, partition_id))",
            ),
            (
                "mend_quarantined",
                "CREATE TABLE IF NOT EXISTS mend_quarantined (dataset TEXT NOT NULL, topic TEXT NOT NULL, \
                 partition_id INTEGER NOT NULL, source_offset BIGINT NOT NULL, writer_schema_id BIGINT, \
                 PRIMARY KEY (dataset, topic, partition_id, source_offset))",
            ),
            (
                "mend_contracts",
                "CREATE TABLE IF NOT EXISTS mend_contracts (dataset TEXT PRIMARY KEY, schema_id BIGINT NOT NULL, \
                 mapping TEXT NOT NULL, updated_by TEXT NOT NULL)",
            ),
            (
                "mend_applied",
                "CREATE TABLE IF NOT EXISTS mend_applied (proposal_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, \
                 dataset TEXT NOT NULL, statements INTEGER NOT NULL)",
            ),
        ];
        for (table, create) in tables {
            let exists = match self {
                Self::Postgres(pool) => {
                    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                        .bind(table)
                        .fetch_one(pool)
                        .await?
                }
                Self::Sqlite(_) => false,
            };
            if !exists {
                self.execute(create).await?;
            }
        }
        // Warehouses created before mend_quarantined recorded writer
        // schemas and the quarantined bytes.
        self.ensure_column("mend_quarantined", "writer_schema_id", "BIGINT", "BIGINT").await?;
        self.ensure_column("mend_quarantined", "payload", "BYTEA", "BLOB").await?;
        self.ensure_column(
            "mend_quarantined",
            "loaded",
            "BOOLEAN NOT NULL DEFAULT FALSE",
            "INTEGER NOT NULL DEFAULT 0",
        )
        .await?;
        Ok(())
    }

    /// Adds a column to one of mend's own tables when it is missing. Looked
    /// up first: PostgreSQL lets only the table's owner run ALTER TABLE, even
    /// one that changes nothing, and a role with only the rights to read and
    /// write mend's tables must be able to connect.
    async fn ensure_column(&self, table: &str, column: &str, pg: &str, sqlite: &str) -> Result<(), WarehouseError> {
        let (present, add): (i64, String) = match self {
            Self::Postgres(pool) => (
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() \
                     AND table_name = $1 AND column_name = $2",
                )
                .bind(table)
                .bind(column)
                .fetch_one(pool)
                .await?,
                format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {pg}"),
            ),
            Self::Sqlite(pool) => (
                sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2")
                    .bind(table)
                    .bind(column)
                    .fetch_one(pool)
                    .await?,
                format!("ALTER TABLE {table} ADD COLUMN {column} {sqlite}"),
            ),
        };
        if present == 0 {
            match self.execute(&add).await {
                // Another process connecting at the same moment added it
                // first (SQLite has no ADD COLUMN IF NOT EXISTS).
                Err(WarehouseError::Sql(sqlx::Error::Database(e))) if e.message().contains("duplicate column name") => {
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn execute(&self, statement: &str) -> Result<(), WarehouseError> {
        match self {
            Self::Postgres(pool) => {
                // Concurrent CREATE TABLE IF NOT EXISTS can race on PostgreSQL's catalog.
                match sqlx::query(dynamic(statement)).execute(pool).await {
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {}
                    other => {
                        other?;
                    }
                }
            }
            Self::Sqlite(pool) => {
                sqlx::query(dynamic(statement)).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// The contract of `dataset`, if it has one.
    pub async fn contract(&self, dataset: &str) -> Result<Option<Contract>, WarehouseError> {
        let sql = "SELECT schema_id, mapping FROM mend_contracts WHERE dataset = $1";
        let row = match self {
            Self::Postgres(pool) => sqlx::query(dynamic(sql)).bind(dataset).fetch_optional(pool).await?.map(|r| {
                let id: i64 = r.get(0);
                let mapping: String = r.get(1);
                (id, mapping)
            }),
            Self::Sqlite(pool) => sqlx::query(dynamic(sql)).bind(dataset).fetch_optional(pool).await?.map(|r| {
                let id: i64 = r.get(0);
                let mapping: String = r.get(1);
                (id, mapping)
            }),
        };
        row.map(|(id, mapping)| {
            Ok(Contract {
                dataset: dataset.to_owned(),
                schema_id: u32::try_from(id).map_err(|e| WarehouseError::Invalid(e.to_string()))?,
                mapping: serde_json::from_str(&mapping).map_err(|e| WarehouseError::Invalid(e.to_string()))?,
            })
        })
        .transpose()
    }

    /// The columns of `table` from the database catalog, in table order
    /// (mend's position columns excluded). Empty when the table is missing.
    pub async fn columns(&self, table: &str) -> Result<Vec<Column>, WarehouseError> {
        let columns = match self {
            // format_type gives the declared type with its modifiers
            // (numeric(10,2), character varying(20)), which guardrails compare.
            Self::Postgres(pool) => sqlx::query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
            )
            .bind(table)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| Column { name: r.get(0), sql_type: r.get(1), nullable: r.get(2) })
            .collect::<Vec<_>>(),
            Self::Sqlite(pool) => sqlx::query("SELECT name, type, \"notnull\" FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    let not_null: i64 = r.get(2);
                    Column { name: r.get(0), sql_type: r.get(1), nullable: not_null == 0 }
                })
                .collect(),
        };
        Ok(columns.into_iter().filter(|c| !POSITION_COLUMNS.contains(&c.name.as_str())).collect())
    }

    /// Creates the destination table and the dataset's first contract, in one
    /// transaction, unless the dataset already has a contract. Returns the
    /// contract in force.
    pub async fn establish(
        &self,
        dataset: &str,
        table: &str,
        key: &[String],
        columns: &[Column],
        contract: &Contract,
    ) -> Result<Contract, WarehouseError> {
        let create = create_table_sql(self.dialect(), table, key, columns);
        let mapping = serde_json::to_string(&contract.mapping).map_err(|e| WarehouseError::Invalid(e.to_string()))?;
        let insert = "INSERT INTO mend_contracts (dataset, schema_id, mapping, updated_by) VALUES ($1, $2, $3, 'loader') \
                      ON CONFLICT (dataset) DO NOTHING";
        macro_rules! run {
            ($pool:expr, $lock:expr) => {{
                let mut tx = $pool.begin().await?;
                if let Some(lock) = $lock {
                    // Serialises concurrent loaders establishing one dataset.
                    sqlx::query(dynamic(lock)).bind(dataset).execute(&mut *tx).await?;
                }
                sqlx::query(dynamic(&create)).execute(&mut *tx).await?;
                sqlx::query(dynamic(insert))
                    .bind(dataset)
                    .bind(i64::from(contract.schema_id))
                    .bind(&mapping)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }};
        }
        match self {
            Self::Postgres(pool) => run!(pool, Some("SELECT pg_advisory_xact_lock(hashtext($1))")),
            Self::Sqlite(pool) => run!(pool, None::<&str>),
        }
        self.contract(dataset).await?.ok_or_else(|| WarehouseError::Invalid(format!("contract of {dataset} vanished")))
    }

    /// Next offsets stored for `dataset` (topic, partition) → next offset.
    pub async fn offsets(&self, dataset: &str) -> Result<HashMap<(String, i32), i64>, WarehouseError> {
        let sql = "SELECT topic, partition_id, next_offset FROM mend_offsets WHERE dataset = $1";
        let rows: Vec<(String, i32, i64)> = match self {
            Self::Postgres(pool) => sqlx::query_as(dynamic(sql)).bind(dataset).fetch_all(pool).await?,
            Self::Sqlite(pool) => sqlx::query_as(dynamic(sql)).bind(dataset).fetch_all(pool).await?,
        };
        Ok(rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
    }

    /// Every source position of `dataset` the loader quarantined with writer
    /// schema `writer`: what the replay of that incident must find.
    pub async fn quarantined_positions(
        &self,
        dataset: &str,
        writer: u32,
    ) -> Result<BTreeSet<(i32, i64)>, WarehouseError> {
        let sql =
            "SELECT partition_id, source_offset FROM mend_quarantined WHERE dataset = $1 AND writer_schema_id = $2";
        let rows: Vec<(i32, i64)> = match self {
            Self::Postgres(pool) => sqlx::query_as(sql).bind(dataset).bind(i64::from(writer)).fetch_all(pool).await?,
            Self::Sqlite(pool) => sqlx::query_as(sql).bind(dataset).bind(i64::from(writer)).fetch_all(pool).await?,
        };
        Ok(rows.into_iter().collect())
    }

    /// The records of `dataset` the loader quarantined with writer schema
    /// `writer`, in source order: (partition, offset, bytes). Bytes are None
    /// for records quarantined before the warehouse kept them.
    pub async fn quarantined_records(
        &self,
        dataset: &str,
        writer: u32,
    ) -> Result<Vec<(i32, i64, Option<Vec<u8>>)>, WarehouseError> {
        let sql = "SELECT partition_id, source_offset, payload FROM mend_quarantined \
                   WHERE dataset = $1 AND writer_schema_id = $2 ORDER BY partition_id, source_offset";
        Ok(match self {
            Self::Postgres(pool) => sqlx::query_as(sql).bind(dataset).bind(i64::from(writer)).fetch_all(pool).await?,
            Self::Sqlite(pool) => sqlx::query_as(sql).bind(dataset).bind(i64::from(writer)).fetch_all(pool).await?,
        })
    }

    /// How many records of `dataset` the loader quarantined, per writer schema.
    pub async fn quarantine_counts(&self, dataset: &str) -> Result<HashMap<u32, i64>, WarehouseError> {
        let sql = "SELECT writer_schema_id, COUNT(*) FROM mend_quarantined WHERE dataset = $1 \
                   AND writer_schema_id IS NOT NULL GROUP BY writer_schema_id";
        let rows: Vec<(i64, i64)> = match self {
            Self::Postgres(pool) => sqlx::query_as(sql).bind(dataset).fetch_all(pool).await?,
            Self::Sqlite(pool) => sqlx::query_as(sql).bind(dataset).fetch_all(pool).await?,
        };
        Ok(rows.into_iter().filter_map(|(writer, count)| Some((u32::try_from(writer).ok()?, count))).collect())
    }

    /// Offsets of `topic` below `below` the loader quarantined and nobody
    /// has loaded since: a re-delivered batch judges these again.
    pub async fn quarantined(
        &self,
        dataset: &str,
        topic: &str,
        partition: i32,
        below: i64,
    ) -> Result<HashSet<i64>, WarehouseError> {
        let sql = "SELECT source_offset FROM mend_quarantined WHERE dataset = $1 AND topic = $2 AND partition_id = $3 \
                   AND source_offset < $4 AND NOT loaded";
        let rows: Vec<(i64,)> = match self {
            Self::Postgres(pool) => {
                sqlx::query_as(dynamic(sql))
                    .bind(dataset)
                    .bind(topic)
                    .bind(partition)
                    .bind(below)
                    .fetch_all(pool)
                    .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_as(dynamic(sql))
                    .bind(dataset)
                    .bind(topic)
                    .bind(partition)
                    .bind(below)
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(rows.into_iter().map(|(o,)| o).collect())
    }

    /// Writes a loader batch in one transaction: its rows, arriving in chunks
    /// (written as they arrive), then the quarantined records and the next
    /// offsets of every partition, which `done` delivers once every chunk is
    /// sent. Nothing is committed when `done` is dropped unsent.
    pub async fn load_batch(
        &self,
        target: &LoadTarget,
        chunks: impl Stream<Item = Chunk> + Unpin,
        done: tokio::sync::oneshot::Receiver<Bookkeeping>,
    ) -> Result<(), WarehouseError> {
        let incomplete = || WarehouseError::Invalid("the loader batch ended before its bookkeeping".into());
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let text = chunks.map(|chunk| match chunk {
                    Chunk::Rows(rows) => {
                        let mut text = Vec::with_capacity(rows.len() * 64);
                        copy::encode_rows(&rows, &mut text);
                        text
                    }
                    Chunk::Copy(text) => text,
                });
                pg_write(&mut tx, &target.table, &target.key, &target.columns, text, WriteMode::Load).await?;
                let bookkeeping = done.await.map_err(|_| incomplete())?;
                bookkeeping!(tx, target, &bookkeeping, "GREATEST");
                tx.commit().await?;
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut chunks = chunks;
                while let Some(chunk) = chunks.next().await {
                    let Chunk::Rows(rows) = chunk else {
                        return Err(WarehouseError::Invalid("COPY text sent to a SQLite warehouse".into()));
                    };
                    sqlite_write(&mut tx, &target.table, &target.key, &target.columns, &rows, WriteMode::Load).await?;
                }
                let bookkeeping = done.await.map_err(|_| incomplete())?;
                bookkeeping!(tx, target, &bookkeeping, "MAX");
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Writes replayed rows of quarantined records, each at most once: in
    /// one transaction, claims their positions in `mend_quarantined` (a
    /// position loaded before is not claimed again) and writes the rows it
    /// claimed. Rows must have distinct positions. Returns how many were
    /// written now.
    pub async fn replay_rows(&self, target: &LoadTarget, rows: &[Row]) -> Result<usize, WarehouseError> {
        let LoadTarget { dataset, topic, table, key, columns } = target;
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let (partitions, offsets): (Vec<i32>, Vec<i64>) =
                    rows.iter().map(|r| (r.position.partition, r.position.offset)).unzip();
                let claimed: HashSet<(i32, i64)> = sqlx::query_as(
                    "INSERT INTO mend_quarantined (dataset, topic, partition_id, source_offset, loaded) \
                     SELECT $1, $2, p, o, TRUE FROM UNNEST($3::int4[], $4::int8[]) AS r(p, o) \
                     ON CONFLICT (dataset, topic, partition_id, source_offset) DO UPDATE SET loaded = TRUE \
                     WHERE NOT mend_quarantined.loaded RETURNING partition_id, source_offset",
                )
                .bind(dataset)
                .bind(topic)
                .bind(&partitions)
                .bind(&offsets)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
                let mut text = Vec::with_capacity(claimed.len() * 64);
                for row in rows.iter().filter(|r| claimed.contains(&(r.position.partition, r.position.offset))) {
                    copy::encode_row(row, &mut text);
                }
                pg_write(&mut tx, table, key, columns, futures::stream::iter([text]), WriteMode::Replay).await?;
                tx.commit().await?;
                Ok(claimed.len())
            }
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut claimed = Vec::with_capacity(rows.len());
                for row in rows {
                    let inserted_or_updated = sqlx::query(
                        "INSERT INTO mend_quarantined (dataset, topic, partition_id, source_offset, loaded) \
                         VALUES ($1, $2, $3, $4, 1) ON CONFLICT (dataset, topic, partition_id, source_offset) \
                         DO UPDATE SET loaded = 1 WHERE NOT mend_quarantined.loaded",
                    )
                    .bind(dataset)
                    .bind(topic)
                    .bind(row.position.partition)
                    .bind(row.position.offset)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted_or_updated == 1 {
                        claimed.push(row.clone());
                    }
                }
                sqlite_write(&mut tx, table, key, columns, &claimed, WriteMode::Replay).await?;
                tx.commit().await?;
                Ok(claimed.len())
            }
        }
    }

    /// Runs `statements` in a transaction that is rolled back: a plan that
    /// fails here fails before anything is changed.
    pub async fn dry_run(&self, statements: &[String]) -> Result<(), WarehouseError> {
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                for statement in statements {
                    sqlx::query(dynamic(statement)).execute(&mut *tx).await?;
                }
                tx.rollback().await?;
            }};
        }
        match self {
            Self::Postgres(pool) => run!(pool),
            Self::Sqlite(pool) => run!(pool),
        }
        Ok(())
    }

    /// How many plans of `dataset` have been applied.
    pub async fn applied_count(&self, dataset: &str) -> Result<i64, WarehouseError> {
        let sql = "SELECT COUNT(*) FROM mend_applied WHERE dataset = $1";
        Ok(match self {
            Self::Postgres(pool) => sqlx::query_scalar(dynamic(sql)).bind(dataset).fetch_one(pool).await?,
            Self::Sqlite(pool) => sqlx::query_scalar(dynamic(sql)).bind(dataset).fetch_one(pool).await?,
        })
    }

    /// Whether a proposal has been applied already.
    pub async fn applied(&self, proposal_id: &str) -> Result<bool, WarehouseError> {
        let sql = "SELECT 1 FROM mend_applied WHERE proposal_id = $1";
        Ok(match self {
            Self::Postgres(pool) => sqlx::query(dynamic(sql)).bind(proposal_id).fetch_optional(pool).await?.is_some(),
            Self::Sqlite(pool) => sqlx::query(dynamic(sql)).bind(proposal_id).fetch_optional(pool).await?.is_some(),
        })
    }

    /// Applies a plan exactly once: its statements, the contract move and the
    /// record of the proposal, in one transaction. Returns false when the
    /// proposal was already applied (nothing is done again).
    pub async fn apply(&self, application: &Apply<'_>) -> Result<bool, WarehouseError> {
        let mapping =
            serde_json::to_string(&application.contract.mapping).map_err(|e| WarehouseError::Invalid(e.to_string()))?;
        let record = "INSERT INTO mend_applied (proposal_id, decision_id, dataset, statements) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (proposal_id) DO NOTHING";
        let contract = "INSERT INTO mend_contracts (dataset, schema_id, mapping, updated_by) VALUES ($1, $2, $3, $4) \
                        ON CONFLICT (dataset) DO UPDATE SET schema_id = excluded.schema_id, mapping = excluded.mapping, \
                        updated_by = excluded.updated_by";
        let statements = i32::try_from(application.statements.len()).unwrap_or(i32::MAX);
        macro_rules! run {
            ($pool:expr, $lock:expr) => {{
                let mut tx = $pool.begin().await?;
                if let Some(lock) = $lock {
                    sqlx::query(dynamic(lock)).bind(application.contract.dataset.as_str()).execute(&mut *tx).await?;
                }
                let recorded = sqlx::query(dynamic(record))
                    .bind(application.proposal_id)
                    .bind(application.decision_id)
                    .bind(application.contract.dataset.as_str())
                    .bind(statements)
                    .execute(&mut *tx)
                    .await?;
                if recorded.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for statement in application.statements {
                    sqlx::query(dynamic(statement)).execute(&mut *tx).await?;
                }
                sqlx::query(dynamic(contract))
                    .bind(application.contract.dataset.as_str())
                    .bind(i64::from(application.contract.schema_id))
                    .bind(&mapping)
                    .bind(application.decision_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }};
        }
        match self {
            Self::Postgres(pool) => run!(pool, Some("SELECT pg_advisory_xact_lock(hashtext($1))")),
            Self::Sqlite(pool) => run!(pool, None::<&str>),
        }
    }

    /// Every row of `table` as text (NULL as None), `columns` in order: for
    /// verification in reports and tests, not for data paths.
    pub async fn rows_as_text(
        &self,
        table: &str,
        columns: &[&str],
    ) -> Result<Vec<Vec<Option<String>>>, WarehouseError> {
        let cast = |c: &&str| match self {
            Self::Postgres(_) => format!("{}::text", quote(c)),
            Self::Sqlite(_) => format!("CAST({} AS TEXT)", quote(c)),
        };
        let sql = format!("SELECT {} FROM {}", columns.iter().map(cast).collect::<Vec<_>>().join(", "), quote(table));
        let width = columns.len();
        Ok(match self {
            Self::Postgres(pool) => sqlx::query(dynamic(&sql))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| (0..width).map(|i| r.get::<Option<String>, _>(i)).collect())
                .collect(),
            Self::Sqlite(pool) => sqlx::query(dynamic(&sql))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| (0..width).map(|i| r.get::<Option<String>, _>(i)).collect())
                .collect(),
        })
    }

    /// Up to `limit` distinct values of one column, as text (evidence for
    /// rename scoring). Empty when the table or column is missing.
    pub async fn column_values(&self, table: &str, column: &str, limit: i64) -> Result<Vec<String>, WarehouseError> {
        let sql = match self {
            Self::Postgres(_) => format!(
                "SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL LIMIT $1",
                c = quote(column),
                t = quote(table)
            ),
            Self::Sqlite(_) => format!(
                "SELECT DISTINCT CAST({c} AS TEXT) FROM {t} WHERE {c} IS NOT NULL LIMIT $1",
                c = quote(column),
                t = quote(table)
            ),
        };
        let result = match self {
            Self::Postgres(pool) => sqlx::query_scalar(dynamic(&sql)).bind(limit).fetch_all(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(dynamic(&sql)).bind(limit).fetch_all(pool).await,
        };
        match result {
            Ok(values) => Ok(values),
            // The column was dropped or never existed: no evidence.
            Err(sqlx::Error::Database(_)) => Ok(Vec::new()),
            Err(other) => Err(other.into()),
        }
    }

    /// Counts the rows of a table (for reports and tests).
    pub async fn count(&self, table: &str) -> Result<i64, WarehouseError> {
        let sql = format!("SELECT COUNT(*) FROM {}", quote(table));
        Ok(match self {
            Self::Postgres(pool) => sqlx::query_scalar(dynamic(&sql)).fetch_one(pool).await?,
            Self::Sqlite(pool) => sqlx::query_scalar(dynamic(&sql)).fetch_one(pool).await?,
        })
    }
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
    pub next_offsets: Vec<(i32, i64)>,
}

/// A record the loader quarantined: kept with its bytes in the warehouse (in
/// the batch's transaction), so its incident's replay reads exactly these.
#[derive(Debug, Clone)]
pub struct QuarantinedRecord {
    pub position: Position,
    /// Its writer schema, when it had one.
    pub writer: Option<u32>,
    /// Its value bytes (Confluent wire format).
    pub payload: Option<Vec<u8>>,
}

/// An approved plan, ready to apply.
#[derive(Debug)]
pub struct Apply<'a> {
    pub proposal_id: &'a str,
    pub decision_id: &'a str,
    pub statements: &'a [String],
    pub contract: &'a Contract,
}

/// SQL built at run time from quoted identifiers and mend's own templates
/// (never from record values, which are always bound or COPY-escaped).
fn dynamic(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_owned())
}

/// Quotes an identifier for either dialect.
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn create_table_sql(dialect: Dialect, table: &str, key: &[String], columns: &[Column]) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            // SQLite cannot relax NOT NULL later without rebuilding the table
            // (a removed field would then stall the loader), so there only
            // key columns are NOT NULL; the contract still types the values.
            let required = key.contains(&c.name) || (dialect == Dialect::Postgres && !c.nullable);
            let null = if required { " NOT NULL" } else { "" };
            format!("{} {}{null}", quote(&c.name), c.sql_type)
        })
        .collect();
    let (int, big) = match dialect {
        Dialect::Postgres => ("INTEGER", "BIGINT"),
        Dialect::Sqlite => ("INTEGER", "INTEGER"),
    };
    parts.push(format!("_mend_partition {int} NOT NULL"));
    parts.push(format!("_mend_offset {big} NOT NULL"));
    if !key.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")));
    }
    format!("CREATE TABLE IF NOT EXISTS {} ({})", quote(table), parts.join(", "))
}

fn all_columns(columns: &[String]) -> Vec<String> {
    columns.iter().map(|c| quote(c)).chain(POSITION_COLUMNS.iter().map(|c| (*c).to_owned())).collect()
}

/// `ON CONFLICT` clause: keyed rows are replaced only by later positions;
/// append-only replays skip rows already present.
fn conflict_clause(table: &str, key: &[String], columns: &[String], mode: WriteMode) -> String {
    if key.is_empty() {
        return match mode {
            WriteMode::Load => String::new(),
            // Claims keep replayed rows unique; a table created by an earlier
            // mend also has a unique index on the position, which this honours.
            WriteMode::Replay => " ON CONFLICT DO NOTHING".into(),
        };
    }
    let keys = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let set = all_columns(columns)
        .into_iter()
        .filter(|c| !key.iter().any(|k| quote(k) == *c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let t = quote(table);
    format!(
        " ON CONFLICT ({keys}) DO UPDATE SET {set} WHERE {t}._mend_partition <> excluded._mend_partition \
         OR {t}._mend_offset <= excluded._mend_offset"
    )
}

/// Writes rows arriving in chunks of COPY text: COPY streams each chunk to
/// PostgreSQL as it comes, so the server parses one chunk while the next is
/// decoded.
async fn pg_write(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    key: &[String],
    columns: &[String],
    mut chunks: impl Stream<Item = Vec<u8>> + Unpin,
    mode: WriteMode,
) -> Result<(), WarehouseError> {
    let names = all_columns(columns).join(", ");
    let direct = key.is_empty() && mode == WriteMode::Load;
    let first = loop {
        match chunks.next().await {
            Some(chunk) if !chunk.is_empty() => break chunk,
            Some(_) => {}
            None => return Ok(()), // no rows
        }
    };
    let target = if direct {
        // Append-only: COPY straight into the table.
        quote(table)
    } else {
        // Keyed, or a replay: COPY into a staging table, then one statement.
        sqlx::query("DROP TABLE IF EXISTS pg_temp._mend_stage").execute(&mut **tx).await?;
        sqlx::query(dynamic(&format!(
            "CREATE TEMP TABLE _mend_stage ON COMMIT DROP AS SELECT {names} FROM {} WITH NO DATA",
            quote(table)
        )))
        .execute(&mut **tx)
        .await?;
        "_mend_stage".to_owned()
    };
    let mut copy = tx.copy_in_raw(&format!("COPY {target} ({names}) FROM STDIN")).await?;
    copy.send(first).await?;
    while let Some(chunk) = chunks.next().await {
        if !chunk.is_empty() {
            copy.send(chunk).await?;
        }
    }
    copy.finish().await?;
    if direct {
        return Ok(());
    }
    // Within a batch, the latest record of a key wins.
    let select = if key.is_empty() {
        format!("SELECT {names} FROM _mend_stage")
    } else {
        let keys = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        format!(
            "SELECT DISTINCT ON ({keys}) {names} FROM _mend_stage ORDER BY {keys}, _mend_partition, _mend_offset DESC"
        )
    };
    let statement =
        format!("INSERT INTO {} ({names}) {select}{}", quote(table), conflict_clause(table, key, columns, mode));
    sqlx::query(dynamic(&statement)).execute(&mut **tx).await?;
    Ok(())
}

async fn sqlite_write(
    tx: &mut Transaction<'_, Sqlite>,
    table: &str,
    key: &[String],
    columns: &[String],
    rows: &[Row],
    mode: WriteMode,
) -> Result<(), WarehouseError> {
    if rows.is_empty() {
        return Ok(());
    }
    let names = all_columns(columns);
    let width = names.len();
    let placeholders = format!("({})", vec!["?"; width].join(", "));
    let conflict = conflict_clause(table, key, columns, mode);
    // Within a batch, the latest record of a key wins: write in position
    // order and let the conflict clause keep the later one.
    let mut ordered: Vec<&Row> = rows.iter().collect();
    ordered.sort_by_key(|r| (r.position.partition, r.position.offset));
    // SQLite caps bound parameters (32766); stay well below.
    let per_statement = (30_000 / width).max(1);
    for chunk in ordered.chunks(per_statement) {
        let values = vec![placeholders.as_str(); chunk.len()].join(", ");
        let sql = format!("INSERT INTO {} ({}) VALUES {values}{conflict}", quote(table), names.join(", "));
        let mut query = sqlx::query(dynamic(&sql));
        for row in chunk {
            for value in &row.values {
                query = match value {
                    SqlValue::Null => query.bind(None::<String>),
                    SqlValue::Bool(b) => query.bind(*b),
                    SqlValue::Int(i) => query.bind(*i),
                    SqlValue::Float(f) => query.bind(*f),
                    SqlValue::Bytes(b) => query.bind(b.clone()),
                    SqlValue::Text(s)
                    | SqlValue::Json(s)
                    | SqlValue::Timestamp(s)
                    | SqlValue::Date(s)
                    | SqlValue::Decimal(s) => query.bind(s.clone()),
                };
            }
            query = query.bind(row.position.partition).bind(row.position.offset);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_conflicts_keep_the_latest_position() {
        let clause = conflict_clause("orders", &["id".into()], &["id".into(), "email".into()], WriteMode::Load);
        assert!(clause.contains("ON CONFLICT (\"id\") DO UPDATE SET \"email\" = excluded.\"email\""));
        assert!(clause.contains("\"orders\"._mend_offset <= excluded._mend_offset"));
        assert_eq!(conflict_clause("t", &[], &["a".into()], WriteMode::Load), "");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
    }
}
