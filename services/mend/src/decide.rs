//! `mend approve` and `mend reject`: a decision through the control API,
//! recorded in the audit log with who decided and why; `mend revert`: a
//! plan undoing an applied one, waiting for such a decision.

use mend_model::{Channel, Verdict};

use crate::Global;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    proposal: String,
    /// Who approves (recorded in the audit log).
    #[arg(long)]
    by: String,
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    proposal: String,
    /// Who rejects (recorded in the audit log).
    #[arg(long)]
    by: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
}

#[derive(Debug, clap::Args)]
pub struct RevertArgs {
    /// The incident whose applied plan is undone (`mend incidents`).
    incident: String,
    /// Who asks (recorded as the plan's drafter).
    #[arg(long)]
    by: String,
    /// Why (recorded with the plan).
    #[arg(long)]
    reason: String,
}

pub async fn approve(args: ApproveArgs, global: &Global) -> anyhow::Result<()> {
    let answer =
        global.api().decide(&args.proposal, Verdict::Approved, &args.by, args.reason.as_deref(), Channel::Cli).await?;
    println!("approved {} (decision {})", args.proposal, answer.decision_id);
    Ok(())
}

pub async fn reject(args: RejectArgs, global: &Global) -> anyhow::Result<()> {
    let answer =
        global.api().decide(&args.proposal, Verdict::Rejected, &args.by, Some(&args.reason), Channel::Cli).await?;
    println!("rejected {} (decision {})", args.proposal, answer.decision_id);
    Ok(())
}

pub async fn revert(args: RevertArgs, global: &Global) -> anyhow::Result<()> {
    let outcome = global.api().revert(&args.incident, &args.reason, &args.by).await?;
    if !outcome.accepted {
        anyhow::bail!(
            "the revert's plan ({}, incident {}) was refused: {}",
            outcome.proposal_id,
            outcome.incident_id,
            outcome.refused.join("; ")
        );
    }
    println!(
        "incident {} reverts {}: its plan {} waits for approval (mend show {}; mend approve {} --by NAME)",
        outcome.incident_id, args.incident, outcome.proposal_id, outcome.incident_id, outcome.proposal_id
    );
    Ok(())
}
