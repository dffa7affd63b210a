//! Expand/contract: widening a column of a table too large to rewrite
//! under ACCESS EXCLUSIVE (PostgreSQL's `ALTER COLUMN TYPE` of `integer`
//! to `bigint` copies every row and index). Instead:
//!
//! 1. **expand** — the wider column is added beside the old one
//!    (`c__mend_wide`, metadata only) and a trigger mend installs writes it
//!    from the old column on every insert and update, whoever writes (the
//!    loader, a replay, anyone else), in one short transaction;
//! 2. **backfill** — every earlier row gets the value, in ranges of pages,
//!    each its own short transaction: nothing waits behind it but a writer
//!    of the same rows, for one batch;
//! 3. **swap** — in one transaction under a short lock: the old column
//!    renamed to `c__mend_old` (and NOT NULL dropped from it, since nothing
//!    writes it any more), the wide one renamed to `c`, the trigger
//!    dropped, the contract moved. The old column stays: mend never drops
//!    a column; a person drops it when nothing reads it.
//!
//! The planner offers it ([`mend_config::Ddl::expand_contract`]) for a
//! column no index, constraint, default or view depends on (those would
//! stay on the old column) and that is not a key.

/// The two columns of a dual write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dual {
    /// The column being widened (its name before the swap and after).
    pub column: String,
    /// The wider column beside it until the swap.
    pub wide: String,
}

impl Dual {
    pub fn of(column: &str) -> Self {
        Self { column: column.to_owned(), wide: wide_name(column) }
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Rows updated.
    pub rows: u64,
    /// Pages of the table when it began.
    pub pages: i64,
    /// Transactions it took.
    pub batches: u64,
    /// Batches tried again because a row's lock was not free in time.
    pub lock_waits: u64,
}

/// The wider column's name until the swap.
pub fn wide_name(column: &str) -> String {
    format!("{column}__mend_wide")
}

/// The old column's name after the swap.
pub fn old_name(column: &str) -> String {
    format!("{column}__mend_old")
}
