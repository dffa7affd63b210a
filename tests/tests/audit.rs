//! `mend audit` on a healed incident: the export verifies; each tampering
//! (an event edited, an event edited and re-hashed so its own hash holds, a
//! decision's plan hash changed, an event removed, two events swapped) is
//! found and located; the timeline tells the incident from the topics.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::events::{Event, Proposal};
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema};
use serde_json::{Value, json};

fn schema(version: u8) -> String {
    let mut fields = vec![json!({"name": "id", "type": "long"}), json!({"name": "email", "type": "string"})];
    if version >= 2 {
        fields.push(json!({"name": "coupon", "type": ["null", "string"], "default": null}));
    }
    json!({"type": "record", "name": "Order", "namespace": "audit", "fields": fields}).to_string()
}

async fn audit(deployment: &Deployment, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut all = vec!["audit"];
    all.extend(args);
    let output = deployment.command(&all)?.output().await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.code().is_some_and(|c| c <= 1), "mend {all:?}: {stderr}");
    Ok((output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Verifies `lines` written as an export; Ok((clean, report)).
async fn verify_lines(deployment: &Deployment, lines: &[Value], name: &str) -> anyhow::Result<(bool, String)> {
    let path = deployment.dir.join(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text)?;
    audit(deployment, &["verify", "--file", &path.to_string_lossy(), "--filtered"]).await
}

fn position(line: &Value) -> String {
    format!("{}/{}@{}", line["topic"].as_str().unwrap_or(""), line["partition"], line["offset"])
}

#[tokio::test]
async fn tampering_with_an_export_is_found_and_located() -> anyhow::Result<()> {
    let deployment = Deployment::new("sqlite", "")?;
    let _up = deployment.up("up.log").await?;
    let subject = format!("{}-value", deployment.topic());
    let producer = producer()?;
    for version in [1u8, 2] {
        let text = schema(version);
        let (id, parsed) = (register_schema(&subject, &text).await?, Schema::parse_str(&text)?);
        for n in 0..20 {
            let key = i64::from(version) * 100 + n;
            let mut fields = vec![("id".into(), Avro::Long(key)), ("email".into(), Avro::String(format!("c{key}@x")))];
            if version == 2 {
                fields.push(("coupon".into(), Avro::Union(1, Box::new(Avro::String("SAVE".into())))));
            }
            produce_avro(&producer, &deployment.topic(), &key.to_string(), id, &parsed, Avro::Record(fields)).await?;
        }
    }
    let api = format!("http://{}/incidents", deployment.api);
    let incident = eventually("the added field healed", || {
        let (api, dataset) = (api.clone(), deployment.dataset.clone());
        async move {
            let incidents: Value = reqwest::get(&api).await?.json().await?;
            Ok(incidents
                .as_array()
                .and_then(|l| l.iter().find(|i| i["dataset"] == dataset && i["status"] == "healed").cloned()))
        }
    })
    .await?;
    let incident_id = incident["id"].as_str().unwrap_or_default().to_owned();

    // The export of the dataset verifies; it holds the whole chain.
    let out = deployment.dir.join("export.jsonl");
    let lines: Vec<Value> = eventually("the application in the export", || async {
        audit(&deployment, &["export", "--dataset", &deployment.dataset, "--out", &out.to_string_lossy()]).await?;
        let lines: Vec<Value> =
            std::fs::read_to_string(&out)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        Ok(lines.iter().any(|l| l["topic"] == "mend.applications").then_some(lines))
    })
    .await?;
    let (clean, report) = verify_lines(&deployment, &lines, "clean.jsonl").await?;
    assert!(clean, "{report}");
    assert!(report.contains(&format!("{} events checked, 0 findings", lines.len())), "{report}");
    let find = |topic: &str| lines.iter().position(|l| l["topic"] == topic).unwrap_or(usize::MAX);
    let (proposal, decision, diagnosis) = (find("mend.proposals"), find("mend.decisions"), find("mend.diagnoses"));
    assert!(proposal < lines.len() && decision < lines.len() && diagnosis < lines.len(), "{lines:?}");

    // 1. An event edited: its hash no longer holds.
    let mut edited = lines.clone();
    edited[decision]["event"]["by"] = json!("mallory");
    let (clean, report) = verify_lines(&deployment, &edited, "edited.jsonl").await?;
    assert!(!clean && report.contains(&format!("{}: edited", position(&lines[decision]))), "{report}");

    // 2. An event edited and re-hashed: its own hash holds, but the event
    // answering it no longer chains to it.
    let mut rehashed = lines.clone();
    let mut forged: Proposal = serde_json::from_value(rehashed[proposal]["event"].clone())?;
    forged.rules.push("nothing to see here".into());
    forged.seal();
    rehashed[proposal]["event"] = serde_json::to_value(&forged)?;
    let (clean, report) = verify_lines(&deployment, &rehashed, "rehashed.jsonl").await?;
    assert!(
        !clean && report.contains(&format!("{}: its prev_hash is not the hash", position(&lines[decision]))),
        "{report}"
    );
    assert!(!report.contains(&format!("{}: edited", position(&lines[proposal]))), "{report}");

    // 3. A decision whose plan hash was changed.
    let mut replanned = lines.clone();
    replanned[decision]["event"]["plan_hash"] = json!("0".repeat(64));
    let (clean, report) = verify_lines(&deployment, &replanned, "replanned.jsonl").await?;
    assert!(!clean && report.contains(&format!("{}: edited", position(&lines[decision]))), "{report}");

    // 4. An event removed: what answered it points at nothing.
    let mut removed = lines.clone();
    removed.remove(diagnosis);
    let (clean, report) = verify_lines(&deployment, &removed, "removed.jsonl").await?;
    assert!(!clean && report.contains(&format!("{}: the event it answers", position(&lines[proposal]))), "{report}");

    // 5. Two events of one partition swapped.
    let quarantined: Vec<usize> = (0..lines.len()).filter(|i| lines[*i]["topic"] == "mend.quarantine").collect();
    assert!(quarantined.len() >= 2, "the drifted records were quarantined before the heal");
    let mut swapped = lines.clone();
    swapped.swap(quarantined[0], quarantined[1]);
    let (clean, report) = verify_lines(&deployment, &swapped, "swapped.jsonl").await?;
    assert!(!clean && report.contains("out of order"), "{report}");

    // The timeline, from the topics alone.
    let (_, timeline) = audit(&deployment, &["timeline", &incident_id, "--json"]).await?;
    let timeline: Value = serde_json::from_str(&timeline)?;
    let kinds: Vec<&str> =
        timeline["steps"].as_array().into_iter().flatten().filter_map(|s| s["what"].as_str()).collect();
    for kind in ["detection", "diagnosis", "proposal", "decision", "application"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(timeline["time_to_heal_seconds"].as_f64().is_some_and(|s| s > 0.0), "{timeline}");
    assert_eq!(timeline["steps"].as_array().map(|s| s.iter().filter(|s| s["what"] == "decision").count()), Some(1));
    assert!(Proposal::TOPIC == "mend.proposals");
    Ok(())
}

/// A topic whose configuration deletes records is said so (what `verify`
/// warns about for the event topics); one kept forever is not.
#[tokio::test]
async fn retention_that_would_delete_audit_events_is_reported() -> anyhow::Result<()> {
    use mend_runtime::kafka::{TopicSpec, deletions, ensure_topics};
    let (kept, deleting) = (mend_tests::unique("kept"), mend_tests::unique("deleting"));
    let mut spec = TopicSpec::new(&deleting, 1);
    spec.configs.push(("retention.ms".into(), "3600000".into()));
    ensure_topics(&mend_tests::brokers(), &[TopicSpec::new(&kept, 1).kept_forever(), spec]).await?;
    assert_eq!(deletions(&mend_tests::brokers(), &kept).await?, Vec::<String>::new());
    let said = deletions(&mend_tests::brokers(), &deleting).await?;
    assert!(said.iter().any(|s| s.starts_with("retention.ms=3600000")), "{said:?}");
    Ok(())
}
