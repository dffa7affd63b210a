//! `mend audit` on a healed incident, sealed by the sealer of `mend up`
//! with a key from `mend audit keygen`: the export verifies offline with
//! the public key; each tampering (an event edited, an event edited and
//! re-hashed so its own hash holds, a decision's plan hash changed, an
//! event removed, two events swapped, a digest removed, a digest forged
//! without the key) is found and located; the live log verifies; the
//! timeline tells the incident from the topics; `rebuild` agrees with the
//! warehouse until a column is added to the table by hand.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::digest::AuditDigest;
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

/// A deployment whose sealer signs with a key from `mend audit keygen` and
/// seals every 300 ms; and the public key's file.
async fn sealed_deployment() -> anyhow::Result<(Deployment, String)> {
    let mut deployment = Deployment::new("sqlite", "")?;
    let secret = deployment.dir.join("sealer.key");
    let output = deployment.command(&["audit", "keygen", "--out", &secret.to_string_lossy()])?.output().await?;
    anyhow::ensure!(output.status.success(), "keygen: {}", String::from_utf8_lossy(&output.stderr));
    let public = format!("{}.pub", secret.display());
    deployment.env.push(("MEND_AUDIT_SIGNING_KEY".into(), secret.to_string_lossy().into_owned()));
    deployment.env.push(("MEND_AUDIT_SEAL_INTERVAL".into(), "300ms".into()));
    Ok((deployment, public))
}

/// Verifies `lines` written as an export, with `key` (the public key's
/// file) when given; Ok((clean, report)).
async fn verify_lines(
    deployment: &Deployment,
    lines: &[Value],
    name: &str,
    key: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    let path = deployment.dir.join(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text)?;
    let path = path.to_string_lossy().into_owned();
    let mut args = vec!["verify", "--file", &path];
    if let Some(key) = key {
        args.extend(["--public-key", key]);
    }
    audit(deployment, &args).await
}

fn position(line: &Value) -> String {
    format!("{}/{}@{}", line["topic"].as_str().unwrap_or(""), line["partition"], line["offset"])
}

#[tokio::test]
async fn a_sealed_log_verifies_and_tampering_with_its_export_is_found_and_located() -> anyhow::Result<()> {
    let (deployment, public) = sealed_deployment().await?;
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

    // The export of the dataset (made once the sealer has sealed it)
    // verifies offline with the public key; it holds the whole chain.
    let out = deployment.dir.join("export.jsonl");
    let lines: Vec<Value> = eventually("the application in the export", || async {
        audit(&deployment, &["export", "--dataset", &deployment.dataset, "--out", &out.to_string_lossy()]).await?;
        let lines: Vec<Value> =
            std::fs::read_to_string(&out)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        Ok(lines.iter().any(|l| l["topic"] == "mend.applications" && l["event"].is_object()).then_some(lines))
    })
    .await?;
    assert_eq!(lines[0]["export"]["dataset"], json!(deployment.dataset), "{}", lines[0]);
    let (clean, report) = verify_lines(&deployment, &lines, "clean.jsonl", Some(&public)).await?;
    assert!(clean, "{report}");
    let events = lines.iter().filter(|l| l["event"].is_object()).count();
    let digests = lines.iter().filter(|l| l["digest"].is_object()).count();
    assert!(digests > 0 && lines.iter().all(|l| l["digest"].is_null() || l["digest"]["signature"].is_string()));
    assert!(report.contains(&format!("{events} events and {digests} digests checked, 0 findings")), "{report}");
    let (clean, report) = verify_lines(&deployment, &lines, "clean.jsonl", None).await?;
    assert!(clean && report.contains("signatures not checked"), "{report}");
    let full = |topic: &str| lines.iter().position(|l| l["topic"] == topic && l["event"].is_object());
    let (Some(proposal), Some(decision), Some(diagnosis)) =
        (full("mend.proposals"), full("mend.decisions"), full("mend.diagnoses"))
    else {
        anyhow::bail!("the export lacks the incident: {lines:?}");
    };

    // 1. An event edited: its hash no longer holds.
    let mut edited = lines.clone();
    edited[decision]["event"]["by"] = json!("mallory");
    let (clean, report) = verify_lines(&deployment, &edited, "edited.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains(&format!("{}: edited", position(&lines[decision]))), "{report}");

    // 2. An event edited and re-hashed: its own hash holds, but the event
    // answering it no longer chains to it, and its sealed range changed.
    let mut rehashed = lines.clone();
    let mut forged: Proposal = serde_json::from_value(rehashed[proposal]["event"].clone())?;
    forged.rules.push("nothing to see here".into());
    forged.seal();
    rehashed[proposal]["event"] = serde_json::to_value(&forged)?;
    let (clean, report) = verify_lines(&deployment, &rehashed, "rehashed.jsonl", Some(&public)).await?;
    assert!(
        !clean && report.contains(&format!("{}: its prev_hash is not the hash", position(&lines[decision]))),
        "{report}"
    );
    assert!(report.contains("do not hash to what digest"), "{report}");
    assert!(!report.contains(&format!("{}: edited", position(&lines[proposal]))), "{report}");

    // 3. A decision whose plan hash was changed.
    let mut replanned = lines.clone();
    replanned[decision]["event"]["plan_hash"] = json!("0".repeat(64));
    let (clean, report) = verify_lines(&deployment, &replanned, "replanned.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains(&format!("{}: edited", position(&lines[decision]))), "{report}");

    // 4. An event removed: the digest that sealed it names it. When the
    // sealed range held a transaction's commit marker (offsets no reader is
    // given), the digest cannot say which offset was an event, so the
    // finding is the count missing from the range, at the range's first
    // offset (the same partition, at or before the event).
    let mut removed = lines.clone();
    removed.remove(diagnosis);
    let (clean, report) = verify_lines(&deployment, &removed, "removed.jsonl", Some(&public)).await?;
    let gone = &lines[diagnosis];
    let partition = format!("{}/{}@", gone["topic"].as_str().unwrap_or(""), gone["partition"]);
    let counted = report.lines().any(|line| {
        line.strip_prefix(&partition)
            .and_then(|rest| rest.split_once(": "))
            .and_then(|(offset, finding)| Some((offset.parse::<i64>().ok()?, finding)))
            .is_some_and(|(offset, finding)| {
                gone["offset"].as_i64().is_some_and(|at| offset <= at) && finding.contains("not in the log (removed?)")
            })
    });
    assert!(!clean && (report.contains(&format!("{}: removed", position(gone))) || counted), "{report}");

    // 5. Two events of one partition swapped.
    let quarantined: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i]["topic"] == "mend.quarantine" && lines[*i]["event"].is_object())
        .collect();
    assert!(quarantined.len() >= 2, "the drifted records were quarantined before the heal");
    let mut swapped = lines.clone();
    swapped.swap(quarantined[0], quarantined[1]);
    let (clean, report) = verify_lines(&deployment, &swapped, "swapped.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains("out of order"), "{report}");
    let mut contents = lines.clone();
    let (a, b) = (contents[quarantined[0]]["event"].clone(), contents[quarantined[1]]["event"].clone());
    (contents[quarantined[0]]["event"], contents[quarantined[1]]["event"]) = (b, a);
    let (clean, report) = verify_lines(&deployment, &contents, "contents.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains("do not hash to what digest"), "{report}");

    // 6. A digest removed: the next one's sequence skips it, and what it
    // sealed is in no digest.
    let digest_lines: Vec<usize> = (0..lines.len()).filter(|i| lines[*i]["digest"].is_object()).collect();
    let mut undigested = lines.clone();
    undigested.remove(digest_lines[0]);
    let (clean, report) = verify_lines(&deployment, &undigested, "undigested.jsonl", Some(&public)).await?;
    assert!(
        !clean && (report.contains("are missing (removed?)") || report.contains("not sealed by any digest")),
        "{report}"
    );

    // 7. A digest rebuilt consistently by someone without the key.
    let mut rebuilt = lines.clone();
    let mut digest: AuditDigest = serde_json::from_value(rebuilt[digest_lines[0]]["digest"].clone())?;
    digest.time += 1;
    digest.hash = digest.compute_hash();
    rebuilt[digest_lines[0]]["digest"] = serde_json::to_value(&digest)?;
    let (clean, report) = verify_lines(&deployment, &rebuilt, "rebuilt.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains("signature does not hold"), "{report}");
    assert!(report.contains(&position(&lines[digest_lines[0]])), "{report}");

    // 8. The decision given as a hash only, as another dataset's event is:
    // the application answering it says an event of its incident is hidden.
    let mut hidden = lines.clone();
    let envelope = &lines[decision]["event"]["envelope"];
    hidden[decision] = json!({
        "topic": lines[decision]["topic"], "partition": lines[decision]["partition"],
        "offset": lines[decision]["offset"], "event_id": envelope["event_id"], "hash": envelope["hash"],
    });
    let (clean, report) = verify_lines(&deployment, &hidden, "hidden.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains("which the export gives as a hash only"), "{report}");

    // 9. The header edited to name another dataset: every event is refused.
    let mut renamed = lines.clone();
    renamed[0]["export"]["dataset"] = json!("someone_else");
    let (clean, report) = verify_lines(&deployment, &renamed, "renamed.jsonl", Some(&public)).await?;
    assert!(!clean && report.contains("the export's header selects dataset someone_else"), "{report}");

    // The live log is sealed too: every event, every digest signed. (Its
    // events may include other tests' forgeries, such as the tampered
    // decisions of the approvals test, which verify rightly reports.)
    let report: Value = eventually("the live log sealed", || async {
        let (_, report) = audit(&deployment, &["verify", "--public-key", &public, "--json"]).await?;
        let report: Value = serde_json::from_str(&report)?;
        let sealing = |f: &&Value| {
            let problem = f["problem"].as_str().unwrap_or_default();
            problem.contains("digest") || problem.contains("not sealed")
        };
        let unsealed = report["findings"].as_array().into_iter().flatten().filter(sealing).count();
        Ok((unsealed == 0).then_some(report))
    })
    .await?;
    assert!(report["digests"].as_u64().is_some_and(|d| d > 0), "{report}");
    let ours = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            lines.iter().any(|l| {
                l["event"].is_object()
                    && position(l)
                        == format!(
                            "{}/{}@{}",
                            f["position"]["topic"].as_str().unwrap_or(""),
                            f["position"]["partition"],
                            f["position"]["offset"]
                        )
            })
        })
        .count();
    assert_eq!(ours, 0, "a finding about this deployment's events: {report}");

    // CSV, for reading: one row per event of the dataset.
    let (_, csv) = audit(&deployment, &["export", "--dataset", &deployment.dataset, "--format", "csv"]).await?;
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("time,topic,partition,offset,dataset"), "{csv}");
    assert_eq!(rows.len() - 1, events, "{csv}");

    // The timeline, from the topics alone.
    let (_, timeline) = audit(&deployment, &["timeline", &incident_id, "--json"]).await?;
    let timeline: Value = serde_json::from_str(&timeline)?;
    let kinds: Vec<&str> =
        timeline["steps"].as_array().into_iter().flatten().filter_map(|s| s["what"].as_str()).collect();
    for kind in ["detection", "diagnosis", "proposal", "decision", "application"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(timeline["time_to_heal_seconds"].as_f64().is_some_and(|s| s > 0.0), "{timeline}");
    let phases: Vec<&str> = timeline["phases"].as_array().into_iter().flatten().filter_map(|p| p[0].as_str()).collect();
    assert_eq!(phases, ["detect", "diagnose", "propose", "decide (by policy)", "apply", "replay"], "{timeline}");
    assert_eq!(timeline["steps"].as_array().map(|s| s.iter().filter(|s| s["what"] == "decision").count()), Some(1));
    assert!(Proposal::TOPIC == "mend.proposals");

    // Rebuilt from the topics, the warehouse agrees; a column added by
    // hand is reported.
    let (agrees, report) = audit(&deployment, &["rebuild"]).await?;
    assert!(agrees && report.contains("the warehouse agrees with the topics"), "{report}");
    let pool = sqlx::SqlitePool::connect(&deployment.warehouse).await?;
    let table = &deployment.dataset;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE \"{table}\" ADD COLUMN hand_made TEXT")))
        .execute(&pool)
        .await?;
    pool.close().await;
    let (agrees, report) = audit(&deployment, &["rebuild", "--dataset", &deployment.dataset]).await?;
    assert!(!agrees && report.contains("column hand_made is in the table"), "{report}");
    Ok(())
}

/// The digests of `chain` in the topic, with their offsets, in order.
async fn chain_digests(codec: &mend_avro::Codec, chain: &str) -> anyhow::Result<Vec<(i64, AuditDigest)>> {
    use rdkafka::message::Message as _;
    let mut digests = Vec::new();
    for message in mend_runtime::kafka::read_to_end(&mend_tests::brokers(), AuditDigest::TOPIC).await? {
        if message.key() != Some(chain.as_bytes()) {
            continue;
        }
        let payload = message.payload().unwrap_or_default();
        if let mend_audit::Record::Digest(digest) = mend_audit::read_record(codec, AuditDigest::TOPIC, payload).await? {
            digests.push((message.offset(), *digest));
        }
    }
    digests.sort_by_key(|(offset, _)| *offset);
    Ok(digests)
}

/// Someone who may write to the digests topic, but has no signing key,
/// writes a digest after the chain's last one that seals offset 1,000,000
/// of each quarantine partition. The sealer, restarted, goes on from its
/// own last digest (following the forged one, it would skip every offset
/// before), and verify names the forgery.
#[tokio::test]
async fn a_forged_digest_in_the_topic_does_not_move_the_sealer() -> anyhow::Result<()> {
    let (deployment, public) = sealed_deployment().await?;
    let own = std::fs::read_to_string(&public)?.trim().to_owned();
    let codec = mend_avro::Codec::new(&mend_tests::registry_url())?;
    let chain = deployment.dataset.clone();
    let producer = producer()?;

    let mut up = deployment.up("up.log").await?;
    mend_tests::produce(&producer, &deployment.topic(), b"1", b"not avro at all").await?;
    eventually("the first quarantined record sealed", || async { Ok(chain_digests(&codec, &chain).await?.pop()) })
        .await?;
    // Stopped first: it seals other tests' events too, and would go on.
    up.kill().await?;
    let Some((_, last)) = chain_digests(&codec, &chain).await?.pop() else { anyhow::bail!("no digest") };

    let mut pending = mend_audit::seal::Pending::default();
    for partition in 0..4 {
        pending.push(mend_model::topics::QUARANTINE, partition, 1_000_000, b"forged");
    }
    let forger = mend_audit::keys::generate()?;
    let forged = mend_audit::seal::next_digest(&chain, Some(&last), &pending, Some(&forger));
    let payload = codec.encode_value(AuditDigest::TOPIC, AuditDigest::SCHEMA, &forged).await?;
    let (partition, forged_at) = mend_tests::produce(&producer, AuditDigest::TOPIC, chain.as_bytes(), &payload).await?;

    let _up = deployment.up("up-again.log").await?;
    mend_tests::produce(&producer, &deployment.topic(), b"2", b"still not avro").await?;
    let (_, next) = eventually("the sealer going on from its own digest", || async {
        Ok(chain_digests(&codec, &chain).await?.into_iter().find(|(offset, _)| *offset > forged_at))
    })
    .await?;
    assert_eq!(next.prev_hash.as_deref(), Some(last.hash.as_str()), "{next:?}");
    assert_eq!((next.sequence, next.key_id.as_deref()), (last.sequence + 1, Some(own.as_str())));
    let log = std::fs::read_to_string(deployment.dir.join("up-again.log"))?;
    assert!(log.contains("does not go on from"), "the sealer says it skipped the forged digest");

    // Verify names the forgery, and only it, of this chain: the sealer's
    // own digests chain and seal what they say.
    let (clean, report) = audit(&deployment, &["verify", "--public-key", &public]).await?;
    let at = format!("{}/{partition}@{forged_at}: ", AuditDigest::TOPIC);
    assert!(!clean, "{report}");
    let about_digests: Vec<&str> = report.lines().filter(|l| l.starts_with(AuditDigest::TOPIC)).collect();
    assert!(
        about_digests.iter().any(|l| l.starts_with(&at) && l.contains("forged and written into the topic")),
        "{report}"
    );
    assert!(!report.contains(&format!("digest #{} comes after", next.sequence)), "{report}");
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
