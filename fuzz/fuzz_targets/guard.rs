//! Any text as a plan's SQL statement through the allow-list, in both
//! dialects: refused or allowed, never a panic; what is allowed is rendered
//! as a statement the allow-list allows again, unchanged (the property test
//! `fuzz_guard_statements` also checks what the rendering names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mend_model::{Column, Dialect};
use mend_store::guard::{Target, check, column_changes};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let column =
        |name: &str, sql_type: &str, nullable| Column { name: name.into(), sql_type: sql_type.into(), nullable };
    let columns = vec![column("id", "bigint", false), column("email", "text", false), column("amount", "integer", true)];
    for (dialect, schema) in [(Dialect::Postgres, "public"), (Dialect::Sqlite, "main")] {
        let _ = column_changes(sql, dialect, "orders");
        let target = Target { dialect, schema: schema.into(), table: "orders".into(), columns: columns.clone() };
        if let Ok(allowed) = check(sql, &target) {
            let again = check(&allowed.sql, &target).map(|a| a.sql);
            assert_eq!(again.as_deref(), Ok(allowed.sql.as_str()), "{sql}");
        }
    }
});
