//! `mend revert`, through the real `mend up` on PostgreSQL: a rename is
//! approved and applied; its producer rolls back, and the revert (a plan of
//! its own, approved with `mend approve`) moves the contract back, so the
//! old schema's records load as before, while records of the reverted
//! schema are held in quarantine. The revert of the revert re-applies the
//! change and replays them: every record lands once, in its column.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::api::Incident;
use mend_model::{DetectionSource, IncidentStatus, StepKind};
use mend_store::Warehouse;
use mend_tests::{Deployment, eventually, incident_where, produce_avro, producer, register_schema};
use serde_json::json;

fn schema(version: u8) -> String {
    let email = if version == 1 {
        json!({"name": "email", "type": "string"})
    } else {
        json!({"name": "customer_email", "type": "string", "aliases": ["email"]})
    };
    json!({"type": "record", "name": "Order", "namespace": "shop",
           "fields": [{"name": "id", "type": "long"}, email]})
    .to_string()
}

/// Produces `ids` with schema `version` (registered first); its id.
async fn produce_orders(deployment: &Deployment, version: u8, ids: std::ops::Range<i64>) -> anyhow::Result<u32> {
    let text = schema(version);
    let id = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
    let parsed = Schema::parse_str(&text)?;
    let field = if version == 1 { "email" } else { "customer_email" };
    let producer = producer()?;
    for order in ids {
        let value = Avro::Record(vec![
            ("id".into(), Avro::Long(order)),
            (field.into(), Avro::String(format!("c{order}@example.com"))),
        ]);
        produce_avro(&producer, &deployment.topic(), &order.to_string(), id, &parsed, value).await?;
    }
    Ok(id)
}

async fn rows(warehouse: &Warehouse, table: &str, at_least: i64) -> anyhow::Result<()> {
    eventually(&format!("{at_least} rows"), || async move {
        Ok((warehouse.count(table).await.unwrap_or(0) >= at_least).then_some(()))
    })
    .await
}

/// Runs `mend` with `args` for the deployment; its stdout, or the error
/// with its stderr.
async fn mend(deployment: &Deployment, args: &[&str]) -> anyhow::Result<String> {
    let output = deployment.command(args)?.output().await?;
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "mend {args:?} failed: {out}{err}");
    Ok(out.into_owned())
}

/// Approves `incident`'s plan with `mend approve` and waits until it healed.
async fn approve(deployment: &Deployment, incident: &Incident) -> anyhow::Result<Incident> {
    let proposal = incident.proposal_id.clone().ok_or_else(|| anyhow::anyhow!("no plan on {}", incident.id))?;
    mend(deployment, &["approve", &proposal, "--by", "alice"]).await?;
    incident_where(&deployment.api, "the plan healed", |i| i.id == incident.id && i.status == IncidentStatus::Healed)
        .await
}

/// The revert `mend revert` opened for `incident`, once it waits.
async fn revert(deployment: &Deployment, incident: &str) -> anyhow::Result<Incident> {
    let said = mend(deployment, &["revert", incident, "--by", "bob", "--reason", "the producer rolled back"]).await?;
    assert!(said.contains(&format!("reverts {incident}")) && said.contains("waits for approval"), "{said}");
    incident_where(&deployment.api, "the revert", |i| {
        i.source == Some(DetectionSource::Revert)
            && i.evidence.get("reverts").map(String::as_str) == Some(incident)
            && i.status == IncidentStatus::AwaitingApproval
    })
    .await
}

#[tokio::test]
async fn revert_and_reapply_lose_nothing() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let _up = deployment.up("up.log").await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let table = deployment.dataset.as_str();

    let v1 = produce_orders(&deployment, 1, 0..5).await?;
    rows(&warehouse, table, 5).await?;
    let v2 = produce_orders(&deployment, 2, 5..10).await?;
    let rename = incident_where(&deployment.api, "the rename", |i| {
        i.writer_schema_id == i32::try_from(v2).ok() && i.status == IncidentStatus::AwaitingApproval
    })
    .await?;
    let rename = approve(&deployment, &rename).await?;
    rows(&warehouse, table, 10).await?;

    // Nothing to revert on an incident that applied nothing, and no such
    // incident at all: said so.
    let unknown = deployment.command(&["revert", "no-such-incident", "--by", "bob", "--reason", "x"])?.output().await?;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no incident"), "{unknown:?}");

    // The revert: an incident of its own, asked twice, opened once.
    let reverting = revert(&deployment, &rename.id).await?;
    let again = revert(&deployment, &rename.id).await?;
    assert_eq!((&again.id, &again.proposal_id), (&reverting.id, &reverting.proposal_id));
    assert_eq!(reverting.writer_schema_id, i32::try_from(v1).ok(), "the contract moves back to v1");
    assert_eq!(reverting.contract_schema_id, i32::try_from(v2).ok());
    assert!(reverting.steps.iter().all(|s| s.kind != StepKind::Ddl), "a revert drops nothing: {:?}", reverting.steps);
    assert!(reverting.steps.iter().any(|s| s.kind == StepKind::Replay));
    assert_eq!(reverting.drafts.first().and_then(|d| d.by.as_deref()), Some("bob"));
    let reverted = approve(&deployment, &reverting).await?;
    assert_eq!(reverted.decision.as_ref().map(|d| d.by.as_str()), Some("alice"));
    let contract = warehouse.contract(table).await?.ok_or_else(|| anyhow::anyhow!("no contract"))?;
    assert_eq!(contract.schema_id, v1);

    // The producer rolled back: v1 loads again. A straggler of v2 is held,
    // not lost and not loaded under a wrong column.
    produce_orders(&deployment, 1, 10..15).await?;
    rows(&warehouse, table, 15).await?;
    produce_orders(&deployment, 2, 15..20).await?;
    eventually("the v2 records held", || {
        let warehouse = warehouse.clone();
        async move { Ok((warehouse.quarantined_records(table, v2).await?.len() >= 5).then_some(())) }
    })
    .await?;
    assert_eq!(warehouse.count(table).await?, 15, "records of the reverted schema are held");

    // The original change cannot be reverted twice.
    let twice = deployment.command(&["revert", &rename.id, "--by", "bob", "--reason", "again"])?.output().await?;
    assert!(!twice.status.success());
    let said = String::from_utf8_lossy(&twice.stderr);
    assert!(said.contains("already reverted") && said.contains(&reverted.id), "{said}");

    // Re-applying: the revert of the revert moves the contract to v2 and
    // replays what was held.
    let reapplying = revert(&deployment, &reverted.id).await?;
    assert_eq!(reapplying.writer_schema_id, i32::try_from(v2).ok());
    let reapplied = approve(&deployment, &reapplying).await?;
    let application = reapplied.application.ok_or_else(|| anyhow::anyhow!("no application"))?;
    // Every record of v2 ever held: the rename's five (loaded then, left
    // as they are) and the five held since the revert.
    assert_eq!(
        (application.replayed, application.loaded, application.still_quarantined),
        (10, 10, 0),
        "{application:?}"
    );
    assert_eq!(warehouse.contract(table).await?.map(|c| c.schema_id), Some(v2));

    // Every record once, its email in the email column; no column dropped
    // or added by the reverts.
    let columns: Vec<String> = warehouse.columns(table).await?.into_iter().map(|c| c.name).collect();
    assert!(columns.contains(&"email".to_owned()) && !columns.contains(&"customer_email".to_owned()), "{columns:?}");
    let loaded = warehouse.rows_as_text(table, &["id", "email"]).await?;
    assert_eq!(loaded.len(), 20, "lost or doubled: {loaded:?}");
    for row in &loaded {
        let id = row[0].as_deref().unwrap_or_default();
        assert_eq!(row[1].as_deref(), Some(format!("c{id}@example.com").as_str()), "misplaced: {row:?}");
    }
    // The topics tell the same contract history as the warehouse: three
    // moves, each by its decision.
    let rebuilt = mend(&deployment, &["audit", "rebuild", "--dataset", table]).await?;
    assert!(rebuilt.contains("3 changes applied") && rebuilt.contains("the warehouse agrees"), "{rebuilt}");
    Ok(())
}
