//! The PostgreSQL engine: COPY for loading (straight into append-only
//! tables, through a staging table and one upsert for keyed ones and
//! replays), `UNNEST` claims for replays, advisory locks per dataset,
//! catalog look-ups that let a role with only table rights connect, and the
//! catalog snapshot a plan's dry run is proven on ([`crate::proof`]).

use std::collections::HashSet;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use mend_model::{Column, Row};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres as Pg, Transaction};

use crate::cost::{Probe, Size};
use crate::guard::Target;
use crate::proof::{self, Entry, Rule};
use crate::sql::{POSITION_COLUMNS, all_columns, bookkeeping, conflict_clause, dynamic, quote, state_tables};
use crate::{Bookkeeping, Chunk, DryRun, LoadTarget, Store, StoreError, WriteMode};

pub(crate) mod expand;
mod probe;

/// Serialises writers of one dataset's contract (establish, apply).
const DATASET_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");

/// Keeps a plan's statements from finding anything on the search path but
/// the catalog and the dataset's schema (`$1`), for the rest of the
/// transaction. mend's renderings name everything qualified anyway.
const SEARCH_PATH: Option<&str> = Some("SELECT set_config('search_path', 'pg_catalog, ' || quote_ident($1), true)");

/// Sets the transaction's `lock_timeout` ($1) and `statement_timeout` ($2).
const LIMITS: Option<&str> =
    Some("SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)");

/// Every user object of the catalog (oid ≥ 16384, PostgreSQL's first
/// normal object id) as a proof entry: kind, name, the table it belongs to
/// (toast tables and indexes belong to their table; row types to theirs),
/// whether it is as plain as mend's statements leave it, its definition
/// without what a rewrite changes (file nodes), and a label for messages.
/// `$1` is the dataset's schema.
///
/// Names and definitions are read from the catalog rows themselves, under
/// the transaction's snapshot: `regclass`, `format_type`,
/// `pg_describe_object` and the deparsers read the latest catalog instead,
/// so another session dropping a schema meanwhile would change them between
/// the two snapshots; the deparsers (`pg_get_expr`, `pg_get_ruledef`, …)
/// also lock the relations they name, and a dry run holding its table must
/// not wait on, or deadlock with, every other table of the warehouse.
/// Expressions are compared as their stored node trees. Sequence values are
/// not compared: they are not transactional, so concurrent use elsewhere
/// would look like a change; the allow-list keeps every call of a function
/// (and so of nextval) out of what runs.
const CATALOG: &str = r#"
WITH rel AS (
  SELECT c.*, n.nspname || '.' || c.relname AS name,
    COALESCE(toast_of.oid, index_toast_of.oid, x.indrelid, c.oid) AS owner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class toast_of ON c.relkind = 't' AND toast_of.reltoastrelid = c.oid
  LEFT JOIN pg_index x ON c.relkind IN ('i', 'I') AND x.indexrelid = c.oid
  LEFT JOIN pg_class index_toast_of ON index_toast_of.reltoastrelid = x.indrelid
  WHERE c.oid >= 16384
),
typ AS (
  SELECT t.*, n.nspname || '.' || t.typname AS name, r.owner, e.typtype AS elemtype, e.typrelid AS elemrelid
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_type e ON e.oid = t.typelem
  LEFT JOIN rel r ON r.oid = COALESCE(NULLIF(t.typrelid, 0), NULLIF(e.typrelid, 0))
  WHERE t.oid >= 16384
)
SELECT 'relation', c.name, c.owner::text,
  c.relkind IN ('r', 't') AND c.relpersistence = 'p' AND c.reloptions IS NULL AND c.reltablespace = 0
    AND NOT c.relhastriggers AND NOT c.relhasrules AND NOT c.relrowsecurity AND NOT c.relispartition
    AND NOT c.relhassubclass,
  concat_ws('|', c.relkind, c.relpersistence, c.reloptions::text, c.reltablespace, c.relhastriggers,
    c.relhasrules, c.relrowsecurity, c.relforcerowsecurity, c.relispartition, c.relhassubclass, c.relowner,
    c.relacl::text, c.relreplident, c.relam, md5(c.relpartbound::text)),
  c.name
FROM rel c WHERE c.relkind NOT IN ('i', 'I')
UNION ALL
SELECT 'index', c.name, c.owner::text, t.relkind = 't',
  concat_ws('|', c.relkind, c.relpersistence, c.reloptions::text, c.reltablespace, c.relam, t.relname,
    x.indisunique, x.indisprimary, x.indisexclusion, x.indimmediate, x.indkey::text, x.indclass::text,
    x.indcollation::text, x.indoption::text, md5(x.indexprs::text), md5(x.indpred::text)),
  c.name
FROM rel c JOIN pg_index x ON x.indexrelid = c.oid JOIN pg_class t ON t.oid = x.indrelid
UNION ALL
SELECT 'columns', c.name, c.owner::text,
  bool_and(a.attisdropped OR (a.attidentity = '' AND a.attgenerated = '' AND a.atttypid < 16384
    AND a.attcollation IN (0, 100))),
  string_agg(concat_ws(':', a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.atthasdef,
    a.attidentity, a.attgenerated, a.attisdropped, a.attcollation, a.attoptions::text, a.attacl::text),
    ',' ORDER BY a.attnum),
  c.name
FROM pg_attribute a JOIN rel c ON c.oid = a.attrelid WHERE a.attnum > 0
GROUP BY c.name, c.owner
UNION ALL
SELECT 'default', c.name || '.' || d.adnum, c.owner::text, false, md5(d.adbin::text), c.name || '.' || d.adnum
FROM pg_attrdef d JOIN rel c ON c.oid = d.adrelid
UNION ALL
SELECT 'constraint', COALESCE(c.name, t.name, '') || '.' || k.conname, c.owner::text, false,
  concat_ws('|', k.contype, k.condeferrable, k.condeferred, k.convalidated, k.confrelid, k.conkey::text,
    k.confkey::text, k.confupdtype, k.confdeltype, k.connoinherit, md5(k.conbin::text)),
  COALESCE(c.name, t.name, '') || '.' || k.conname
FROM pg_constraint k LEFT JOIN rel c ON c.oid = k.conrelid LEFT JOIN typ t ON t.oid = k.contypid
WHERE k.oid >= 16384
UNION ALL
SELECT 'trigger', COALESCE(c.name, tg.tgrelid::text) || '.' || tg.tgname, NULL, false,
  concat_ws('|', tg.tgfoid, tg.tgtype, tg.tgenabled, tg.tgisinternal, tg.tgconstrrelid, tg.tgattr::text,
    md5(tg.tgqual::text)),
  COALESCE(c.name, tg.tgrelid::text) || '.' || tg.tgname
FROM pg_trigger tg LEFT JOIN rel c ON c.oid = tg.tgrelid
UNION ALL
SELECT 'inheritance', COALESCE(c.name, i.inhrelid::text) || ' inherits ' || COALESCE(p.name, i.inhparent::text),
  NULL, false, i.inhseqno::text,
  COALESCE(c.name, i.inhrelid::text) || ' inherits ' || COALESCE(p.name, i.inhparent::text)
FROM pg_inherits i LEFT JOIN rel c ON c.oid = i.inhrelid LEFT JOIN rel p ON p.oid = i.inhparent
UNION ALL
SELECT 'type', t.name, t.owner::text,
  (t.typtype = 'c' AND t.typrelid <> 0) OR (t.typcategory = 'A' AND t.elemtype = 'c' AND t.elemrelid <> 0),
  concat_ws('|', t.typtype, t.typbasetype, t.typnotnull, t.typdefault, t.typelem, t.typowner, t.typacl::text),
  t.name
FROM typ t
UNION ALL
SELECT 'function', n.nspname || '.' || p.proname || '(' || p.proargtypes::text || ')', NULL, false,
  md5(concat_ws('|', p.prosrc, p.probin, p.proconfig::text, p.provolatile, p.prosecdef, p.proowner, p.proacl::text)),
  n.nspname || '.' || p.proname
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid >= 16384
UNION ALL
SELECT 'sequence', c.name, NULL, false,
  concat_ws('|', s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle), c.name
FROM pg_sequence s JOIN rel c ON c.oid = s.seqrelid
UNION ALL
SELECT 'rule', COALESCE(c.name, r.ev_class::text) || '.' || r.rulename, NULL, false,
  concat_ws('|', r.ev_type, r.ev_enabled, r.is_instead, md5(r.ev_qual::text), md5(r.ev_action::text)),
  COALESCE(c.name, r.ev_class::text) || '.' || r.rulename
FROM pg_rewrite r LEFT JOIN rel c ON c.oid = r.ev_class WHERE r.oid >= 16384
UNION ALL
SELECT 'policy', COALESCE(c.name, p.polrelid::text) || '.' || p.polname, NULL, false,
  concat_ws('|', p.polcmd, p.polpermissive, p.polroles::text, md5(p.polqual::text), md5(p.polwithcheck::text)),
  COALESCE(c.name, p.polrelid::text) || '.' || p.polname
FROM pg_policy p LEFT JOIN rel c ON c.oid = p.polrelid
UNION ALL
SELECT 'schema', n.nspname::text, NULL, false, concat_ws('|', n.nspowner, n.nspacl::text), n.nspname::text
FROM pg_namespace n
UNION ALL
SELECT 'dependency',
  concat_ws(':', d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid, d.refobjsubid, d.deptype),
  COALESCE(COALESCE(rc.owner, rt.owner, rkc.owner, rac.owner)::text, CASE WHEN ns.nspname = $1 THEN 'schema' END),
  true, '',
  -- For messages only (it reads the latest catalog, and may be NULL).
  COALESCE(pg_describe_object(d.classid, d.objid, d.objsubid), d.objid::text) || ' -> '
    || COALESCE(pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), d.refobjid::text)
FROM pg_depend d
LEFT JOIN rel rc ON d.refclassid = 'pg_class'::regclass AND rc.oid = d.refobjid
LEFT JOIN typ rt ON d.refclassid = 'pg_type'::regclass AND rt.oid = d.refobjid
LEFT JOIN pg_constraint rk ON d.refclassid = 'pg_constraint'::regclass AND rk.oid = d.refobjid
LEFT JOIN rel rkc ON rkc.oid = rk.conrelid
LEFT JOIN pg_attrdef ra ON d.refclassid = 'pg_attrdef'::regclass AND ra.oid = d.refobjid
LEFT JOIN rel rac ON rac.oid = ra.adrelid
LEFT JOIN pg_namespace ns ON d.refclassid = 'pg_namespace'::regclass AND ns.oid = d.refobjid
WHERE d.refobjid >= 16384
"#;

/// What the allowed statements may do to each kind of entry of [`CATALOG`]:
/// a child table brings its relation, storage, row types and their
/// dependencies; columns are added and changed; a type change rebuilds the
/// table's own indexes, constraints and defaults.
fn rule(kind: &str) -> Rule {
    match kind {
        "relation" | "type" => Rule::Appear,
        "columns" => Rule::Change,
        "index" | "constraint" | "default" => Rule::Rebuild,
        "dependency" => Rule::Reference,
        _ => Rule::Never,
    }
}

/// The catalog as seen by `tx`.
async fn catalog(tx: &mut Transaction<'_, Pg>, schema: &str) -> Result<Vec<Entry>, StoreError> {
    let rows = sqlx::query(CATALOG).bind(schema).fetch_all(&mut **tx).await?;
    let entry = |row: sqlx::postgres::PgRow| -> Result<Entry, sqlx::Error> {
        let key: Option<String> = row.try_get(1)?;
        let label: Option<String> = row.try_get(5)?;
        Ok(Entry {
            kind: row.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
            label: label.or_else(|| key.clone()).unwrap_or_default(),
            key: key.unwrap_or_default(),
            scope: row.try_get(2)?,
            plain: row.try_get::<Option<bool>, _>(3)?.unwrap_or(false),
            definition: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
        })
    };
    Ok(rows.into_iter().map(entry).collect::<Result<_, _>>()?)
}

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

    /// The pool (expand/contract's statements, [`crate::expand`]).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
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
    /// write these tables connects: CREATE TABLE IF NOT EXISTS needs the
    /// owner's rights even when it changes nothing.
    async fn create_state_tables(&self) -> Result<(), StoreError> {
        for (table, create) in state_tables(mend_model::Dialect::Postgres) {
            let exists: bool =
                sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(&self.pool).await?;
            if !exists {
                self.execute(&create).await?;
            }
        }
        Ok(())
    }

    async fn schema_of(&self, table: &str) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE((SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass(quote_ident($1))), current_schema()::text)",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Repeatable read: the two snapshots of the catalog see the same
    /// database but for the plan's own statements, whatever other sessions
    /// commit meanwhile.
    async fn prove(
        &self,
        target: &Target,
        tables: &[String],
        statements: &[String],
        how: DryRun,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        // The catalog query's estimates are far off (unions of catalogs):
        // JIT-compiling it took 4.3 s of a 4.4 s snapshot on a warehouse of
        // 2,700 relations; without it, 0.14 s.
        sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
        if let Some(path) = SEARCH_PATH {
            sqlx::query(path).bind(&target.schema).execute(&mut *tx).await?;
        }
        // The dry run waits for the table's lock no longer than the apply does.
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(format!("{}ms", how.lock_timeout.as_millis()))
            .execute(&mut *tx)
            .await?;
        if how.rewrites {
            probe::empty_for_the_dry_run(&mut tx, target).await?;
        }
        let before = catalog(&mut tx, &target.schema).await?;
        for statement in statements {
            sqlx::query(dynamic(statement)).execute(&mut *tx).await?;
        }
        let after = catalog(&mut tx, &target.schema).await?;
        let allowed: Vec<String> = sqlx::query_scalar(
            "SELECT c.oid::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2)",
        )
        .bind(&target.schema)
        .bind(tables)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        Ok(proof::findings(&before, &after, &allowed.into_iter().collect(), rule))
    }

    async fn size(&self, schema: &str, table: &str) -> Result<Size, StoreError> {
        probe::size(&self.pool, schema, table).await
    }

    async fn probe(
        &self,
        target: &Target,
        statements: &[String],
    ) -> Result<Vec<Option<Result<Probe, String>>>, StoreError> {
        probe::probe(&self.pool, target, statements).await
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
