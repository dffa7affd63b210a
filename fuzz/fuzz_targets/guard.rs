//! Any text as a plan's SQL statement through the guardrail, in both
//! dialects: refused or allowed, never a panic; what is allowed names the
//! dataset's own table (the property test `fuzz_guard_statements` checks
//! the parsed statement).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mend_model::{Column, Dialect};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let column =
        |name: &str, sql_type: &str, nullable| Column { name: name.into(), sql_type: sql_type.into(), nullable };
    let columns = [column("id", "bigint", false), column("email", "text", false), column("amount", "integer", true)];
    for dialect in [Dialect::Postgres, Dialect::Sqlite] {
        let _ = mend_store::guard::column_changes(sql, dialect, "orders");
        if mend_store::guard::check(sql, dialect, "orders", &columns).is_ok() {
            assert!(sql.to_lowercase().contains("orders"), "allowed without naming the table: {sql}");
        }
    }
});
