//! The guardrails against a real PostgreSQL, in a schema of each test's own
//! holding the dataset's table and decoys: another table, a sequence, a
//! domain whose default and check run a function, a type called `double`, a
//! `convert_to` of the schema's own, and a table every decoy function
//! writes to when it runs.
//!
//! - hostile drafts are refused by the allow-list before anything runs;
//! - the catalog proof alone, without the allow-list, names what they
//!   change beyond the table (the check that catches the next escape);
//! - every spelling of an allowed statement passes and renders as mend's own;
//! - statements generated from sqlparser's AST (types, column options,
//!   constraints, table options, names) never pass the allow-list and then
//!   change another object (`MEND_GUARD_CASES` cases; `make fuzz` runs many).

use std::collections::HashSet;

use anyhow::{Context as _, Result, ensure};
use mend_model::Dialect;
use mend_store::guard::{Target, check};
use mend_store::{Check, Store as _, Warehouse};
use mend_tests::{postgres_url, unique};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOptionDef, CreateTable, DataType, Expr, Ident,
    ObjectName, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlx::PgPool;

/// How long a dry run waits for the table's lock (the default).
const LOCK: std::time::Duration = std::time::Duration::from_secs(2);

/// A schema of the test's own, its warehouse connection (search path set
/// to the schema) and an administrator's pool.
struct Fixture {
    schema: String,
    warehouse: Warehouse,
    admin: PgPool,
}

impl Fixture {
    async fn new() -> Result<Self> {
        let schema = unique("guard").replace('-', "_");
        let admin = PgPool::connect(&postgres_url()).await?;
        let s = &schema;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.orders (id bigint NOT NULL PRIMARY KEY, email text NOT NULL, amount integer,
               price numeric(10,2), note varchar(20), _mend_partition integer NOT NULL, _mend_offset bigint NOT NULL);
             INSERT INTO {s}.orders VALUES (1, 'a@example.com', 5, 1.25, 'n', 0, 0);
             CREATE TABLE {s}.decoy (id bigint PRIMARY KEY);
             CREATE TABLE {s}.ran (what text);
             CREATE SEQUENCE {s}.decoy_seq;
             CREATE FUNCTION {s}.f(anyelement) RETURNS boolean LANGUAGE sql
               AS $$ INSERT INTO {s}.ran VALUES ('f'); SELECT true $$;
             CREATE FUNCTION {s}.convert_to(text, text) RETURNS bytea LANGUAGE sql
               AS $$ INSERT INTO {s}.ran VALUES ('convert_to'); SELECT pg_catalog.convert_to($1, 'UTF8') $$;
             CREATE DOMAIN {s}.dom AS bigint DEFAULT nextval('{s}.decoy_seq') CHECK ({s}.f(VALUE));
             CREATE TYPE {s}.\"double\" AS (x integer);
             CREATE TYPE {s}.mood AS ENUM ('happy');"
        )))
        .execute(&admin)
        .await?;
        let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
        let warehouse = Warehouse::connect(&url).await?;
        Ok(Self { schema, warehouse, admin })
    }

    async fn scalar(&self, sql: &str) -> Result<i64> {
        let sql = sql.replace("{s}", &self.schema);
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&self.admin).await?)
    }

    /// Nothing any decoy holds ran or changed: no decoy function ran, the
    /// sequence never moved, the decoy table has no trigger and no child.
    async fn untouched(&self) -> Result<()> {
        ensure!(self.scalar("SELECT count(*) FROM {s}.ran").await? == 0, "a decoy function ran");
        let called: bool =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT is_called FROM {}.decoy_seq", self.schema)))
                .fetch_one(&self.admin)
                .await?;
        ensure!(!called, "the decoy sequence moved");
        ensure!(self.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = '{s}.decoy'::regclass").await? == 0);
        ensure!(self.scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = '{s}.decoy'::regclass").await? == 0);
        Ok(())
    }

    /// The catalog proof alone: `statements` run as written in a dry run.
    async fn prove(&self, tables: &[&str], statements: &[&str]) -> Result<Vec<String>> {
        let Warehouse::Postgres(engine) = &self.warehouse else { anyhow::bail!("a PostgreSQL warehouse") };
        let target = Target {
            dialect: Dialect::Postgres,
            schema: self.schema.clone(),
            table: "orders".into(),
            columns: self.warehouse.columns("orders").await?,
        };
        let tables: Vec<String> = tables.iter().map(|t| (*t).to_owned()).collect();
        let statements: Vec<String> = statements.iter().map(|s| s.replace("{s}", &self.schema)).collect();
        Ok(engine.prove(&target, &tables, &statements, mend_store::DryRun::default()).await?)
    }

    async fn drop(self) -> Result<()> {
        self.warehouse.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.schema))).execute(&self.admin).await?;
        Ok(())
    }
}

#[tokio::test]
async fn hostile_drafts_are_refused_before_anything_runs() -> Result<()> {
    let fixture = Fixture::new().await?;
    let cases = [
        // The three that reached the warehouse before.
        ("ALTER TABLE orders ADD COLUMN seq_col BIGSERIAL", "serial"),
        (r#"CREATE TABLE "orders__ref" (id bigint REFERENCES "decoy" (id) ON DELETE CASCADE)"#, "may not carry"),
        (r#"CREATE TABLE "orders__inh" (id integer) INHERITS ("decoy")"#, "INHERITS"),
        // One of each kind found since.
        ("ALTER TABLE orders ADD COLUMN d dom", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d mood", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d decoy", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d int4range", "not a built-in type"),
        ("ALTER TABLE orders ALTER COLUMN amount TYPE numeric(3,0)", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN id TYPE double precision", "not a widening"),
        ("ALTER TABLE orders ADD COLUMN d DOUBLE", "search path"),
        (r#"ALTER TABLE orders ALTER COLUMN email TYPE bytea USING convert_to("EMAIL", 'UTF8')"#, "not mend's own"),
        ("CREATE TABLE orders__l (LIKE decoy)", "LIKE"),
        ("CREATE TABLE orders__p PARTITION OF decoy FOR VALUES IN (1)", "PARTITION"),
        ("CREATE UNLOGGED TABLE orders__u (id integer)", "UNLOGGED"),
        ("CREATE TABLE orders__w (id integer) WITH (fillfactor = 10)", "only the child's columns"),
        ("ALTER TABLE orders ADD COLUMN x text DEFAULT pg_read_file('/etc/passwd')", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x bigint DEFAULT nextval('decoy_seq')", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x bigint GENERATED ALWAYS AS (id + 1) STORED", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x text CHECK (f(x))", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x text COLLATE \"C\"", "may not carry"),
        (r#"CREATE TABLE """orders__q""" (id integer)"#, "not a child table"),
    ];
    for (sql, why) in cases {
        let vetted = fixture.warehouse.vet("orders", &[sql.to_owned()], LOCK).await?;
        let [refusal] = vetted.refused.as_slice() else { anyhow::bail!("{sql}: {:?}", vetted.refused) };
        ensure!(refusal.check == Check::AllowList && refusal.reason.contains(why), "{sql}: {refusal:?}");
    }
    // One plan holding all three of the first: nothing of it runs.
    let plan: Vec<String> = cases[..3].iter().map(|(sql, _)| (*sql).to_owned()).collect();
    ensure!(fixture.warehouse.vet("orders", &plan, LOCK).await?.refused.len() == 3);
    fixture.untouched().await?;
    ensure!(fixture.warehouse.columns("orders").await?.len() == 5, "the table changed");
    fixture.drop().await
}

#[tokio::test]
async fn the_catalog_proof_alone_names_what_escapes() -> Result<()> {
    let fixture = Fixture::new().await?;
    let escapes = [
        ("ALTER TABLE orders ADD COLUMN seq_col BIGSERIAL", "orders_seq_col_seq"),
        ("CREATE TABLE {s}.orders__ref (id bigint REFERENCES decoy (id) ON DELETE CASCADE)", "decoy"),
        ("CREATE TABLE {s}.orders__inh (id bigint) INHERITS (decoy)", "inheritance"),
        ("ALTER TABLE orders ADD COLUMN d dom", "dom"),
        (r#"ALTER TABLE orders ADD COLUMN d "double""#, "double"),
        ("ALTER TABLE orders ADD COLUMN m mood", "mood"),
        ("CREATE UNLOGGED TABLE {s}.orders__u (id integer)", "orders__u"),
        ("CREATE TABLE {s}.orders__w (id integer) WITH (fillfactor = 10)", "orders__w"),
        ("CREATE TABLE {s}.orders__l (LIKE decoy INCLUDING ALL)", "orders__l_pkey"),
        ("ALTER TABLE orders ADD COLUMN g bigint GENERATED ALWAYS AS (id * 2) STORED", "columns"),
        ("ALTER TABLE orders ADD COLUMN x text DEFAULT 'x'", "default"),
        ("ALTER TABLE orders ADD CONSTRAINT positive CHECK (amount > 0)", "positive"),
        ("CREATE INDEX orders_email ON orders (email)", "orders_email"),
        ("ALTER TABLE decoy ADD COLUMN z integer", "decoy"),
        ("ALTER TABLE orders RENAME TO orders2", "orders2"),
        ("CREATE TABLE {s}.unrelated (id integer)", "unrelated"),
        ("ALTER TABLE orders ENABLE ROW LEVEL SECURITY", "orders"),
    ];
    for (sql, named) in escapes {
        let findings = fixture
            .prove(&["orders", "orders__ref", "orders__inh", "orders__u", "orders__w", "orders__l"], &[sql])
            .await?;
        ensure!(findings.iter().any(|f| f.contains(named)), "{sql}: no finding names {named}: {findings:?}");
    }
    // mend's own renderings change nothing else, the key's index rebuilt
    // by a rewrite included.
    let own = [
        r#"ALTER TABLE "{s}"."orders" ADD COLUMN "coupon" pg_catalog.text, ADD COLUMN "at" pg_catalog.timestamptz"#,
        r#"ALTER TABLE "{s}"."orders" ALTER COLUMN "amount" TYPE pg_catalog.int8"#,
        r#"ALTER TABLE "{s}"."orders" ALTER COLUMN "id" TYPE pg_catalog.numeric(20,0)"#,
        r#"ALTER TABLE "{s}"."orders" ALTER COLUMN "note" TYPE pg_catalog.text"#,
        r#"ALTER TABLE "{s}"."orders" ALTER COLUMN "email" TYPE pg_catalog.bytea USING pg_catalog.convert_to("email", 'UTF8')"#,
        r#"ALTER TABLE "{s}"."orders" ALTER COLUMN "email" DROP NOT NULL"#,
        r#"ALTER TABLE "{s}"."orders" RENAME COLUMN "price" TO "cost""#,
        r#"CREATE TABLE "{s}"."orders__lines" ("sku" pg_catalog.text, "qty" pg_catalog.int4, "doc" pg_catalog.jsonb)"#,
    ];
    for sql in own {
        let findings = fixture.prove(&["orders", "orders__lines"], &[sql]).await?;
        ensure!(findings.is_empty(), "{sql}: {findings:?}");
    }
    ensure!(fixture.prove(&["orders", "orders__lines"], &own).await?.is_empty(), "the whole plan at once");
    fixture.drop().await
}

#[tokio::test]
async fn every_spelling_of_an_allowed_statement_passes_and_runs_as_mends_own() -> Result<()> {
    let fixture = Fixture::new().await?;
    let s = fixture.schema.clone();
    let spellings = [
        format!("ALTER TABLE {s}.orders ADD COLUMN Coupon TEXT"),
        format!(r#"ALTER TABLE "{s}"."orders" ADD "coupon" pg_catalog.text"#),
        r#"ALTER TABLE ORDERS ADD COLUMN coupon "text""#.to_owned(),
        r#"ALTER TABLE U&"\006Frders" ADD COLUMN U&"c\006Fupon" text"#.to_owned(),
    ];
    for sql in &spellings {
        let vetted = fixture.warehouse.vet("orders", std::slice::from_ref(sql), LOCK).await?;
        ensure!(vetted.refused.is_empty(), "{sql}: {:?}", vetted.refused);
        ensure!(vetted.statements == [format!(r#"ALTER TABLE "{s}"."orders" ADD COLUMN "coupon" pg_catalog.text"#)]);
    }
    let conversions = [
        r#"ALTER TABLE orders ALTER COLUMN email TYPE bytea USING convert_to("email", 'UTF8')"#,
        "ALTER TABLE orders ALTER COLUMN EMAIL TYPE BYTEA USING CONVERT_TO(email, 'utf-8')",
        "ALTER TABLE orders ALTER email SET DATA TYPE bytea USING pg_catalog.convert_to(email, 'UTF8')",
    ];
    for sql in conversions {
        let vetted = fixture.warehouse.vet("orders", &[sql.to_owned()], LOCK).await?;
        ensure!(vetted.refused.is_empty(), "{sql}: {:?}", vetted.refused);
    }
    // The schema's own convert_to never runs: mend's rendering names the catalog's.
    fixture.untouched().await?;
    // A whole plan, each statement against the columns the ones before leave.
    let plan = [
        "ALTER TABLE orders ADD COLUMN coupon TEXT".to_owned(),
        "ALTER TABLE orders RENAME COLUMN coupon TO code".to_owned(),
        "ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT, ALTER COLUMN email DROP NOT NULL".to_owned(),
        "CREATE TABLE orders__lines (sku TEXT, qty INTEGER)".to_owned(),
    ];
    let vetted = fixture.warehouse.vet("orders", &plan, LOCK).await?;
    ensure!(vetted.refused.is_empty(), "{:?}", vetted.refused);
    fixture.drop().await
}

/// Pieces of statements, from sqlparser's reading of SQL text: what the
/// generator puts together as an AST and renders.
struct Pieces {
    /// Names of tables: the dataset's (in several spellings) first.
    tables: Vec<ObjectName>,
    /// Columns the table has, then new names.
    existing: Vec<Ident>,
    new: Vec<Ident>,
    /// Types mend writes first, then others.
    types: Vec<DataType>,
    options: Vec<ColumnOptionDef>,
    usings: Vec<Expr>,
    /// CREATE TABLE statements whose table-level parts (INHERITS, LIKE,
    /// PARTITION, WITH, TEMPORARY, constraints…) are borrowed.
    creates: Vec<CreateTable>,
    /// ALTER TABLE operations other than those built here.
    operations: Vec<AlterTableOperation>,
}

/// How many of [`Pieces::types`] are types mend writes.
const WRITTEN_TYPES: usize = 15;
/// How many of [`Pieces::tables`] are the dataset's table.
const OWN_NAMES: usize = 4;

fn parse_one(sql: &str) -> Statement {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut statements) if statements.len() == 1 => statements.remove(0),
        other => panic!("the generator's own piece {sql:?} does not parse: {other:?}"),
    }
}

fn create(sql: &str) -> CreateTable {
    match parse_one(sql) {
        Statement::CreateTable(create) => create,
        other => panic!("{other} is not a CREATE TABLE"),
    }
}

fn pieces(schema: &str) -> Pieces {
    let name = |text: &str| create(&format!("CREATE TABLE {text} (x integer)")).name;
    let ident = |text: &str| create(&format!("CREATE TABLE t ({text} integer)")).columns.remove(0).name;
    let ty = |text: &str| create(&format!("CREATE TABLE t (x {text})")).columns.remove(0).data_type;
    let option = |text: &str| create(&format!("CREATE TABLE t (x integer {text})")).columns.remove(0).options.remove(0);
    let expr = |text: &str| match parse_one(&format!("ALTER TABLE t ALTER COLUMN x TYPE bytea USING {text}")) {
        Statement::AlterTable(alter) => match alter.operations.into_iter().next() {
            Some(AlterTableOperation::AlterColumn {
                op: AlterColumnOperation::SetDataType { using: Some(e), .. },
                ..
            }) => e,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    let own = format!("{schema}.orders");
    Pieces {
        tables: [
            "orders",
            "ORDERS",
            own.as_str(),
            "\"orders\"",
            "\"Orders\"",
            "public.orders",
            "decoy",
            "orders__c",
            "other.orders__c",
            "\"\"\"orders__c\"\"\"",
        ]
        .iter()
        .map(|t| name(t))
        .collect(),
        existing: ["email", "EMAIL", "amount", "price", "note", "id", "\"Email\""].iter().map(|t| ident(t)).collect(),
        new: ["c", "C", "\"C\"", "d", "email"].iter().map(|t| ident(t)).collect(),
        types: [
            "text",
            "bigint",
            "integer",
            "real",
            "double precision",
            "numeric(12,2)",
            "numeric(30,2)",
            "numeric",
            "bytea",
            "boolean",
            "date",
            "timestamptz",
            "timestamp",
            "jsonb",
            "pg_catalog.int8",
            "smallint",
            "numeric(3,0)",
            "varchar(5)",
            "text[]",
            "serial",
            "bigserial",
            "dom",
            "mood",
            "\"double\"",
            "double",
            "decoy",
            "int4range",
            "public.text",
            "timestamp(0)",
            "float(10)",
            "oid",
            "xml",
            "money",
            "char(3)",
        ]
        .iter()
        .map(|t| ty(t))
        .collect(),
        options: [
            "NULL",
            "NOT NULL",
            "DEFAULT 1",
            "DEFAULT nextval('decoy_seq')",
            "DEFAULT f(1)",
            "UNIQUE",
            "PRIMARY KEY",
            "CHECK (f(x))",
            "REFERENCES decoy (id)",
            "COLLATE \"C\"",
            "GENERATED ALWAYS AS IDENTITY",
            "GENERATED ALWAYS AS (f(1)) STORED",
            "CONSTRAINT n NULL",
        ]
        .iter()
        .map(|t| option(t))
        .collect(),
        usings: [
            "convert_to(email, 'UTF8')",
            "convert_to(\"EMAIL\", 'UTF8')",
            "convert_from(email, 'UTF8')",
            "f(email)",
            "email::bytea",
            "amount + 1",
            "pg_catalog.convert_to(email, 'utf8')",
            "public.convert_to(email, 'UTF8')",
            "convert_to(note, 'UTF8')",
        ]
        .iter()
        .map(|t| expr(t))
        .collect(),
        creates: [
            "CREATE TABLE t (x integer) INHERITS (decoy)",
            "CREATE TABLE t (LIKE decoy)",
            "CREATE TABLE t PARTITION OF decoy FOR VALUES FROM (1) TO (2)",
            "CREATE TABLE t (x integer) PARTITION BY RANGE (x)",
            "CREATE TABLE t (x integer) WITH (fillfactor = 10)",
            "CREATE TEMPORARY TABLE t (x integer)",
            "CREATE UNLOGGED TABLE t (x integer)",
            "CREATE TABLE t (x integer, CHECK (f(x)))",
            "CREATE TABLE t (x integer, FOREIGN KEY (x) REFERENCES decoy (id))",
            "CREATE TABLE t (x integer) TABLESPACE pg_default",
            "CREATE TABLE IF NOT EXISTS t (x integer)",
        ]
        .iter()
        .map(|t| create(t))
        .collect(),
        operations: [
            "ALTER TABLE t DROP COLUMN email",
            "ALTER TABLE t ALTER COLUMN email SET NOT NULL",
            "ALTER TABLE t ALTER COLUMN email SET DEFAULT 'x'",
            "ALTER TABLE t ADD CONSTRAINT k CHECK (f(id))",
            "ALTER TABLE t RENAME TO t2",
            "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY",
        ]
        .iter()
        .flat_map(|t| match parse_one(t) {
            Statement::AlterTable(alter) => alter.operations,
            other => panic!("{other} is not an ALTER TABLE"),
        })
        .collect(),
    }
}

/// An index into `len` pieces, the first `first` of them (the plain ones)
/// chosen two times in three.
fn pick(first: usize, len: usize) -> impl Strategy<Value = usize> + Clone {
    prop_oneof![2 => 0..first, 1 => 0..len]
}

/// A statement put together from pieces as sqlparser's AST and rendered:
/// an ALTER TABLE of one to three operations, or a CREATE TABLE. Plain
/// pieces (the table's own name, types mend writes, no options) are chosen
/// more often, so the allow-list passes a fair share and the catalog proof
/// has something to prove.
fn statement(pieces: &Pieces) -> impl Strategy<Value = String> + '_ {
    let types = pick(WRITTEN_TYPES, pieces.types.len());
    let options = prop_oneof![Just(Vec::new()), proptest::collection::vec(0..pieces.options.len(), 1..3)];
    let column = (0..pieces.new.len(), types.clone(), options).prop_map(move |(name, ty, options)| ColumnDef {
        name: pieces.new[name].clone(),
        data_type: pieces.types[ty].clone(),
        options: options.iter().map(|&o| pieces.options[o].clone()).collect(),
    });
    let existing = 0..pieces.existing.len();
    let operation = prop_oneof![
        3 => column.clone().prop_map(|column_def| AlterTableOperation::AddColumn {
            column_keyword: true,
            if_not_exists: false,
            column_def,
            column_position: None,
        }),
        3 => (existing.clone(), types, prop_oneof![2 => Just(None), 1 => (0..pieces.usings.len()).prop_map(Some)])
            .prop_map(move |(c, ty, using)| AlterTableOperation::AlterColumn {
                column_name: pieces.existing[c].clone(),
                op: AlterColumnOperation::SetDataType {
                    data_type: pieces.types[ty].clone(),
                    using: using.map(|u| pieces.usings[u].clone()),
                    had_set: false,
                },
            }),
        1 => existing.clone().prop_map(move |c| AlterTableOperation::AlterColumn {
            column_name: pieces.existing[c].clone(),
            op: AlterColumnOperation::DropNotNull,
        }),
        1 => (existing, 0..pieces.new.len()).prop_map(move |(a, b)| AlterTableOperation::RenameColumn {
            old_column_name: pieces.existing[a].clone(),
            new_column_name: pieces.new[b].clone(),
        }),
        1 => (0..pieces.operations.len()).prop_map(move |o| pieces.operations[o].clone()),
    ];
    let table = pick(OWN_NAMES, pieces.tables.len());
    let operations = prop_oneof![3 => proptest::collection::vec(operation.clone(), 1..2), 1 => proptest::collection::vec(operation, 2..4)];
    let alter = (table, operations).prop_map(move |(name, operations)| {
        let Statement::AlterTable(mut alter) = parse_one("ALTER TABLE t DROP COLUMN x") else { unreachable!() };
        alter.name = pieces.tables[name].clone();
        alter.operations = operations;
        Statement::AlterTable(alter).to_string()
    });
    let child = prop_oneof![
        3 => Just("orders__c".to_owned()),
        1 => (0..pieces.tables.len()).prop_map(move |t| pieces.tables[t].to_string()),
    ];
    let create = (
        child,
        proptest::collection::vec(column, 1..4),
        prop_oneof![2 => Just(None), 1 => (0..pieces.creates.len()).prop_map(Some)],
    )
        .prop_map(move |(name, columns, borrowed)| {
            let name = create(&format!("CREATE TABLE {name} (x integer)")).name;
            let mut create = match borrowed {
                Some(b) => pieces.creates[b].clone(),
                None => CreateTableBuilder::new(name.clone()).build(),
            };
            create.name = name;
            if create.columns.len() <= 1 {
                // Distinct names, so the dry run has a table to create.
                let mut names = HashSet::new();
                create.columns = columns.into_iter().filter(|c| names.insert(c.name.value.to_lowercase())).collect();
            }
            Statement::CreateTable(create).to_string()
        });
    prop_oneof![3 => alter, 1 => create]
}

#[tokio::test]
async fn fuzz_generated_statements_never_change_another_object() -> Result<()> {
    let cases: usize = std::env::var("MEND_GUARD_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300);
    let fixture = Fixture::new().await?;
    let pieces = pieces(&fixture.schema);
    let strategy = statement(&pieces);
    let mut runner = TestRunner::default();
    let target = Target {
        dialect: Dialect::Postgres,
        schema: fixture.schema.clone(),
        table: "orders".into(),
        columns: fixture.warehouse.columns("orders").await?,
    };
    let (mut accepted, mut ran, mut seen) = (0, 0, HashSet::new());
    for _ in 0..cases {
        let sql = strategy.new_tree(&mut runner).map_err(|e| anyhow::anyhow!("{e}"))?.current();
        if !seen.insert(sql.clone()) {
            continue;
        }
        // Only statements the allow-list passes reach the database.
        if check(&sql, &target).is_err() {
            continue;
        }
        accepted += 1;
        let vetted = fixture.warehouse.vet("orders", std::slice::from_ref(&sql), LOCK).await?;
        let escaped: Vec<_> = vetted.refused.iter().filter(|r| r.check != Check::DryRun).collect();
        ensure!(escaped.is_empty(), "{sql} passed the allow-list but: {escaped:?}");
        ran += usize::from(vetted.refused.is_empty());
    }
    fixture.untouched().await?;
    println!(
        "{} distinct statements generated, {accepted} passed the allow-list, {ran} of them ran in the dry run; \
         none changed another object",
        seen.len()
    );
    // Not vacuous: the proof had statements to prove (the share falls as
    // the distinct statements the allow-list passes run out).
    ensure!(ran >= 20, "too few statements ran ({ran} of {}) to prove anything", seen.len());
    fixture.drop().await.context("dropping the test's schema")
}

#[tokio::test]
async fn the_sqlite_proof_names_what_escapes_and_passes_mends_own() -> Result<()> {
    let path = std::env::temp_dir().join(format!("{}.db", unique("guard")));
    let url = format!("sqlite://{}", path.display());
    let warehouse = Warehouse::connect(&url).await?;
    let raw = sqlx::SqlitePool::connect(&url).await?;
    sqlx::raw_sql(
        "CREATE TABLE orders (id INTEGER NOT NULL, email TEXT, _mend_partition INTEGER NOT NULL, \
         _mend_offset INTEGER NOT NULL); CREATE TABLE decoy (id INTEGER);",
    )
    .execute(&raw)
    .await?;
    let Warehouse::Sqlite(engine) = &warehouse else { anyhow::bail!("a SQLite warehouse") };
    let target = Target {
        dialect: Dialect::Sqlite,
        schema: "main".into(),
        table: "orders".into(),
        columns: warehouse.columns("orders").await?,
    };
    let tables = ["orders".to_owned(), "orders__x".to_owned()];
    let prove = |sql: &str| {
        let statements = vec![sql.to_owned()];
        let (engine, target, tables) = (engine.clone(), target.clone(), tables.clone());
        async move { engine.prove(&target, &tables, &statements, mend_store::DryRun::default()).await }
    };
    for (sql, named) in [
        ("CREATE INDEX orders_email ON orders (email)", "index orders_email appeared"),
        ("CREATE TRIGGER t AFTER INSERT ON orders BEGIN DELETE FROM decoy; END", "trigger t appeared"),
        ("ALTER TABLE decoy ADD COLUMN z TEXT", "table decoy changed, outside"),
        ("CREATE VIEW v AS SELECT * FROM decoy", "view v appeared"),
        ("CREATE TABLE orders__y (a INTEGER)", "table orders__y appeared, outside"),
    ] {
        let findings = prove(sql).await?;
        ensure!(findings.iter().any(|f| f.contains(named)), "{sql}: {findings:?}");
    }
    for sql in [
        r#"ALTER TABLE "main"."orders" ADD COLUMN "coupon" TEXT"#,
        r#"ALTER TABLE "main"."orders" RENAME COLUMN "email" TO "mail""#,
        r#"CREATE TABLE "main"."orders__x" ("a" INTEGER, "b" BLOB)"#,
    ] {
        let findings = prove(sql).await?;
        ensure!(findings.is_empty(), "{sql}: {findings:?}");
    }
    // Through the allow-list: SQLite's spellings pass, its limits are said.
    let vetted = warehouse.vet("orders", &["alter table ORDERS add column Coupon integer".to_owned()], LOCK).await?;
    ensure!(
        vetted.refused.is_empty()
            && vetted.statements == [r#"ALTER TABLE "main"."orders" ADD COLUMN "Coupon" INTEGER"#]
    );
    let vetted = warehouse.vet("orders", &["ALTER TABLE orders ALTER COLUMN id TYPE BIGINT".to_owned()], LOCK).await?;
    ensure!(vetted.refused.iter().any(|r| r.reason.contains("SQLite cannot")), "{vetted:?}");
    ensure!(warehouse.columns("orders").await?.len() == 2, "the dry runs were rolled back");
    warehouse.close().await;
    raw.close().await;
    std::fs::remove_file(&path).ok();
    Ok(())
}
