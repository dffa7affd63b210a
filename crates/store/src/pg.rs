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

use crate::guard::Target;
use crate::proof::{self, Entry, Rule};
use crate::sql::{
    ADDED_COLUMNS, POSITION_COLUMNS, STATE_TABLES, all_columns, bookkeeping, conflict_clause, dynamic, quote,
};
use crate::{Bookkeeping, Chunk, LoadTarget, Store, StoreError, WriteMode};

/// Serialises writers of one dataset's contract (establish, apply).
const DATASET_LOCK: Option<&str> = Some("SELECT pg_advisory_xact_lock(hashtext($1))");

/// Keeps a plan's statements from finding anything on the search path but
/// the catalog and the dataset's schema (`$1`), for the rest of the
/// transaction. mend's renderings name everything qualified anyway.
const SEARCH_PATH: Option<&str> = Some("SELECT set_config('search_path', 'pg_catalog, ' || quote_ident($1), true)");

/// Every user object of the catalog (oid ≥ 16384, PostgreSQL's first
/// normal object id) as a proof entry: kind, name, the table it belongs to
/// (toast tables and indexes belong to their table; row types to theirs),
/// whether it is as plain as mend's statements leave it, and its definition
/// without what a rewrite changes (file nodes, oids). `$1` is the dataset's
/// schema.
///
/// Expressions are compared as their stored node trees, never deparsed:
/// PostgreSQL's deparsers (`pg_get_expr`, `pg_get_constraintdef`,
/// `pg_get_ruledef`, …) lock the relations they name, and a dry run holding
/// its table must not wait on, or deadlock with, every other table of the
/// warehouse. Sequence values are not compared: they are not transactional,
/// so concurrent use elsewhere would look like a change; the allow-list
/// keeps every call of a function (and so of nextval) out of what runs.
const CATALOG: &str = r#"
WITH owner AS (
  SELECT c.oid,
    CASE
      WHEN c.relkind = 't' THEN (SELECT p.oid FROM pg_class p WHERE p.reltoastrelid = c.oid)
      WHEN c.relkind IN ('i', 'I') THEN (
        SELECT COALESCE((SELECT p.oid FROM pg_class p WHERE p.reltoastrelid = x.indrelid), x.indrelid)
        FROM pg_index x WHERE x.indexrelid = c.oid)
      ELSE c.oid
    END AS owner
  FROM pg_class c WHERE c.oid >= 16384
),
type_owner AS (
  SELECT t.oid, o.owner FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
  JOIN owner o ON o.oid = COALESCE(NULLIF(t.typrelid, 0), NULLIF(e.typrelid, 0))
  WHERE t.oid >= 16384
)
SELECT 'relation', c.oid::regclass::text, o.owner::text,
  c.relkind IN ('r', 't') AND c.relpersistence = 'p' AND c.reloptions IS NULL AND c.reltablespace = 0
    AND NOT c.relhastriggers AND NOT c.relhasrules AND NOT c.relrowsecurity AND NOT c.relispartition
    AND NOT c.relhassubclass,
  concat_ws('|', c.relkind, c.relpersistence, c.reloptions::text, c.reltablespace, c.relhastriggers,
    c.relhasrules, c.relrowsecurity, c.relforcerowsecurity, c.relispartition, c.relhassubclass, c.relowner,
    c.relacl::text, c.relreplident, c.relam, md5(c.relpartbound::text))
FROM pg_class c JOIN owner o ON o.oid = c.oid WHERE c.relkind NOT IN ('i', 'I')
UNION ALL
SELECT 'index', c.oid::regclass::text, o.owner::text, t.relkind = 't',
  concat_ws('|', c.relkind, c.relpersistence, c.reloptions::text, c.reltablespace, c.relam, x.indrelid::regclass,
    x.indisunique, x.indisprimary, x.indisexclusion, x.indimmediate, x.indkey::text, x.indclass::text,
    x.indcollation::text, x.indoption::text, md5(x.indexprs::text), md5(x.indpred::text))
FROM pg_class c JOIN owner o ON o.oid = c.oid JOIN pg_index x ON x.indexrelid = c.oid
JOIN pg_class t ON t.oid = x.indrelid
UNION ALL
SELECT 'columns', a.attrelid::regclass::text, o.owner::text,
  bool_and(a.attisdropped OR (a.attidentity = '' AND a.attgenerated = '' AND a.atttypid < 16384
    AND a.attcollation IN (0, 100))),
  string_agg(concat_ws(':', a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
    a.atthasdef, a.attidentity, a.attgenerated, a.attisdropped, a.attcollation, a.attoptions::text,
    a.attacl::text), ',' ORDER BY a.attnum)
FROM pg_attribute a JOIN owner o ON o.oid = a.attrelid WHERE a.attnum > 0
GROUP BY a.attrelid, o.owner
UNION ALL
SELECT 'default', d.adrelid::regclass::text || '.' || d.adnum, o.owner::text, false, md5(d.adbin::text)
FROM pg_attrdef d JOIN owner o ON o.oid = d.adrelid
UNION ALL
SELECT 'constraint', COALESCE(NULLIF(c.conrelid, 0)::regclass::text, c.contypid::regtype::text) || '.' || c.conname,
  o.owner::text, false,
  concat_ws('|', c.contype, c.condeferrable, c.condeferred, c.convalidated, c.confrelid::regclass, c.conkey::text,
    c.confkey::text, c.confupdtype, c.confdeltype, c.connoinherit, md5(c.conbin::text))
FROM pg_constraint c LEFT JOIN owner o ON o.oid = c.conrelid WHERE c.oid >= 16384
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, NULL, false,
  concat_ws('|', t.tgfoid::regproc, t.tgtype, t.tgenabled, t.tgisinternal, t.tgconstrrelid::regclass,
    t.tgattr::text, md5(t.tgqual::text))
FROM pg_trigger t
UNION ALL
SELECT 'inheritance', i.inhrelid::regclass::text || ' inherits ' || i.inhparent::regclass::text, NULL, false,
  i.inhseqno::text
FROM pg_inherits i
UNION ALL
SELECT 'type', t.oid::regtype::text, o.owner::text,
  (t.typtype = 'c' AND t.typrelid <> 0) OR (t.typcategory = 'A' AND e.typtype = 'c' AND e.typrelid <> 0),
  concat_ws('|', t.typtype, t.typbasetype, t.typnotnull, t.typdefault, t.typelem::regtype, t.typowner,
    t.typacl::text)
FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem LEFT JOIN type_owner o ON o.oid = t.oid
WHERE t.oid >= 16384
UNION ALL
SELECT 'function', p.oid::regprocedure::text, NULL, false,
  md5(concat_ws('|', p.prosrc, p.probin, p.proconfig::text, p.provolatile, p.prosecdef, p.proowner, p.proacl::text))
FROM pg_proc p WHERE p.oid >= 16384
UNION ALL
SELECT 'sequence', s.seqrelid::regclass::text, NULL, false,
  concat_ws('|', s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
FROM pg_sequence s
UNION ALL
SELECT 'rule', r.ev_class::regclass::text || '.' || r.rulename, NULL, false,
  concat_ws('|', r.ev_type, r.ev_enabled, r.is_instead, md5(r.ev_qual::text), md5(r.ev_action::text))
FROM pg_rewrite r WHERE r.oid >= 16384
UNION ALL
SELECT 'policy', p.polrelid::regclass::text || '.' || p.polname, NULL, false,
  concat_ws('|', p.polcmd, p.polpermissive, p.polroles::text, md5(p.polqual::text), md5(p.polwithcheck::text))
FROM pg_policy p
UNION ALL
SELECT 'schema', n.nspname::text, NULL, false, concat_ws('|', n.nspowner, n.nspacl::text) FROM pg_namespace n
UNION ALL
SELECT 'dependency',
  pg_describe_object(d.classid, d.objid, d.objsubid) || ' -> '
    || pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) || ' (' || d.deptype::text || ')',
  CASE
    WHEN d.refclassid = 'pg_class'::regclass THEN (SELECT o.owner::text FROM owner o WHERE o.oid = d.refobjid)
    WHEN d.refclassid = 'pg_type'::regclass THEN (SELECT o.owner::text FROM type_owner o WHERE o.oid = d.refobjid)
    WHEN d.refclassid = 'pg_namespace'::regclass
      AND d.refobjid = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = $1) THEN 'schema'
  END,
  true, ''
FROM pg_depend d WHERE d.refobjid >= 16384
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
    Ok(rows
        .into_iter()
        .map(|row| Entry {
            kind: row.get(0),
            key: row.get(1),
            scope: row.get(2),
            plain: row.get::<Option<bool>, _>(3).unwrap_or(false),
            definition: row.get::<Option<String>, _>(4).unwrap_or_default(),
        })
        .collect())
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
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        if let Some(path) = SEARCH_PATH {
            sqlx::query(path).bind(&target.schema).execute(&mut *tx).await?;
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
