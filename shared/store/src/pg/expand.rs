//! Expand/contract on PostgreSQL ([`crate::expand`]): what depends on a
//! column, the expand (the plan's ADD COLUMN and the trigger that writes
//! both columns, in one short transaction), and the backfill in ranges of
//! pages, each its own transaction.

use std::time::Duration;

use sqlx::postgres::PgPool;

use crate::StoreError;
use crate::expand::{Backfilled, Dual};
use crate::sql::{dynamic, quote};

/// Pages per backfill transaction (8 MiB of table at PostgreSQL's 8 KiB
/// pages): short enough that a batch holds its rows' locks for well under
/// a second, long enough that the per-transaction cost is small.
const BATCH_PAGES: i64 = 1024;

/// Times a backfill batch is tried when a row it updates stays locked
/// (an upsert of the same key) for longer than `lock_timeout`.
const BATCH_ATTEMPTS: u32 = 20;

/// `schema.table` as a regclass expression's text argument.
const REGCLASS: &str = "to_regclass(quote_ident($1) || '.' || quote_ident($2))";

/// What depends on `column` of the table: indexes, constraints, defaults,
/// views, triggers, owned sequences, statistics — described by the catalog.
pub(crate) async fn dependents(
    pool: &PgPool,
    schema: &str,
    table: &str,
    column: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d \
         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
         WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = {REGCLASS} AND a.attname = $3 \
         AND d.deptype IN ('n', 'a') ORDER BY 1"
    )))
    .bind(schema)
    .bind(table)
    .bind(column)
    .fetch_all(pool)
    .await?)
}

/// The trigger's (and its function's) name: the table's oid and the
/// column's number, which renames do not change, so the swap finds it.
async fn trigger_name(pool: &PgPool, schema: &str, table: &str, column: &str) -> Result<String, StoreError> {
    let name: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT 'mend_dual_' || a.attrelid::int8 || '_' || a.attnum FROM pg_attribute a \
         WHERE a.attrelid = {REGCLASS} AND a.attname = $3 AND NOT a.attisdropped"
    )))
    .bind(schema)
    .bind(table)
    .bind(column)
    .fetch_optional(pool)
    .await?;
    name.ok_or_else(|| StoreError::Invalid(format!("{schema}.{table} has no column {column}")))
}

/// mend's own statements that end the dual write, for the swap's
/// transaction: the trigger and its function dropped.
pub(crate) async fn cleanup(pool: &PgPool, schema: &str, table: &str, dual: &Dual) -> Result<Vec<String>, StoreError> {
    let name = trigger_name(pool, schema, table, &dual.column).await?;
    let (schema, table, name) = (quote(schema), quote(table), quote(&name));
    Ok(vec![
        format!("DROP TRIGGER IF EXISTS {name} ON {schema}.{table}"),
        format!("DROP FUNCTION IF EXISTS {schema}.{name}()"),
    ])
}

/// The expand: `statements` (mend's renderings of the plan's ADD COLUMN,
/// vetted) and the trigger that writes `dual.wide` from `dual.column` on
/// every insert and update, in one transaction that waits at most
/// `lock_timeout` for the table. False when the wide column exists
/// already (an earlier attempt expanded): nothing is done again.
pub(crate) async fn expand(
    pool: &PgPool,
    schema: &str,
    table: &str,
    statements: &[String],
    dual: &Dual,
    lock_timeout: Duration,
) -> Result<bool, StoreError> {
    if dual.column.contains('$') || dual.wide.contains('$') {
        return Err(StoreError::Invalid(format!("expand/contract takes no column named with '$' ({})", dual.column)));
    }
    let name = trigger_name(pool, schema, table, &dual.column).await?;
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {REGCLASS} AND attname = $3 AND NOT attisdropped)"
    )))
    .bind(schema)
    .bind(table)
    .bind(&dual.wide)
    .fetch_one(&mut *tx)
    .await?;
    if exists {
        return Ok(false);
    }
    sqlx::query("SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', '10s', true)")
        .bind(format!("{}ms", lock_timeout.as_millis()))
        .execute(&mut *tx)
        .await?;
    for statement in statements {
        sqlx::query(dynamic(statement)).execute(&mut *tx).await?;
    }
    let (qualified, function) =
        (format!("{}.{}", quote(schema), quote(table)), format!("{}.{}", quote(schema), quote(&name)));
    let body = format!("BEGIN NEW.{} := NEW.{}; RETURN NEW; END", quote(&dual.wide), quote(&dual.column));
    let create = format!("CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $mend${body}$mend$");
    sqlx::query(dynamic(&create)).execute(&mut *tx).await?;
    let trigger = format!(
        "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {qualified} FOR EACH ROW EXECUTE FUNCTION {function}()",
        quote(&name)
    );
    sqlx::query(dynamic(&trigger)).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// The backfill: every row whose wide column differs from its column
/// gets the column's value, in ranges of [`BATCH_PAGES`] pages of the
/// table as it was when the backfill began, each range its own
/// transaction. One pass is enough: every row written since the expand
/// committed went through the trigger (the expand held the table's lock,
/// so no write began before it and ended after), and a row moved by an
/// update since was written by it. `progress` hears (pages done, pages).
pub(crate) async fn backfill(
    pool: &PgPool,
    schema: &str,
    table: &str,
    dual: &Dual,
    lock_timeout: Duration,
    mut progress: impl FnMut(i64, i64) + Send,
) -> Result<Backfilled, StoreError> {
    let pages: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_relation_size({REGCLASS}) / current_setting('block_size')::int8"
    )))
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await?;
    let (wide, column) = (quote(&dual.wide), quote(&dual.column));
    let update = format!(
        "UPDATE {}.{} SET {wide} = {column} WHERE ctid >= format('(%s,0)', $1::int8)::tid \
         AND ctid < format('(%s,0)', $2::int8)::tid AND {wide} IS DISTINCT FROM {column}",
        quote(schema),
        quote(table)
    );
    let mut done = Backfilled { pages, ..Backfilled::default() };
    let mut start = 0;
    while start < pages {
        let end = (start + BATCH_PAGES).min(pages);
        let mut attempt = 0;
        let rows = loop {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                .bind(format!("{}ms", lock_timeout.as_millis()))
                .execute(&mut *tx)
                .await?;
            match sqlx::query(dynamic(&update)).bind(start).bind(end).execute(&mut *tx).await {
                Ok(result) => {
                    tx.commit().await?;
                    break result.rows_affected();
                }
                Err(error) => {
                    let error = StoreError::from(error);
                    attempt += 1;
                    if !error.is_lock_timeout() || attempt >= BATCH_ATTEMPTS {
                        return Err(error);
                    }
                    done.lock_waits += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
        };
        done.rows += rows;
        done.batches += 1;
        start = end;
        progress(start, pages);
    }
    Ok(done)
}
