//! The contract an approved plan moves to, computed alone: no broker,
//! registry or database.

use std::collections::BTreeMap;

use mend_model::events::{Decision, Envelope, IncidentId, PlanStep};
use mend_model::{Channel, Contract, StepKind, Verdict};

use super::{next_contract, statements};

fn step(kind: StepKind, sql: Option<&str>, field: Option<&str>, column: Option<&str>) -> PlanStep {
    PlanStep {
        kind,
        description: String::new(),
        sql: sql.map(str::to_owned),
        field: field.map(str::to_owned),
        column: column.map(str::to_owned),
        patch: None,
        cost: None,
    }
}

fn decision(writer: Option<i32>, steps: Vec<PlanStep>) -> Decision {
    Decision {
        envelope: Envelope::new("test", "orders", IncidentId::for_drift("orders", 8)),
        proposal_id: "p".into(),
        plan_hash: String::new(),
        writer_schema_id: writer,
        steps,
        outcome: Verdict::Approved,
        by: "alice".into(),
        channel: Channel::Cli,
        reason: None,
    }
}

fn contract(schema_id: u32, mapping: &[(&str, &str)]) -> Contract {
    let mapping = mapping.iter().map(|(f, c)| ((*f).to_owned(), (*c).to_owned())).collect::<BTreeMap<_, _>>();
    Contract { dataset: "orders".into(), schema_id, mapping }
}

#[test]
fn a_rename_moves_the_contract_to_the_writer_with_its_mapping_over_the_old_one() {
    let rename = decision(
        Some(8),
        vec![
            step(StepKind::Ddl, Some(r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#), None, None),
            step(StepKind::Mapping, None, Some("customer"), Some("customer_id")),
            step(StepKind::DbtPatch, None, None, None),
            step(StepKind::Ddl, Some(r#"ALTER TABLE "orders" ALTER COLUMN "amount" TYPE BIGINT"#), None, None),
        ],
    );
    let current = contract(7, &[("id", "id"), ("customer_id", "customer_id")]);
    let next = next_contract("orders", Some(current), &rename);
    let want = contract(8, &[("id", "id"), ("customer_id", "customer_id"), ("customer", "customer_id")]);
    assert_eq!(next, Some(want));
    // The DDL in the plan's order; other steps are not statements.
    assert_eq!(
        statements(&rename),
        [
            r#"ALTER TABLE "orders" ADD COLUMN "coupon" TEXT"#,
            r#"ALTER TABLE "orders" ALTER COLUMN "amount" TYPE BIGINT"#
        ]
    );
}

#[test]
fn a_plan_naming_no_schema_keeps_the_contract_on_its_own_and_fails_without_one() {
    // A pipeline failure's plan (a dbt patch) names no writer schema.
    let patch = decision(None, vec![step(StepKind::DbtPatch, None, None, None)]);
    let current = contract(7, &[("id", "id")]);
    assert_eq!(next_contract("orders", Some(current.clone()), &patch), Some(current));
    assert_eq!(next_contract("orders", None, &patch), None);
    // A first contract: the writer's, with the plan's mapping only.
    let first = decision(Some(3), vec![step(StepKind::Mapping, None, Some("id"), Some("id"))]);
    assert_eq!(next_contract("orders", None, &first), Some(contract(3, &[("id", "id")])));
    // A writer id that is no schema id (negative) is as if none was named.
    assert_eq!(next_contract("orders", None, &decision(Some(-1), Vec::new())), None);
}
