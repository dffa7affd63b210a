//! The SQLite engine (the embedded default warehouse): a WAL file with a
//! busy timeout, multi-row `INSERT`s in position order for loading, a
//! per-row claim for replays, and `sqlite_schema` as the catalog a plan's
//! dry run is proven on ([`crate::proof`]).

use std::str::FromStr;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use mend_model::{Column, Row, SqlValue};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite as Lite, Transaction};

use crate::cost::{Probe, Size};
use crate::guard::Target;
use crate::proof::{self, Entry, Rule};
use crate::sql::{POSITION_COLUMNS, all_columns, bookkeeping, conflict_clause, dynamic, quote, state_tables};
use crate::{Bookkeeping, Chunk, DryRun, LoadTarget, Store, StoreError, WriteMode};

/// SQLite serialises writers itself.
const DATASET_LOCK: Option<&str> = None;

/// SQLite has no lock or statement timeouts: a writer waits its busy
/// timeout.
const LIMITS: Option<&str> = None;

/// SQLite has no search path.
const SEARCH_PATH: Option<&str> = None;

/// `sqlite_schema` as proof entries: each table, index, trigger and view
/// with its SQL, belonging to its table. Only tables (the dataset's, its new
/// children) may appear or change; nothing may add an index, a trigger or a
/// view.
async fn catalog(tx: &mut Transaction<'_, Lite>) -> Result<Vec<Entry>, StoreError> {
    let rows: Vec<(String, String, String, Option<String>)> =
        sqlx::query_as("SELECT type, name, tbl_name, sql FROM sqlite_schema").fetch_all(&mut **tx).await?;
    Ok(rows
        .into_iter()
        .map(|(kind, name, table, sql)| Entry {
            plain: kind == "table",
            kind,
            label: name.clone(),
            key: name,
            scope: Some(table.to_ascii_lowercase()),
            definition: sql.unwrap_or_default(),
        })
        .collect())
}

/// A SQLite warehouse.
#[derive(Debug, Clone)]
pub struct Sqlite {
    pool: SqlitePool,
}

impl Sqlite {
    /// Closes the pool (see [`crate::Warehouse::close`]).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Opens (creating when missing) the database file of `url`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://").and_then(|p| std::path::Path::new(p).parent())
            && !path.as_os_str().is_empty()
        {
            std::fs::create_dir_all(path)
                .map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", path.display())))?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(Self { pool })
    }
}

impl Store for Sqlite {
    crate::sql::portable_methods!();

    async fn create_state_tables(&self) -> Result<(), StoreError> {
        for (_, create) in state_tables(mend_model::Dialect::Sqlite) {
            sqlx::query(dynamic(&create)).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn schema_of(&self, _table: &str) -> Result<String, StoreError> {
        Ok("main".to_owned())
    }

    /// Rows from `sqlite_stat1` (written by ANALYZE) and bytes from the
    /// `dbstat` table, each None when the database has none (never
    /// analysed; a library built without `dbstat`).
    async fn size(&self, _schema: &str, table: &str) -> Result<Size, StoreError> {
        let rows: Option<String> =
            sqlx::query_scalar("SELECT stat FROM sqlite_stat1 WHERE tbl = ?1 COLLATE NOCASE AND idx IS NULL")
                .bind(table)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten();
        let bytes: Option<i64> = sqlx::query_scalar("SELECT SUM(pgsize) FROM dbstat WHERE name = ?1 COLLATE NOCASE")
            .bind(table)
            .fetch_one(&self.pool)
            .await
            .ok()
            .flatten();
        let rows = rows.and_then(|stat| stat.split_whitespace().next().and_then(|n| n.parse().ok()));
        Ok(Size { rows, bytes })
    }

    /// SQLite changes a table's schema text only for the statements mend
    /// allows: nothing to confirm on a copy.
    async fn probe(
        &self,
        _target: &Target,
        statements: &[String],
    ) -> Result<Vec<Option<Result<Probe, String>>>, StoreError> {
        Ok(vec![None; statements.len()])
    }

    /// SQLite rewrites nothing mend allows, and its writer waits its busy
    /// timeout: `_how` changes nothing here.
    async fn prove(
        &self,
        _target: &Target,
        tables: &[String],
        statements: &[String],
        _how: DryRun,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let before = catalog(&mut tx).await?;
        for statement in statements {
            sqlx::query(dynamic(statement)).execute(&mut *tx).await?;
        }
        let after = catalog(&mut tx).await?;
        tx.rollback().await?;
        let allowed = tables.iter().map(|t| t.to_ascii_lowercase()).collect();
        let rule = |kind: &str| if kind == "table" { Rule::Change } else { Rule::Never };
        Ok(proof::findings(&before, &after, &allowed, rule))
    }

    async fn columns(&self, table: &str) -> Result<Vec<Column>, StoreError> {
        let columns = sqlx::query("SELECT name, type, \"notnull\" FROM pragma_table_info($1) ORDER BY cid")
            .bind(table)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| {
                let not_null: i64 = r.get(2);
                Column { name: r.get(0), sql_type: r.get(1), nullable: not_null == 0 }
            });
        Ok(columns.filter(|c| !POSITION_COLUMNS.contains(&c.name.as_str())).collect())
    }

    async fn load_batch(
        &self,
        target: &LoadTarget,
        mut chunks: impl Stream<Item = Chunk> + Unpin + Send,
        done: tokio::sync::oneshot::Receiver<Bookkeeping>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        while let Some(chunk) = chunks.next().await {
            let Chunk::Rows(rows) = chunk else {
                return Err(StoreError::Invalid("COPY text sent to a SQLite warehouse".into()));
            };
            write(&mut tx, target, &rows, WriteMode::Load).await?;
        }
        let bookkeeping =
            done.await.map_err(|_| StoreError::Invalid("the loader batch ended before its bookkeeping".into()))?;
        bookkeeping!(tx, target, &bookkeeping, "MAX");
        tx.commit().await?;
        Ok(())
    }

    async fn replay_rows(&self, target: &LoadTarget, rows: &[Row]) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let inserted_or_updated = sqlx::query(
                "INSERT INTO mend_quarantined (dataset, topic, partition_id, source_offset, loaded) \
                 VALUES ($1, $2, $3, $4, 1) ON CONFLICT (dataset, topic, partition_id, source_offset) \
                 DO UPDATE SET loaded = 1 WHERE NOT mend_quarantined.loaded",
            )
            .bind(&target.dataset)
            .bind(&target.topic)
            .bind(row.position.partition)
            .bind(row.position.offset)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted_or_updated == 1 {
                claimed.push(row.clone());
            }
        }
        write(&mut tx, target, &claimed, WriteMode::Replay).await?;
        tx.commit().await?;
        Ok(claimed.len())
    }
}

async fn write(
    tx: &mut Transaction<'_, Lite>,
    target: &LoadTarget,
    rows: &[Row],
    mode: WriteMode,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let LoadTarget { table, key, columns, .. } = target;
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
                    // SQLite stores a NaN REAL as NULL: it is kept as the
                    // text NaN instead (a REAL column holds text it cannot
                    // convert), as PostgreSQL spells it.
                    SqlValue::Float(f) if f.is_nan() => query.bind("NaN"),
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
