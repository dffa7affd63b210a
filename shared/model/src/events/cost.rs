//! What a DDL step costs the table it changes ([`StatementCost`]), and how
//! it reads for the person who approves it.

use serde::{Deserialize, Serialize};

use crate::protocol::CostClass;

/// What one DDL statement costs the table it changes, known before it
/// runs: its class and lock by the database's rules for it, confirmed by a
/// dry run on an empty copy of the table where the database allows one,
/// and the table's size from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatementCost {
    pub class: CostClass,
    /// The strongest lock it takes on the dataset's table, as the database
    /// documents it (`ACCESS EXCLUSIVE`); None when it takes none.
    pub lock: Option<String>,
    /// Why it is of its class, for the person who approves it.
    pub reason: String,
    /// What the dry run on an empty copy of the table saw (the table's file
    /// kept or replaced, the lock taken); None when there was none.
    pub probe: Option<String>,
    /// The table's rows as its statistics estimate them; None when the
    /// table was never analysed.
    pub rows: Option<i64>,
    /// The table's size on disk, indexes and TOAST included; None when the
    /// database cannot say.
    pub bytes: Option<i64>,
    /// What a PostgreSQL migration linter (squawk) says of the statement as
    /// mend runs it. Left out of the hashed JSON when empty, so plans
    /// written before it keep their hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint: Vec<LintFinding>,
}

/// One finding of the linter on a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LintFinding {
    /// The linter's rule (`changing-column-type`).
    pub rule: String,
    pub message: String,
    /// What the linter advises instead, if anything.
    pub help: Option<String>,
}

impl StatementCost {
    /// The estimate in words: "about 1.2M rows, 96 MiB", "never analysed, 8 KiB".
    pub fn estimate(&self) -> String {
        let rows = match self.rows {
            Some(rows) => format!("about {} rows", count(rows)),
            None => "rows unknown (never analysed)".to_owned(),
        };
        match self.bytes {
            Some(bytes) => format!("{rows}, {}", size(bytes)),
            None => rows,
        }
    }
}

/// One line for the person who approves: "rewrite under ACCESS EXCLUSIVE,
/// about 1.2M rows, 96.0 MiB: int4 -> int8 is not binary-coercible: …".
impl std::fmt::Display for StatementCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lock =
            self.lock.as_deref().map_or_else(|| "no lock on the table".to_owned(), |lock| format!("under {lock}"));
        write!(f, "{} {lock}, {}: {}", self.class, self.estimate(), self.reason)?;
        if let Some(probe) = &self.probe {
            write!(f, " ({probe})")?;
        }
        for finding in &self.lint {
            write!(f, "; squawk {}: {}", finding.rule, finding.message)?;
        }
        Ok(())
    }
}

/// A count in words: 950, 12.3k, 4.5M.
fn count(n: i64) -> String {
    match n {
        ..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A size in binary units: 512 B, 8 KiB, 96.0 MiB.
fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
