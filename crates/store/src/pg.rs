//! The PostgreSQL engine: COPY for loading (straight into append-only
//! tables, through a staging table and one upsert for keyed ones and
//! replays), `UNNEST` claims for replays, advisory locks per dataset, and
//! catalog look-ups that let a role with only table rights connect.

use std::collections::HashSet;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use mend_model::{Column, Row};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres as Pg, Transaction};

use crate::sql::{
    ADDED_COLUMNS, POSITION_COLUMNS, STATE_TABLES, all_columns, bookkeeping, conflict_clause, dynamic, quote,
};
use crate::{Bookkeeping, Chunk, LoadTarget, Store, StoreError, WriteMode};

/// Serialises writers of one dataset's contract (establish, apply).
const DATASET_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");

/// A PostgreSQL warehouse.
#[derive(Debug, Clone)]
pub struct Postgres {
    pool: PgPool,
}

impl Postgres {
    /// Closes the pool (see [`crate::Warehouse::close`]).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
        Ok(Self { pool })
    }

    /// Runs one of mend's own DDL statements; concurrent CREATE TABLE IF
    /// NOT EXISTS can race on PostgreSQL's catalog (a unique violation).
    async fn execute(&self, statement: &str) -> Result<(), StoreError> {
        match sqlx::query(dynamic(statement)).execute(&self.pool).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
            other => other.map(drop).map_err(StoreError::from),
        }
    }
}

impl Store for Postgres {
    crate::sql::portable_methods!();

    /// What exists is looked up first, so a role that may only read and
    /// write these tables connects: CREATE TABLE IF NOT EXISTS and ALTER
    /// TABLE … ADD COLUMN IF NOT EXISTS need the owner's rights even when
    /// they change nothing.
    async fn create_state_tables(&self) -> Result<(), StoreError> {
        for (table, create) in STATE_TABLES {
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(&self.pool).await?;
            if !exists {
                self.execute(create).await?;
            }
        }
        for (table, column, sql_type, _) in ADDED_COLUMNS {
            let present: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = $1 AND column_name = $2",
            )
            .bind(table)
            .bind(column)
            .fetch_one(&self.pool)
            .await?;
            if present == 0 {
                self.execute(&format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")).await?;
            }
        }
        Ok(())
    }

    async fn columns(&self, table: &str) -> Result<Vec<Column>, StoreError> {
        // format_type gives the declared type with its modifiers
        // (numeric(10,2), character varying(20)), which guardrails compare.
        let columns = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull FROM pg_attribute a \
             WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| Column { name: r.get(0), sql_type: r.get(1), nullable: r.get(2) });
        Ok(columns.filter(|c| !POSITION_COLUMNS.contains(&c.name.as_str())).collect())
    }

    async fn load_batch(
        &self,
        target: &LoadTarget,
        chunks: impl Stream<Item = Chunk> + Unpin + Send,
        done: tokio::sync::oneshot::Receiver<Bookkeeping>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let text = chunks.map(|chunk| match chunk {
            Chunk::Rows(rows) => {
                let mut text = Vec::with_capacity(rows.len() * 64);
                mend_avro::copy::encode_rows(&rows, &mut text);
                text
            }
            Chunk::Copy(text) => text,
        });
        write(&mut tx, target, text, WriteMode::Load).await?;
        let bookkeeping =
            done.await.map_err(|_| StoreError::Invalid("the loader batch ended before its bookkeeping".into()))?;
        bookkeeping!(tx, target, &bookkeeping, "GREATEST");
        tx.commit().await?;
        Ok(())
    }

    async fn replay_rows(&self, target: &LoadTarget, rows: &[Row]) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (partitions, offsets): (Vec<i32>, Vec<i64>) =
            rows.iter().map(|r| (r.position.partition, r.position.offset)).unzip();
        let claimed: HashSet<(i32, i64)> = sqlx::query_as(
            "INSERT INTO mend_quarantined (dataset, topic, partition_id, source_offset, loaded) \
             SELECT $1, $2, p, o, TRUE FROM UNNEST($3::int4[], $4::int8[]) AS r(p, o) \
             ON CONFLICT (dataset, topic, partition_id, source_offset) DO UPDATE SET loaded = TRUE \
             WHERE NOT mend_quarantined.loaded RETURNING partition_id, source_offset",
        )
        .bind(&target.dataset)
        .bind(&target.topic)
        .bind(&partitions)
        .bind(&offsets)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut text = Vec::with_capacity(claimed.len() * 64);
        for row in rows.iter().filter(|r| claimed.contains(&(r.position.partition, r.position.offset))) {
            mend_avro::copy::encode_row(row, &mut text);
        }
        write(&mut tx, target, futures::stream::iter([text]), WriteMode::Replay).await?;
        tx.commit().await?;
        Ok(claimed.len())
    }
}

/// Writes rows arriving in chunks of COPY text: COPY streams each chunk to
/// PostgreSQL as it comes, so the server parses one chunk while the next is
/// decoded.
async fn write(
    tx: &mut Transaction<'_, Pg>,
    target: &LoadTarget,
    mut chunks: impl Stream<Item = Vec<u8>> + Unpin,
    mode: WriteMode,
) -> Result<(), StoreError> {
    let LoadTarget { table, key, columns, .. } = target;
    let names = all_columns(columns).join(", ");
    let direct = key.is_empty() && mode == WriteMode::Load;
    let first = loop {
        match chunks.next().await {
            Some(chunk) if !chunk.is_empty() => break chunk,
            Some(_) => {}
            None => return Ok(()), // no rows
        }
    };
    let destination = if direct {
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
    let mut copy = tx.copy_in_raw(&format!("COPY {destination} ({names}) FROM STDIN")).await?;
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
