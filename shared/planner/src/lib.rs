//! The planner: from classified changes to an ordered remediation plan and
//! the decision policy reaches on it ([`plan`]), the dbt patch a plan
//! carries ([`dbt`]), its blast radius in the dbt project ([`blast`]), and
//! the dry comparison of a schema with a dataset's
//! table that `mend plan` and the MCP tool `compare_schema` print
//! ([`compare`]). The proposer runs it on every diagnosis.

pub mod blast;
pub mod compare;
pub mod dbt;
mod expand;
mod place;
pub mod plan;
pub mod steps;

pub use expand::Widening;
pub use plan::{DbtFile, Plan, Target, plan, plan_dataset};
