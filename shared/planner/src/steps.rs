//! The pieces every kind of plan is made of: a step, and the size gate
//! on what a plan's statements cost.

use mend_config::Ddl;
use mend_model::events::{PlanStep, StatementCost};
use mend_model::{CostClass, StepKind};

/// A step of `kind` with nothing but its description.
pub fn step(kind: StepKind, description: String) -> PlanStep {
    PlanStep { kind, description, sql: None, field: None, column: None, patch: None, cost: None }
}

/// The size gate: why `steps` need a person whatever their changes'
/// policy, if they do — a rewrite of a table larger than
/// `rewrite_gate_mib`, or a scan of more rows than `scan_gate_rows`. A
/// size the catalog cannot give counts as over the gate: unknown is never
/// taken for small.
pub fn gate(steps: &[PlanStep], ddl: &Ddl) -> Option<String> {
    let limit = ddl.rewrite_gate_mib.saturating_mul(1024 * 1024);
    let over = |cost: &StatementCost| match cost.class {
        CostClass::Metadata => None,
        CostClass::Rewrite => match cost.bytes {
            Some(bytes) if u64::try_from(bytes).unwrap_or(0) <= limit => None,
            _ => Some(format!("a rewrite of {} under {}", cost.estimate(), cost.lock.as_deref().unwrap_or("its lock"))),
        },
        CostClass::Scan => match cost.rows {
            Some(rows) if u64::try_from(rows).unwrap_or(0) <= ddl.scan_gate_rows => None,
            _ => Some(format!("a scan of {} under {}", cost.estimate(), cost.lock.as_deref().unwrap_or("its lock"))),
        },
    };
    let reasons: Vec<String> = steps.iter().filter_map(|s| s.cost.as_ref().and_then(over)).collect();
    (!reasons.is_empty()).then(|| {
        format!(
            "size gate: {} (above rewrite_gate_mib = {} or scan_gate_rows = {}) needs a person",
            reasons.join("; "),
            ddl.rewrite_gate_mib,
            ddl.scan_gate_rows
        )
    })
}
