use super::*;

fn column(name: &str, sql_type: &str, nullable: bool) -> Column {
    Column { name: name.into(), sql_type: sql_type.into(), nullable }
}

fn target(dialect: Dialect) -> Target {
    Target {
        dialect,
        schema: if dialect == Dialect::Postgres { "public" } else { "main" }.into(),
        table: "orders".into(),
        columns: vec![
            column("id", "bigint", false),
            column("email", "text", false),
            column("amount", "integer", true),
            column("price", "numeric(10,2)", true),
            column("small", "smallint", true),
        ],
    }
}

fn pg(sql: &str) -> Result<Allowed, Refused> {
    check(sql, &target(Dialect::Postgres))
}

/// Asserts each statement is refused with a reason containing `why`.
fn refused(cases: &[(&str, &str)]) {
    for (sql, why) in cases {
        match pg(sql) {
            Ok(allowed) => panic!("{sql} was allowed as {}", allowed.sql),
            Err(refused) => assert!(refused.reason.contains(why), "{sql}: {}", refused.reason),
        }
    }
}

#[test]
fn allows_what_plans_do_and_renders_it_qualified() {
    for (sql, rendered) in [
        (
            r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#,
            r#"ALTER TABLE "public"."orders" ADD COLUMN "coupon" pg_catalog.text"#,
        ),
        (
            "ALTER TABLE orders ADD COLUMN coupon TEXT NULL",
            r#"ALTER TABLE "public"."orders" ADD COLUMN "coupon" pg_catalog.text"#,
        ),
        (
            r#"ALTER TABLE "orders" ALTER COLUMN "email" DROP NOT NULL"#,
            r#"ALTER TABLE "public"."orders" ALTER COLUMN "email" DROP NOT NULL"#,
        ),
        (
            r#"ALTER TABLE "orders" ALTER COLUMN "amount" TYPE BIGINT"#,
            r#"ALTER TABLE "public"."orders" ALTER COLUMN "amount" TYPE pg_catalog.int8"#,
        ),
        (
            r#"ALTER TABLE "orders" ALTER COLUMN "price" TYPE NUMERIC(12, 2)"#,
            r#"ALTER TABLE "public"."orders" ALTER COLUMN "price" TYPE pg_catalog.numeric(12,2)"#,
        ),
        (
            r#"ALTER TABLE "orders" ALTER COLUMN "email" TYPE BYTEA USING convert_to("email", 'UTF8')"#,
            r#"ALTER TABLE "public"."orders" ALTER COLUMN "email" TYPE pg_catalog.bytea USING pg_catalog.convert_to("email", 'UTF8')"#,
        ),
        (
            r#"ALTER TABLE "orders" RENAME COLUMN "email" TO "customer_email""#,
            r#"ALTER TABLE "public"."orders" RENAME COLUMN "email" TO "customer_email""#,
        ),
        (
            r#"CREATE TABLE "orders__lines" (sku TEXT, qty INTEGER NULL)"#,
            r#"CREATE TABLE "public"."orders__lines" ("sku" pg_catalog.text, "qty" pg_catalog.int4)"#,
        ),
        (
            r#"ALTER TABLE orders ADD COLUMN a TIMESTAMPTZ, ADD COLUMN b JSONB, ALTER COLUMN a DROP NOT NULL"#,
            r#"ALTER TABLE "public"."orders" ADD COLUMN "a" pg_catalog.timestamptz, ADD COLUMN "b" pg_catalog.jsonb, ALTER COLUMN "a" DROP NOT NULL"#,
        ),
    ] {
        assert_eq!(pg(sql).map(|a| a.sql), Ok(rendered.to_owned()), "{sql}");
    }
    let sqlite = check(r#"ALTER TABLE "orders" ADD COLUMN "c" TEXT"#, &target(Dialect::Sqlite));
    assert_eq!(sqlite.map(|a| a.sql), Ok(r#"ALTER TABLE "main"."orders" ADD COLUMN "c" TEXT"#.to_owned()));
}

#[test]
fn every_spelling_of_an_allowed_statement_is_accepted() {
    let same = |spellings: &[&str], rendered: &str| {
        for sql in spellings {
            assert_eq!(pg(sql).map(|a| a.sql), Ok(rendered.to_owned()), "{sql}");
        }
    };
    same(
        &[
            r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#,
            "alter table public.orders add coupon text",
            r#"ALTER TABLE "public"."orders" ADD COLUMN COUPON text"#,
            "ALTER TABLE ORDERS ADD COLUMN coupon TEXT",
            r#"ALTER TABLE U&"\006Frders" ADD COLUMN coupon TEXT"#,
            r#"ALTER TABLE U&"!006F!0072ders" UESCAPE '!' ADD COLUMN U&"coupon" TEXT"#,
            "ALTER TABLE IF EXISTS orders ADD COLUMN coupon pg_catalog.text",
            r#"ALTER TABLE orders ADD COLUMN coupon "text""#,
        ],
        r#"ALTER TABLE "public"."orders" ADD COLUMN "coupon" pg_catalog.text"#,
    );
    same(
        &[
            "ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT",
            "ALTER TABLE orders ALTER amount SET DATA TYPE int8",
            r#"ALTER TABLE orders ALTER COLUMN AMOUNT TYPE "int8""#,
            "ALTER TABLE orders ALTER COLUMN amount TYPE pg_catalog.int8",
        ],
        r#"ALTER TABLE "public"."orders" ALTER COLUMN "amount" TYPE pg_catalog.int8"#,
    );
    same(
        &[
            r#"ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING convert_to("email", 'UTF8')"#,
            "ALTER TABLE orders ALTER COLUMN email TYPE bytea USING convert_to(EMAIL, 'utf8')",
            "ALTER TABLE orders ALTER COLUMN email TYPE bytea USING CONVERT_TO(email, 'UTF-8')",
            "ALTER TABLE orders ALTER COLUMN email TYPE bytea USING pg_catalog.convert_to(email, 'Unicode')",
        ],
        r#"ALTER TABLE "public"."orders" ALTER COLUMN "email" TYPE pg_catalog.bytea USING pg_catalog.convert_to("email", 'UTF8')"#,
    );
    same(
        &[
            "ALTER TABLE orders ALTER COLUMN amount TYPE DOUBLE PRECISION",
            "ALTER TABLE orders ALTER COLUMN amount TYPE FLOAT(53)",
            "ALTER TABLE orders ALTER COLUMN amount TYPE float8",
        ],
        r#"ALTER TABLE "public"."orders" ALTER COLUMN "amount" TYPE pg_catalog.float8"#,
    );
}

#[test]
fn serial_types_are_refused_in_every_spelling() {
    refused(&[
        ("ALTER TABLE orders ADD COLUMN seq_col BIGSERIAL", "serial"),
        ("ALTER TABLE orders ADD COLUMN s SERIAL", "serial"),
        ("ALTER TABLE orders ADD COLUMN s serial8", "serial"),
        (r#"ALTER TABLE orders ADD COLUMN s "serial""#, "serial"),
        ("ALTER TABLE orders ADD COLUMN s smallserial", "serial"),
        ("ALTER TABLE orders ADD COLUMN s pg_catalog.serial4", "serial"),
        ("CREATE TABLE orders__s (id bigserial)", "serial"),
    ]);
}

#[test]
fn types_that_are_not_built_in_are_refused() {
    refused(&[
        ("ALTER TABLE orders ADD COLUMN d my_domain", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d public.text", "not a built-in type"),
        (r#"ALTER TABLE orders ADD COLUMN d "TEXT""#, "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d mood", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d int4range", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d decoy", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d orders", "not a built-in type"),
        ("ALTER TABLE orders ADD COLUMN d TEXT[]", "not a type mend writes"),
        ("ALTER TABLE orders ADD COLUMN d VARCHAR(10)", "not a type mend writes"),
        ("ALTER TABLE orders ADD COLUMN d TIMESTAMP(0)", "not a type mend writes"),
        ("ALTER TABLE orders ADD COLUMN d NUMERIC(5, -2)", "negative scale"),
        ("ALTER TABLE orders ADD COLUMN d NUMERIC(2, 5)", "scale 0 to the precision"),
        // sqlparser reads DOUBLE as a float; PostgreSQL looks `double` up.
        ("ALTER TABLE orders ALTER COLUMN amount TYPE DOUBLE", "search path"),
        ("ALTER TABLE orders ADD COLUMN d DOUBLE", "search path"),
        (r#"ALTER TABLE orders ADD COLUMN d "double""#, "not a built-in type"),
    ]);
}

#[test]
fn narrowings_and_rounding_promotions_are_not_widenings() {
    refused(&[
        ("ALTER TABLE orders ALTER COLUMN amount TYPE NUMERIC(3,0)", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN amount TYPE NUMERIC(10,2)", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN id TYPE NUMERIC(18)", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN id TYPE DOUBLE PRECISION", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN amount TYPE REAL", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN price TYPE NUMERIC(10,3)", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN id TYPE INTEGER", "not a widening"),
        ("ALTER TABLE orders ALTER COLUMN email TYPE INTEGER USING 0", "not a widening"),
    ]);
    assert!(pg("ALTER TABLE orders ALTER COLUMN amount TYPE NUMERIC(12,2)").is_ok());
    assert!(pg("ALTER TABLE orders ALTER COLUMN small TYPE REAL").is_ok());
    assert!(pg("ALTER TABLE orders ALTER COLUMN price TYPE NUMERIC(11,3)").is_ok());
}

#[test]
fn using_is_only_mends_conversion_of_the_same_column() {
    refused(&[
        (r#"ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING convert_to("EMAIL", 'UTF8')"#, "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING convert_to(other, 'UTF8')", "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING convert_to(email, 'LATIN1')", "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING public.convert_to(email, 'UTF8')", "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING decode(email, 'hex')", "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN email TYPE BYTEA USING convert_from(email, 'UTF8')", "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT USING amount + 1", "not mend's own"),
        ("ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT USING f(amount)", "not mend's own"),
    ]);
}

#[test]
fn child_tables_tied_to_other_objects_are_refused() {
    refused(&[
        (r#"CREATE TABLE "orders__ref" (id bigint REFERENCES "decoy" (id) ON DELETE CASCADE)"#, "may not carry"),
        (r#"CREATE TABLE "orders__inh" (id integer) INHERITS ("decoy")"#, "INHERITS"),
        ("CREATE TABLE orders__l (LIKE decoy)", "LIKE"),
        ("CREATE TABLE orders__p PARTITION OF decoy FOR VALUES IN (1)", "PARTITION"),
        ("CREATE TABLE orders__p (id integer) PARTITION BY RANGE (f(id))", "PARTITION"),
        ("CREATE TABLE orders__c (id integer, CHECK (f(id)))", "constraints"),
        ("CREATE TABLE orders__c (id integer, FOREIGN KEY (id) REFERENCES decoy (id))", "constraints"),
        ("CREATE TABLE orders__x AS SELECT * FROM pg_shadow", "AS SELECT"),
    ]);
}

#[test]
fn storage_options_on_a_child_are_refused() {
    refused(&[
        ("CREATE UNLOGGED TABLE orders__u (id integer)", "UNLOGGED"),
        ("CREATE TEMP TABLE orders__t (id integer)", "TEMPORARY"),
        ("CREATE TEMPORARY TABLE orders__t (id integer)", "TEMPORARY"),
        ("CREATE TABLE orders__w (id integer) WITH (fillfactor = 10)", "only the child's columns"),
        ("CREATE TABLE orders__s (id integer) TABLESPACE pg_default", "only the child's columns"),
        ("CREATE TABLE IF NOT EXISTS orders__i (id integer)", "IF NOT EXISTS"),
        ("CREATE TABLE orders__e ()", "without a column"),
    ]);
}

#[test]
fn column_options_are_refused_on_an_added_column_and_a_child() {
    refused(&[
        ("ALTER TABLE orders ADD COLUMN x TEXT DEFAULT pg_read_file('/etc/passwd')", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x OID DEFAULT lo_import('/etc/passwd')", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x BIGINT DEFAULT nextval('decoy_seq')", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x BIGINT GENERATED ALWAYS AS IDENTITY", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x BIGINT GENERATED ALWAYS AS (f(id)) STORED", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x TEXT CHECK (f(x))", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x TEXT UNIQUE", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x TEXT COLLATE \"C\"", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x TEXT NOT NULL", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x TEXT CONSTRAINT named NULL", "may not carry"),
        ("ALTER TABLE orders ADD COLUMN x BIGINT REFERENCES decoy (id)", "may not carry"),
        ("CREATE TABLE orders__d (x TEXT DEFAULT pg_read_file('/etc/passwd'))", "may not carry"),
        ("CREATE TABLE orders__d (x BIGINT PRIMARY KEY)", "may not carry"),
        ("CREATE TABLE orders__d (x BIGINT GENERATED BY DEFAULT AS IDENTITY)", "may not carry"),
    ]);
}

#[test]
fn quoted_name_tricks_are_refused() {
    refused(&[
        (r#"CREATE TABLE """orders__q""" (id integer)"#, "not a child table"),
        (r#"CREATE TABLE "ORDERS__q" (id integer)"#, "not a child table"),
        (r#"CREATE TABLE other.orders__q (id integer)"#, "not in the dataset's schema"),
        (r#"CREATE TABLE "orders__" (id integer)"#, "not a child table"),
        (r#"ALTER TABLE "ORDERS" ADD COLUMN x TEXT"#, "not the dataset's table"),
        (r#"ALTER TABLE "orders ""x" ADD COLUMN x TEXT"#, "not the dataset's table"),
        (r#"ALTER TABLE other.orders ADD COLUMN x TEXT"#, "not the dataset's table"),
        (r#"ALTER TABLE warehouse.public.orders ADD COLUMN x TEXT"#, "not the dataset's table"),
        (r#"ALTER TABLE U&"\006Frders2" ADD COLUMN x TEXT"#, "not the dataset's table"),
    ]);
}

#[test]
fn everything_else_is_refused() {
    refused(&[
        ("DROP TABLE orders", "not an allowed statement kind"),
        ("DELETE FROM orders", "not an allowed statement kind"),
        ("ALTER TABLE customers ADD COLUMN x TEXT", "not the dataset's table"),
        ("ALTER TABLE orders ADD COLUMN x TEXT; DROP TABLE orders", "2 statements"),
        ("ALTER TABLE orders DROP COLUMN email", "is not allowed"),
        ("ALTER TABLE ONLY orders ADD COLUMN x TEXT", "ONLY"),
        ("ALTER TABLE orders ALTER COLUMN email SET DEFAULT 'x'", "is not allowed"),
        ("ALTER TABLE orders ALTER COLUMN email SET NOT NULL", "is not allowed"),
        ("ALTER TABLE orders ADD COLUMN email TEXT", "exists already"),
        ("ALTER TABLE orders ADD COLUMN x TEXT, ADD COLUMN x TEXT", "exists already"),
        ("ALTER TABLE orders ADD COLUMN IF NOT EXISTS x TEXT", "IF NOT EXISTS"),
        ("ALTER TABLE orders RENAME COLUMN email TO id", "exists already"),
        ("ALTER TABLE orders RENAME COLUMN email TO e, ADD COLUMN y TEXT", "stands alone"),
        ("ALTER TABLE orders RENAME TO old_orders", "is not allowed"),
        ("ALTER TABLE orders ADD CONSTRAINT c CHECK (f(id))", "is not allowed"),
        ("ALTER TABLE orders ENABLE ROW LEVEL SECURITY", "is not allowed"),
        ("CREATE TABLE evil (x TEXT)", "not a child table"),
        ("GRANT ALL ON orders TO public", "not an allowed statement kind"),
        ("this is not sql", "not valid"),
        (r#"ALTER TABLE U&"\0000" ADD x TEXT"#, "not valid"),
    ]);
    let sqlite = |sql: &str| check(sql, &target(Dialect::Sqlite)).map(|a| a.sql);
    assert!(sqlite("ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT").is_err());
    assert_eq!(
        sqlite("ALTER TABLE ORDERS ADD COLUMN Coupon integer"),
        Ok(r#"ALTER TABLE "main"."orders" ADD COLUMN "Coupon" INTEGER"#.into())
    );
    assert!(sqlite("ALTER TABLE orders ADD COLUMN EMAIL TEXT").is_err(), "SQLite's names ignore case");
}

#[test]
fn a_plans_statements_see_the_columns_the_earlier_ones_leave() {
    let mut target = target(Dialect::Postgres);
    let first = check("ALTER TABLE orders ADD COLUMN coupon TEXT", &target).expect("allowed");
    target.apply(&first);
    assert!(check("ALTER TABLE orders ADD COLUMN coupon TEXT", &target).is_err());
    let rename = check("ALTER TABLE orders RENAME COLUMN coupon TO code", &target).expect("allowed");
    target.apply(&rename);
    assert!(check("ALTER TABLE orders ALTER COLUMN code DROP NOT NULL", &target).is_ok());
    let widen = check("ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT", &target).expect("allowed");
    target.apply(&widen);
    assert!(check("ALTER TABLE orders ALTER COLUMN amount TYPE BIGINT", &target).is_err(), "already bigint");
}

#[test]
fn column_changes_read_names_as_the_database_does() {
    let (added, renamed) = column_changes("ALTER TABLE ORDERS ADD COLUMN Coupon TEXT", Dialect::Postgres, "orders");
    assert_eq!(added, ["coupon"]);
    assert!(renamed.is_empty());
    let (_, renamed) =
        column_changes(r#"ALTER TABLE "public"."orders" RENAME COLUMN "A" TO b"#, Dialect::Postgres, "orders");
    assert_eq!(renamed, [("A".to_owned(), "b".to_owned())]);
}

// Property tests in place of fuzzing (see `make fuzz`): statements from SQL
// tokens never panic the guardrail, and what it allows renders as one
// statement on the dataset's table (or a child table of it) that the
// allow-list allows again, unchanged.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const TOKENS: [&str; 44] = [
        "ALTER",
        "TABLE",
        "orders",
        "\"orders\"",
        "public.orders",
        "U&\"orders\"",
        "other",
        "orders__items",
        "ADD",
        "COLUMN",
        "DROP",
        "RENAME",
        "TO",
        "TYPE",
        "SET",
        "DATA",
        "NOT",
        "NULL",
        "DEFAULT",
        "USING",
        "bigint",
        "integer",
        "text",
        "bytea",
        "numeric(12,2)",
        "double precision",
        "coupon",
        "amount",
        "email",
        "id",
        "(",
        ")",
        ",",
        ";",
        "CREATE",
        "DELETE",
        "FROM",
        "WHERE",
        "1",
        "'x'",
        "::",
        "--",
        "INHERITS",
        "REFERENCES",
    ];

    fn statement() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(proptest::sample::select(TOKENS.to_vec()), 0..14).prop_map(|t| t.join(" ")),
            "\\PC{0,80}",
        ]
    }

    proptest! {
        #[test]
        fn fuzz_guard_statements(sql in statement(), sqlite in any::<bool>()) {
            let dialect = if sqlite { Dialect::Sqlite } else { Dialect::Postgres };
            let _ = column_changes(&sql, dialect, "orders");
            if let Ok(allowed) = check(&sql, &target(dialect)) {
                let parsed = parse(&allowed.sql, dialect).unwrap_or_default();
                prop_assert_eq!(parsed.len(), 1, "{}", sql);
                match &parsed[0] {
                    Statement::AlterTable(alter) => prop_assert!(target(dialect).is_table(&alter.name), "{}", sql),
                    Statement::CreateTable(create) => {
                        prop_assert!(create.name.to_string().contains("orders__"), "{}", sql)
                    }
                    other => prop_assert!(false, "{} allowed as {:?}", sql, other),
                }
                // mend's rendering is itself allowed, as itself.
                let again = check(&allowed.sql, &target(dialect));
                prop_assert_eq!(again.map(|a| a.sql), Ok(allowed.sql.clone()), "{}", sql);
            }
        }
    }
}

#[test]
fn the_conversion_plans_write_is_the_one_the_guard_accepts() {
    let mut table = target(Dialect::Postgres);
    table.columns.push(column("blob", "bytea", true));
    for (column, from, to) in [("email", "text", "BYTEA"), ("blob", "bytea", "TEXT"), ("amount", "integer", "BIGINT")] {
        let using = using(from, to, column);
        let sql = format!(r#"ALTER TABLE "orders" ALTER COLUMN "{column}" TYPE {to}{using}"#);
        match check(&sql, &table) {
            Ok(allowed) => assert_eq!(allowed.sql.contains("USING"), !using.is_empty(), "{}", allowed.sql),
            Err(refused) => panic!("{sql}: {}", refused.reason),
        }
    }
    assert_eq!(using("integer", "bigint", "amount"), "");
}
