//! The console under a large read model: `mend run control` (release, SQLite)
//! over 10,000 incidents of one dataset (a detection each; one in ten also
//! a proposal waiting for a person), then each page asked for 200 times in
//! turn, as a signed-in person's browser asks. Prints p50, p95 and the
//! worst per page (goal: p95 under 50 ms). Needs `make infra-up`; set
//! `MEND_BIN` to a release `mend`.

use std::time::Instant;

use mend_avro::codec::Codec;
use mend_model::events::{Detection, Envelope, Event, FieldChange, IncidentId, Proposal};
use mend_model::{ChangeKind, DetectionSource, Policy};
use mend_tests::{Deployment, eventually, produce, producer, registry_url};

const INCIDENTS: u32 = 10_000;
const ASKS: usize = 200;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let deployment = Deployment::new("sqlite", "")?;
    let dataset = deployment.dataset.clone();
    let codec = Codec::new(&registry_url())?;
    let producer = producer()?;
    println!("console bench: {INCIDENTS} incidents of {dataset}");
    let started = Instant::now();
    let mut sends = Vec::new();
    let mut waiting = 0;
    for writer in 0..INCIDENTS {
        let id = IncidentId::for_drift(&dataset, 10_000 + writer);
        let mut changes = vec![FieldChange::new(ChangeKind::FieldAdded, &format!("field_{writer}"))];
        changes[0].new_type = Some("string".into());
        let mut detection = Detection {
            envelope: Envelope::new("detector", &dataset, id),
            source: DetectionSource::SchemaId,
            topic: deployment.topic(),
            partition: 0,
            offset: i64::from(writer),
            subject: format!("{}-value", deployment.topic()),
            writer_schema_id: Some(i32::try_from(10_000 + writer)?),
            contract_schema_id: Some(1),
            changes: changes.clone(),
            evidence: Default::default(),
        };
        detection.seal();
        sends.push((Detection::TOPIC, codec.encode_event(&detection).await?));
        if writer % 10 == 0 {
            waiting += 1;
            let mut proposal = Proposal {
                envelope: Envelope::answering("proposer", &detection.envelope),
                proposal_id: Proposal::rules_id(&detection.envelope.incident_id),
                writer_schema_id: detection.writer_schema_id,
                changes,
                steps: Vec::new(),
                plan_hash: Proposal::hash_steps(&[]),
                policy: Policy::Approve,
                rules: vec![format!("field_added(field_{writer}) => approve")],
                origin: None,
                refused: Vec::new(),
                blast_radius: None,
            };
            proposal.seal();
            sends.push((Proposal::TOPIC, codec.encode_event(&proposal).await?));
        }
    }
    for chunk in sends.chunks(500) {
        futures::future::try_join_all(
            chunk.iter().map(|(topic, payload)| produce(&producer, topic, dataset.as_bytes(), payload)),
        )
        .await?;
    }
    println!("  produced {} events ({waiting} proposals) in {:.1} s", sends.len(), started.elapsed().as_secs_f64());

    let log = std::fs::File::create(deployment.dir.join("bench-console.log"))?;
    let mut control =
        deployment.command(&["run", "control"])?.stdout(std::process::Stdio::null()).stderr(log).spawn()?;
    let base = format!("http://{}", deployment.api);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let signed = eventually("mend run control to read every incident", || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let Ok(response) = http
                .post(format!("{base}/console/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("name=bench")
                .send()
                .await
            else {
                return Ok(None);
            };
            let cookie = response
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .map(|c| c.split(';').next().unwrap_or_default().to_owned());
            let Some(cookie) = cookie else { return Ok(None) };
            let page = http.get(format!("{base}/")).header("cookie", &cookie).send().await?;
            let text = if page.status().is_success() { page.text().await? } else { String::new() };
            Ok(text.contains(&format!(">{INCIDENTS}<")).then_some(cookie))
        }
    })
    .await?;

    let first = IncidentId::for_drift(&dataset, 10_000).0;
    for (name, path) in [
        ("inbox", "/".to_owned()),
        ("inbox, page 100", "/?page=100".to_owned()),
        ("inbox rows (live)", "/console/inbox/rows?page=1".to_owned()),
        ("incident", format!("/console/incidents/{first}")),
        ("datasets", "/console/datasets".to_owned()),
    ] {
        let mut times = Vec::with_capacity(ASKS);
        for _ in 0..ASKS {
            let asked = Instant::now();
            let response = http.get(format!("{base}{path}")).header("cookie", &signed).send().await?;
            anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
            let _ = response.bytes().await?;
            times.push(asked.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  {name:<20} p50 {:6.1} ms   p95 {:6.1} ms   max {:6.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times[times.len() - 1]
        );
    }
    control.kill().await?;
    Ok(())
}
