//! SQL both dialects speak alike, written once: identifiers, the tables'
//! shapes, conflict clauses, and (as macros expanded into each engine's
//! `impl Store`, since sqlx types each query by its database) the queries
//! whose text is the same on PostgreSQL and SQLite.

use mend_model::{Column, Dialect};

use crate::WriteMode;

/// Source position columns every destination table carries.
pub(crate) const POSITION_COLUMNS: [&str; 2] = ["_mend_partition", "_mend_offset"];

/// mend's own tables, created when missing: `{bytes}` and `{flag}` stand
/// for the dialect's binary and boolean (false by default) types.
const STATE_TABLES: [(&str, &str); 4] = [
    (
        "mend_offsets",
        "CREATE TABLE IF NOT EXISTS mend_offsets (dataset TEXT NOT NULL, topic TEXT NOT NULL, \
         partition_id INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (dataset, topic, partition_id))",
    ),
    (
        "mend_quarantined",
        "CREATE TABLE IF NOT EXISTS mend_quarantined (dataset TEXT NOT NULL, topic TEXT NOT NULL, \
         partition_id INTEGER NOT NULL, source_offset BIGINT NOT NULL, writer_schema_id BIGINT, \
         payload {bytes}, loaded {flag}, PRIMARY KEY (dataset, topic, partition_id, source_offset))",
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

/// mend's own tables, each with the statement creating it in `dialect`.
pub(crate) fn state_tables(dialect: Dialect) -> impl Iterator<Item = (&'static str, String)> {
    let (bytes, flag) = match dialect {
        Dialect::Postgres => ("BYTEA", "BOOLEAN NOT NULL DEFAULT FALSE"),
        Dialect::Sqlite => ("BLOB", "INTEGER NOT NULL DEFAULT 0"),
    };
    STATE_TABLES
        .into_iter()
        .map(move |(table, create)| (table, create.replace("{bytes}", bytes).replace("{flag}", flag)))
}

/// SQL built at run time from quoted identifiers and mend's own templates
/// (never from record values, which are always bound or COPY-escaped).
pub(crate) fn dynamic(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_owned())
}

/// Quotes an identifier for either dialect.
pub fn quote(identifier: &str) -> String {
    mend_model::table::quote(identifier)
}

/// `CREATE TABLE` of a destination table.
pub(crate) fn create_table(dialect: Dialect, table: &str, key: &[String], columns: &[Column]) -> String {
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

/// The quoted columns of a row, position last.
pub(crate) fn all_columns(columns: &[String]) -> Vec<String> {
    columns.iter().map(|c| quote(c)).chain(POSITION_COLUMNS.iter().map(|c| (*c).to_owned())).collect()
}

/// `ON CONFLICT` clause: keyed rows are replaced only by later positions;
/// append-only replays skip rows already present.
pub(crate) fn conflict_clause(table: &str, key: &[String], columns: &[String], mode: WriteMode) -> String {
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

/// Records a loader batch's quarantined offsets and next offsets in the
/// batch's transaction. The SQL is the same on both dialects but for the name
/// of the two-argument maximum (`$max`).
macro_rules! bookkeeping {
    ($tx:expr, $target:expr, $bookkeeping:expr, $max:literal) => {{
        let (batch, bookkeeping): (&$crate::LoadTarget, &$crate::Bookkeeping) = ($target, $bookkeeping);
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
                return Err($crate::StoreError::Invalid(format!(
                    "quarantined record {}:{} of {} was loaded by a replay while this batch judged it again",
                    position.partition, position.offset, batch.topic
                )));
            }
        }
        // Compare and set: the offset the batch was judged against must be
        // the stored one still (the write waits for a concurrent writer).
        for advance in &bookkeeping.next_offsets {
            let query = sqlx::query(match advance.from {
                None => {
                    "INSERT INTO mend_offsets (dataset, topic, partition_id, next_offset) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (dataset, topic, partition_id) DO NOTHING"
                }
                Some(_) => concat!(
                    "UPDATE mend_offsets SET next_offset = ",
                    $max,
                    "(next_offset, $4) WHERE dataset = $1 AND topic = $2 AND partition_id = $3 AND next_offset = $5"
                ),
            })
            .bind(&batch.dataset)
            .bind(&batch.topic)
            .bind(advance.partition)
            .bind(advance.to);
            let query = match advance.from {
                Some(from) => query.bind(from),
                None => query,
            };
            let moved = query.execute(&mut *$tx).await?.rows_affected();
            if moved != 1 {
                return Err($crate::StoreError::Conflict(format!(
                    "partition {} of {} was loaded past offset {:?} by another process meanwhile",
                    advance.partition, batch.topic, advance.from
                )));
            }
        }
    }};
}
pub(crate) use bookkeeping;

/// The [`crate::Store`] methods whose SQL is the same in both dialects,
/// expanded into each engine's impl. The engine's module provides
/// `DATASET_LOCK` (a statement serialising writers of one dataset, if the
/// dialect has one), `SEARCH_PATH` and `LIMITS` (a statement setting a
/// transaction's `lock_timeout` and `statement_timeout`, if it has them),
/// and the engine has a `pool`.
macro_rules! portable_methods {
    () => {
        async fn contract(&self, dataset: &str) -> Result<Option<mend_model::Contract>, $crate::StoreError> {
            let row: Option<(i64, String)> =
                sqlx::query_as("SELECT schema_id, mapping FROM mend_contracts WHERE dataset = $1")
                    .bind(dataset)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|(id, mapping)| {
                Ok(mend_model::Contract {
                    dataset: dataset.to_owned(),
                    schema_id: u32::try_from(id).map_err(|e| $crate::StoreError::Invalid(e.to_string()))?,
                    mapping: serde_json::from_str(&mapping).map_err(|e| $crate::StoreError::Invalid(e.to_string()))?,
                })
            })
            .transpose()
        }

        async fn establish(
            &self,
            dataset: &str,
            create_table: &str,
            contract: &mend_model::Contract,
        ) -> Result<(), $crate::StoreError> {
            let mapping =
                serde_json::to_string(&contract.mapping).map_err(|e| $crate::StoreError::Invalid(e.to_string()))?;
            let mut tx = self.pool.begin().await?;
            if let Some(lock) = DATASET_LOCK {
                // Serialises concurrent loaders establishing one dataset.
                sqlx::query(lock).bind(dataset).execute(&mut *tx).await?;
            }
            sqlx::query($crate::sql::dynamic(create_table)).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO mend_contracts (dataset, schema_id, mapping, updated_by) VALUES ($1, $2, $3, 'loader') \
                 ON CONFLICT (dataset) DO NOTHING",
            )
            .bind(dataset)
            .bind(i64::from(contract.schema_id))
            .bind(&mapping)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn offsets(
            &self,
            dataset: &str,
        ) -> Result<std::collections::HashMap<(String, i32), i64>, $crate::StoreError> {
            let rows: Vec<(String, i32, i64)> =
                sqlx::query_as("SELECT topic, partition_id, next_offset FROM mend_offsets WHERE dataset = $1")
                    .bind(dataset)
                    .fetch_all(&self.pool)
                    .await?;
            Ok(rows.into_iter().map(|(t, p, o)| ((t, p), o)).collect())
        }

        async fn quarantined_records(&self, dataset: &str, writer: u32) -> Result<Vec<$crate::Kept>, $crate::StoreError> {
            Ok(sqlx::query_as(
                "SELECT partition_id, source_offset, payload FROM mend_quarantined \
                 WHERE dataset = $1 AND writer_schema_id = $2 ORDER BY partition_id, source_offset",
            )
            .bind(dataset)
            .bind(i64::from(writer))
            .fetch_all(&self.pool)
            .await?)
        }

        async fn quarantined_sample(
            &self,
            dataset: &str,
            writer: u32,
            limit: i64,
        ) -> Result<Vec<$crate::Kept>, $crate::StoreError> {
            Ok(sqlx::query_as(
                "SELECT partition_id, source_offset, payload FROM mend_quarantined \
                 WHERE dataset = $1 AND writer_schema_id = $2 AND NOT loaded ORDER BY partition_id, source_offset LIMIT $3",
            )
            .bind(dataset)
            .bind(i64::from(writer))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn quarantine_counts(
            &self,
            dataset: &str,
        ) -> Result<std::collections::HashMap<u32, i64>, $crate::StoreError> {
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT writer_schema_id, COUNT(*) FROM mend_quarantined WHERE dataset = $1 \
                 AND writer_schema_id IS NOT NULL GROUP BY writer_schema_id",
            )
            .bind(dataset)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().filter_map(|(writer, count)| Some((u32::try_from(writer).ok()?, count))).collect())
        }

        async fn quarantined(
            &self,
            dataset: &str,
            topic: &str,
            partition: i32,
            below: i64,
        ) -> Result<std::collections::HashSet<i64>, $crate::StoreError> {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT source_offset FROM mend_quarantined WHERE dataset = $1 AND topic = $2 AND partition_id = $3 \
                 AND source_offset < $4 AND NOT loaded",
            )
            .bind(dataset)
            .bind(topic)
            .bind(partition)
            .bind(below)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.into_iter().map(|(o,)| o).collect())
        }

        async fn applied_count(&self, dataset: &str) -> Result<i64, $crate::StoreError> {
            Ok(sqlx::query_scalar("SELECT COUNT(*) FROM mend_applied WHERE dataset = $1")
                .bind(dataset)
                .fetch_one(&self.pool)
                .await?)
        }

        async fn applied_plans(&self, dataset: &str) -> Result<Vec<(String, String)>, $crate::StoreError> {
            Ok(sqlx::query_as(
                "SELECT proposal_id, decision_id FROM mend_applied WHERE dataset = $1 ORDER BY proposal_id",
            )
            .bind(dataset)
            .fetch_all(&self.pool)
            .await?)
        }

        async fn contract_mover(&self, dataset: &str) -> Result<Option<String>, $crate::StoreError> {
            Ok(sqlx::query_scalar("SELECT updated_by FROM mend_contracts WHERE dataset = $1")
                .bind(dataset)
                .fetch_optional(&self.pool)
                .await?)
        }

        async fn applied(&self, proposal_id: &str) -> Result<bool, $crate::StoreError> {
            Ok(sqlx::query("SELECT 1 FROM mend_applied WHERE proposal_id = $1")
                .bind(proposal_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some())
        }

        async fn apply(&self, application: &$crate::Apply<'_>) -> Result<bool, $crate::StoreError> {
            let mapping = serde_json::to_string(&application.contract.mapping)
                .map_err(|e| $crate::StoreError::Invalid(e.to_string()))?;
            let statements = i32::try_from(application.statements.len()).unwrap_or(i32::MAX);
            let mut tx = self.pool.begin().await?;
            if let Some(lock) = DATASET_LOCK {
                sqlx::query(lock).bind(application.contract.dataset.as_str()).execute(&mut *tx).await?;
            }
            let recorded = sqlx::query(
                "INSERT INTO mend_applied (proposal_id, decision_id, dataset, statements) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (proposal_id) DO NOTHING",
            )
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
            // The plan's statements find nothing on the search path but the
            // catalog and the dataset's schema; mend's own queries after
            // them find what they always do.
            let search_path: Option<String> = match SEARCH_PATH {
                Some(restricted) => {
                    let saved = sqlx::query_scalar("SELECT current_setting('search_path')").fetch_one(&mut *tx).await?;
                    sqlx::query(restricted).bind(application.schema).execute(&mut *tx).await?;
                    Some(saved)
                }
                None => None,
            };
            // Each statement waits at most `lock_timeout` for its lock and
            // runs at most its own timeout; mend's own queries after them
            // run as they always do.
            let saved_limits: Option<(String, String)> = match LIMITS {
                Some(_) => Some(
                    sqlx::query_as("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
                        .fetch_one(&mut *tx)
                        .await?,
                ),
                None => None,
            };
            for (index, statement) in application.statements.iter().enumerate() {
                if let Some(set) = LIMITS {
                    let lock = format!("{}ms", application.limits.lock_timeout.as_millis());
                    let timeout = application.limits.statement_timeouts.get(index).map_or(0, |t| t.as_millis());
                    sqlx::query(set).bind(lock).bind(format!("{timeout}ms")).execute(&mut *tx).await?;
                }
                sqlx::query($crate::sql::dynamic(statement)).execute(&mut *tx).await?;
            }
            for statement in application.then {
                sqlx::query($crate::sql::dynamic(statement)).execute(&mut *tx).await?;
            }
            if let (Some(set), Some((lock, timeout))) = (LIMITS, saved_limits) {
                sqlx::query(set).bind(lock).bind(timeout).execute(&mut *tx).await?;
            }
            if let Some(saved) = search_path {
                sqlx::query("SELECT set_config('search_path', $1, true)").bind(saved).execute(&mut *tx).await?;
            }
            sqlx::query(
                "INSERT INTO mend_contracts (dataset, schema_id, mapping, updated_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (dataset) DO UPDATE SET schema_id = excluded.schema_id, mapping = excluded.mapping, \
                 updated_by = excluded.updated_by",
            )
            .bind(application.contract.dataset.as_str())
            .bind(i64::from(application.contract.schema_id))
            .bind(&mapping)
            .bind(application.decision_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }

        async fn rows_as_text(
            &self,
            table: &str,
            columns: &[&str],
        ) -> Result<Vec<Vec<Option<String>>>, $crate::StoreError> {
            use sqlx::Row as _;
            let cast = |c: &&str| format!("CAST({} AS TEXT)", $crate::sql::quote(c));
            let sql = format!(
                "SELECT {} FROM {}",
                columns.iter().map(cast).collect::<Vec<_>>().join(", "),
                $crate::sql::quote(table)
            );
            let width = columns.len();
            Ok(sqlx::query($crate::sql::dynamic(&sql))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| (0..width).map(|i| r.get::<Option<String>, _>(i)).collect())
                .collect())
        }

        async fn column_values(&self, table: &str, column: &str, limit: i64) -> Result<Vec<String>, $crate::StoreError> {
            let sql = format!(
                "SELECT DISTINCT CAST({c} AS TEXT) FROM {t} WHERE {c} IS NOT NULL LIMIT $1",
                c = $crate::sql::quote(column),
                t = $crate::sql::quote(table)
            );
            match sqlx::query_scalar($crate::sql::dynamic(&sql)).bind(limit).fetch_all(&self.pool).await {
                Ok(values) => Ok(values),
                // The column was dropped or never existed: no evidence.
                Err(sqlx::Error::Database(_)) => Ok(Vec::new()),
                Err(other) => Err(other.into()),
            }
        }

        async fn count(&self, table: &str) -> Result<i64, $crate::StoreError> {
            let sql = format!("SELECT COUNT(*) FROM {}", $crate::sql::quote(table));
            Ok(sqlx::query_scalar($crate::sql::dynamic(&sql)).fetch_one(&self.pool).await?)
        }
    };
}
pub(crate) use portable_methods;

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
}
