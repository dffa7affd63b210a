//! What the cost of a plan's statements reads from PostgreSQL
//! ([`crate::cost`]): the table's size, the dry run on an empty copy of the
//! table, and the emptying that spares the guardrails' dry run a rewrite.

use sqlx::postgres::PgPool;
use sqlx::{Postgres as Pg, Transaction};

use crate::StoreError;
use crate::cost::{Probe, Size, strongest};
use crate::guard::Target;
use crate::sql::{dynamic, quote};

/// The table's size as the catalog knows it (zero when it is missing).
pub(super) async fn size(pool: &PgPool, schema: &str, table: &str) -> Result<Size, StoreError> {
    // reltuples is -1 until the table is first vacuumed or analysed
    // (PostgreSQL 14 and later).
    let row: Option<(Option<i64>, i64)> = sqlx::query_as(
        "SELECT CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::int8 END, pg_total_relation_size(c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Size { rows: Some(0), bytes: Some(0) }, |(rows, bytes)| Size { rows, bytes: Some(bytes) }))
}

/// On one connection: an empty temporary copy of the table (`LIKE …
/// INCLUDING ALL`: its columns, defaults, constraints, indexes and
/// storage), each ALTER of the dataset's table run on the copy in a
/// transaction of its own, its file node and locks read before it commits;
/// the copy is dropped at the end. A statement that is not an ALTER of the
/// table (a new child) is not probed.
pub(super) async fn probe(
    pool: &PgPool,
    target: &Target,
    statements: &[String],
) -> Result<Vec<Option<Result<Probe, String>>>, StoreError> {
    let table = format!("{}.{}", quote(&target.schema), quote(&target.table));
    let alter = format!("ALTER TABLE {table} ");
    let mut connection = pool.acquire().await?;
    sqlx::query("DROP TABLE IF EXISTS pg_temp.mend_probe").execute(&mut *connection).await?;
    {
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        // LIKE reads the table under ACCESS SHARE: never queue long behind a waiting ALTER.
        sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
        let like = format!("CREATE TEMPORARY TABLE mend_probe (LIKE {table} INCLUDING ALL)");
        sqlx::query(dynamic(&like)).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let file = "SELECT pg_relation_filenode('pg_temp.mend_probe')::int8";
    let mut probes = Vec::with_capacity(statements.len());
    let mut failed = false;
    for statement in statements {
        let Some(operations) = statement.strip_prefix(&alter) else {
            probes.push(None);
            continue;
        };
        if failed {
            probes.push(Some(Err("not run: a statement before it failed".to_owned())));
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *connection).await?;
        let before: i64 = sqlx::query_scalar(file).fetch_one(&mut *tx).await?;
        let altered = format!("ALTER TABLE pg_temp.mend_probe {operations}");
        match sqlx::query(dynamic(&altered)).execute(&mut *tx).await {
            Ok(_) => {
                let after: i64 = sqlx::query_scalar(file).fetch_one(&mut *tx).await?;
                let modes: Vec<String> = sqlx::query_scalar(
                    "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND granted \
                     AND relation = 'pg_temp.mend_probe'::regclass",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                probes.push(Some(Ok(Probe { rewrote: before != after, lock: strongest(&modes) })));
            }
            Err(error) => {
                tx.rollback().await?;
                failed = true;
                probes.push(Some(Err(StoreError::from(error).to_string())));
            }
        }
    }
    sqlx::query("DROP TABLE IF EXISTS pg_temp.mend_probe").execute(&mut *connection).await?;
    Ok(probes)
}

/// Empties the dataset's table inside the dry run's transaction (rolled
/// back with it), so that a statement rewriting the table rewrites nothing
/// and holds its lock for milliseconds, not for the whole table's rewrite
/// twice over (the dry run and the apply). Not when something would see the
/// truncation: a table other tables reference (TRUNCATE refuses), or one
/// with ON TRUNCATE triggers (they would run); then the dry run pays the
/// rewrite.
pub(super) async fn empty_for_the_dry_run(tx: &mut Transaction<'_, Pg>, target: &Target) -> Result<(), StoreError> {
    let qualified = format!("{}.{}", quote(&target.schema), quote(&target.table));
    let seen: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_constraint WHERE confrelid = to_regclass($1) AND contype = 'f') \
         OR EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass($1) AND (tgtype & 32) <> 0)",
    )
    .bind(&qualified)
    .fetch_one(&mut **tx)
    .await?;
    if !seen {
        sqlx::query(dynamic(&format!("TRUNCATE ONLY {qualified}"))).execute(&mut **tx).await?;
    }
    Ok(())
}
