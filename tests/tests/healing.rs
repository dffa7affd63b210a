//! The healing loop end to end, through the real binaries: `mend up` on a
//! dataset of its own (PostgreSQL or SQLite), driven by `mend demo` (baseline,
//! added field, alias rename approved through the API, incompatible type
//! change), then checked independently: the demo's record-by-record report,
//! the table, and the audit topics (one hash-chained detection → diagnosis →
//! proposal → decision → application per healed incident, all Avro readable
//! through the registry). One test kills `mend up` with SIGKILL mid-story.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use mend_avro::codec::Codec;
use mend_model::ChangeKind;
use mend_model::api::DemoReport;
use mend_model::events::{Application, Decision, Detection, Diagnosis, Event, Proposal};
use mend_store::Warehouse;
use mend_tests::{Deployment, brokers, eventually, incidents, registry_url};
use rdkafka::message::Message;
use tokio::process::Child;

/// The drift demo of a deployment, and its report.
trait Demo {
    fn demo(&self, records: usize) -> anyhow::Result<Child>;
    fn report(&self) -> anyhow::Result<DemoReport>;
}

impl Demo for Deployment {
    fn demo(&self, records: usize) -> anyhow::Result<Child> {
        let report = self.dir.join("report.json");
        let records = records.to_string();
        let log = std::fs::File::create(self.dir.join("demo.log"))?;
        Ok(self
            .command(&["demo", "--records", &records, "--timeout", "2m", "--report", &report.to_string_lossy()])?
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()?)
    }

    fn report(&self) -> anyhow::Result<DemoReport> {
        Ok(serde_json::from_str(&std::fs::read_to_string(self.dir.join("report.json"))?)?)
    }
}

/// SIGTERM, and the exit status.
async fn stop(mut child: Child) -> anyhow::Result<std::process::ExitStatus> {
    let pid = child.id().context("already exited")?;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    Ok(tokio::time::timeout(Duration::from_secs(60), child.wait()).await??)
}

/// The events of `dataset` on an audit topic.
async fn events<E: Event>(codec: &Codec, dataset: &str) -> anyhow::Result<Vec<E>> {
    let mut out = Vec::new();
    for message in mend_runtime::kafka::read_to_end(&brokers(), E::TOPIC).await? {
        if message.key() == Some(dataset.as_bytes()) {
            out.push(codec.decode_event::<E>(message.payload().unwrap_or_default()).await?);
        }
    }
    Ok(out)
}

/// Every healed incident has one complete, hash-chained audit trail.
async fn check_audit_chains(dataset: &str, healed: usize) -> anyhow::Result<()> {
    let codec = Codec::new(&registry_url())?;
    let detections: Vec<Detection> = events(&codec, dataset).await?;
    let diagnoses: Vec<Diagnosis> = events(&codec, dataset).await?;
    let proposals: Vec<Proposal> = events(&codec, dataset).await?;
    let decisions: Vec<Decision> = events(&codec, dataset).await?;
    let applications: Vec<Application> = events(&codec, dataset).await?;
    let applied: Vec<&Application> = applications.iter().filter(|a| a.outcome.as_str() == "applied").collect();
    let mut chains = BTreeMap::new();
    for application in &applied {
        let decision =
            decisions.iter().find(|d| Some(&d.envelope.event_id) == application.envelope.causation_id.as_ref());
        let decision = decision.context("an application without its decision")?;
        let proposal = proposals.iter().find(|p| Some(&p.envelope.event_id) == decision.envelope.causation_id.as_ref());
        let proposal = proposal.context("a decision without its proposal")?;
        let diagnosis =
            diagnoses.iter().find(|d| Some(&d.envelope.event_id) == proposal.envelope.causation_id.as_ref());
        let diagnosis = diagnosis.context("a proposal without its diagnosis")?;
        let detection =
            detections.iter().find(|d| Some(&d.envelope.event_id) == diagnosis.envelope.causation_id.as_ref());
        let detection = detection.context("a diagnosis without its detection")?;
        // The hashes verify and chain: each event names its predecessor's hash.
        assert!(detection.verify_hash() && diagnosis.verify_hash() && proposal.verify_hash());
        assert!(decision.verify_hash() && application.verify_hash());
        assert_eq!(diagnosis.envelope.prev_hash.as_ref(), Some(&detection.envelope.hash));
        assert_eq!(proposal.envelope.prev_hash.as_ref(), Some(&diagnosis.envelope.hash));
        assert_eq!(decision.envelope.prev_hash.as_ref(), Some(&proposal.envelope.hash));
        assert_eq!(application.envelope.prev_hash.as_ref(), Some(&decision.envelope.hash));
        assert_eq!(decision.plan_hash, proposal.plan_hash);
        chains.entry(application.envelope.incident_id.clone()).or_insert(0);
    }
    assert_eq!(chains.len(), healed, "one chain per healed incident");
    Ok(())
}

/// The table and mend's bookkeeping agree with the story.
async fn check_warehouse(deployment: &Deployment, records: i64) -> anyhow::Result<()> {
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    assert_eq!(warehouse.count(&deployment.dataset).await?, 3 * records, "baseline, added and renamed phases loaded");
    let columns: Vec<String> = warehouse.columns(&deployment.dataset).await?.into_iter().map(|c| c.name).collect();
    assert_eq!(columns, ["id", "email", "amount", "status", "coupon"], "one coupon column; the rename reused email");
    Ok(())
}

async fn drift_story(warehouse: &str) -> anyhow::Result<()> {
    let records = 100;
    let deployment = Deployment::new(warehouse, "")?;
    let up = deployment.up("up.log").await?;
    let status = deployment.demo(records)?.wait().await?;
    assert!(status.success(), "mend demo failed (see {})", deployment.dir.display());
    let report = deployment.report()?;
    assert_eq!((report.lost, report.misplaced, report.duplicates), (0, 0, 0), "{report:?}");
    assert_eq!((report.loaded, report.quarantined), (3 * records, records));
    check_warehouse(&deployment, i64::try_from(records)?).await?;
    check_audit_chains(&deployment.dataset, 2).await?;
    let exit = stop(up).await?;
    assert!(exit.success(), "mend up exits 0 on SIGTERM, got {exit}");
    Ok(())
}

#[tokio::test]
async fn drift_story_on_postgres() -> anyhow::Result<()> {
    drift_story("postgres").await
}

#[tokio::test]
async fn drift_story_on_sqlite() -> anyhow::Result<()> {
    drift_story("sqlite").await
}

/// SIGKILL `mend up` in the middle of the story (once the rename is
/// detected: its approval, apply and replay may still be ahead, the type
/// change is), start it again: the story still ends with nothing
/// lost, no row twice and no plan applied twice.
#[tokio::test]
async fn drift_story_survives_sigkill() -> anyhow::Result<()> {
    let records = 100;
    let deployment = Deployment::new("postgres", "")?;
    let mut up = deployment.up("up-1.log").await?;
    let mut demo = deployment.demo(records)?;
    // The rename's incident exists (awaiting approval, or already approved
    // and healing): the type change, and maybe the rename's approval, apply
    // and replay, are still ahead.
    eventually("the rename to be detected", || {
        let (api, dataset) = (deployment.api.clone(), deployment.dataset.clone());
        async move {
            // The API may not be up yet: not an error, not yet.
            let Ok(list) = incidents(&api).await else { return Ok(None) };
            let renamed = list
                .iter()
                .any(|i| i.dataset == dataset && i.changes.iter().any(|c| c.kind == ChangeKind::FieldRenamed));
            Ok(renamed.then_some(()))
        }
    })
    .await?;
    up.start_kill()?; // SIGKILL
    up.wait().await?;
    let up = deployment.up("up-2.log").await?;
    let status = tokio::time::timeout(Duration::from_secs(300), demo.wait()).await??;
    assert!(status.success(), "mend demo failed after the restart (see {})", deployment.dir.display());
    let report = deployment.report()?;
    assert_eq!((report.lost, report.misplaced), (0, 0), "{report:?}");
    assert_eq!(report.duplicates, 0, "no row twice");
    check_warehouse(&deployment, i64::try_from(records)?).await?;
    // Each plan was applied once: one mend_applied row per healed incident.
    let codec = Codec::new(&registry_url())?;
    let applications: Vec<Application> = events(&codec, &deployment.dataset).await?;
    let mut proposals: Vec<&str> =
        applications.iter().filter(|a| a.outcome.as_str() == "applied").map(|a| a.proposal_id.as_str()).collect();
    proposals.sort_unstable();
    proposals.dedup();
    assert_eq!(proposals.len(), 2, "two plans applied (added field, rename)");
    let exit = stop(up).await?;
    assert!(exit.success());
    Ok(())
}

/// Aborts `mend up` at a named point between a decision and the end of its
/// replay (`MEND_FAULT`), starts it again without the fault, and checks the
/// story ends exactly as an uninterrupted one: every record in its column
/// or quarantined, none twice, each plan's DDL applied once.
async fn drift_story_survives_a_crash_at(point: &str) -> anyhow::Result<()> {
    let records = 50;
    let mut deployment = Deployment::new("postgres", "")?;
    deployment.env = vec![("MEND_FAULT".into(), point.into())];
    let mut up = deployment.up("up-1.log").await?;
    let mut demo = deployment.demo(records)?;
    let crashed = tokio::time::timeout(Duration::from_secs(120), up.wait()).await??;
    assert!(!crashed.success(), "mend up should have aborted at {point}");
    let log = std::fs::read_to_string(deployment.dir.join("up-1.log"))?;
    assert!(log.contains(&format!("fault injected at {point}")), "the crash was not at {point}");
    deployment.env.clear();
    let up = deployment.up("up-2.log").await?;
    let status = tokio::time::timeout(Duration::from_secs(300), demo.wait()).await??;
    assert!(status.success(), "mend demo failed after a crash at {point} (see {})", deployment.dir.display());
    let report = deployment.report()?;
    assert_eq!((report.lost, report.misplaced), (0, 0), "{point}: {report:?}");
    assert_eq!(report.duplicates, 0, "{point}: no row twice");
    assert_eq!((report.loaded, report.quarantined), (3 * records, records), "{point}");
    check_warehouse(&deployment, i64::try_from(records)?).await?;
    // Each healed plan recorded (and its DDL run) exactly once.
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let applied = warehouse.applied_count(&deployment.dataset).await?;
    assert_eq!(applied, 2, "{point}: two plans applied once each");
    let exit = stop(up).await?;
    assert!(exit.success());
    Ok(())
}

#[tokio::test]
async fn crash_before_the_apply() -> anyhow::Result<()> {
    drift_story_survives_a_crash_at("applier.before_apply").await
}

#[tokio::test]
async fn crash_after_the_apply_before_the_replay() -> anyhow::Result<()> {
    drift_story_survives_a_crash_at("applier.after_apply").await
}

#[tokio::test]
async fn crash_in_the_middle_of_the_replay() -> anyhow::Result<()> {
    drift_story_survives_a_crash_at("applier.mid_replay").await
}

#[tokio::test]
async fn crash_after_the_replay_before_the_application_event() -> anyhow::Result<()> {
    drift_story_survives_a_crash_at("applier.after_replay").await
}

#[tokio::test]
async fn crash_after_delivery_before_the_offsets() -> anyhow::Result<()> {
    drift_story_survives_a_crash_at("runner.after_deliver.applier").await
}

/// The applier on a database role of its own (`MEND_APPLIER_WAREHOUSE_URL`):
/// a warehouse owned by the loader's role, and an applier role that is a
/// member of it (PostgreSQL lets only a table's owner, or a member of the
/// owning role, alter it). The story heals as on one role, and the applier's
/// connections are its role's.
#[tokio::test]
async fn drift_story_with_an_applier_role_of_its_own() -> anyhow::Result<()> {
    let admin = sqlx::PgPool::connect(&mend_tests::postgres_url()).await?;
    let suffix = mend_tests::unique("r").replace('-', "_");
    let (loader, applier, database) = (format!("loader_{suffix}"), format!("applier_{suffix}"), format!("wh_{suffix}"));
    for statement in [
        format!("CREATE ROLE {loader} LOGIN"),
        format!("CREATE ROLE {applier} LOGIN IN ROLE {loader}"),
        format!("CREATE DATABASE {database} OWNER {loader}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&admin).await?;
    }
    let url = |role: &str| -> anyhow::Result<String> {
        let mut url = reqwest::Url::parse(&mend_tests::postgres_url())?;
        url.set_username(role).map_err(|()| anyhow::anyhow!("cannot set the user of {url}"))?;
        url.set_path(&database);
        Ok(url.to_string())
    };
    let records = 50;
    let mut deployment = Deployment::new("postgres", "")?;
    deployment.warehouse = url(&loader)?;
    deployment.env = vec![("MEND_APPLIER_WAREHOUSE_URL".into(), url(&applier)?)];
    let up = deployment.up("up.log").await?;
    let status = deployment.demo(records)?.wait().await?;
    assert!(status.success(), "mend demo failed (see {})", deployment.dir.display());
    let report = deployment.report()?;
    assert_eq!((report.lost, report.misplaced, report.duplicates), (0, 0, 0), "{report:?}");
    assert_eq!(report.loaded, 3 * records);
    check_warehouse(&deployment, i64::try_from(records)?).await?;
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2")
        .bind(&applier)
        .bind(&database)
        .fetch_one(&admin)
        .await?;
    assert!(sessions > 0, "the applier connects as {applier}");
    // The applier's DDL leaves every table with the loader's role, which
    // created them, so the loader can go on writing them.
    let owners: Vec<(String, String)> =
        sqlx::query_as("SELECT tablename::text, tableowner::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&sqlx::PgPool::connect(&url("postgres")?).await?)
            .await?;
    assert!(owners.iter().any(|(table, _)| *table == deployment.dataset), "{owners:?}");
    assert!(owners.iter().all(|(_, owner)| *owner == loader), "{owners:?}");
    let exit = stop(up).await?;
    assert!(exit.success());
    for statement in [
        format!("DROP DATABASE {database} WITH (FORCE)"),
        format!("DROP ROLE {applier}"),
        format!("DROP ROLE {loader}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&admin).await?;
    }
    Ok(())
}
