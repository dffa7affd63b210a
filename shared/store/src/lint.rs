//! What squawk, a PostgreSQL migration linter, says of a statement as mend
//! runs it: shown with its cost to the person who approves it. A finding
//! advises; it never refuses (the allow-list and the dry run decide).

use mend_model::events::LintFinding;
use squawk_linter::{Linter, Rule};

/// The findings on one PostgreSQL statement.
///
/// Two rules are left out because mend satisfies them itself: the apply
/// sets `lock_timeout` and a `statement_timeout` before every statement
/// (`[dataset.ddl]`). Each plan runs in one transaction.
pub fn findings(statement: &str) -> Vec<LintFinding> {
    let file = squawk_syntax::SourceFile::parse(statement);
    let mut linter = Linter::with_rules(&[], &[Rule::RequireTimeoutSettings]);
    linter.settings.assume_in_transaction = true;
    linter
        .lint(&file, statement)
        .into_iter()
        .map(|v| LintFinding { rule: v.code.to_string(), message: v.message, help: v.help })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::findings;

    fn rules(statement: &str) -> Vec<String> {
        findings(statement).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn what_mend_runs_is_linted() {
        assert_eq!(rules(r#"ALTER TABLE "orders" ALTER COLUMN "amount" TYPE bigint"#), ["changing-column-type"]);
        assert_eq!(rules(r#"ALTER TABLE "orders" RENAME COLUMN "email" TO "customer_email""#), ["renaming-column"]);
        assert_eq!(rules(r#"ALTER TABLE "orders" ALTER COLUMN "email" DROP NOT NULL"#), ["ban-drop-not-null"]);
        // A nullable column without a default: nothing to say (the timeouts
        // are mend's own).
        assert!(rules(r#"ALTER TABLE "orders" ADD COLUMN "note" text"#).is_empty());
    }
}
