//! The console's flows in a real browser (Debian's Chromium driven by
//! playwright-core, `tests/browser/console.mjs`): a viewer cannot approve
//! and is told why; a rename waiting is opened from the inbox and approved,
//! and the inbox, not reloaded, shows it healed; another is rejected with a
//! reason holding markup, shown as text; nothing from the data runs.
//! Screenshots of each page are kept under `.mend/screenshots/`. What the
//! clicks recorded is checked here through the API.

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use mend_model::api::Incident;
use mend_model::{Channel, IncidentStatus, Verdict};
use mend_store::Warehouse;
use mend_tests::{Deployment, eventually, produce_avro, producer, register_schema};
use serde_json::json;

const MARKUP: &str = "<script>window.pwned=1</script><img src=x onerror=alert(1)>";

/// v1 `email`; v2 and v3 rename it (each its own incident, both waiting).
fn schema(version: u8) -> String {
    let field = ["email", "customer_email", "contact_email"][usize::from(version) - 1];
    let mut email = json!({"name": field, "type": "string", "doc": MARKUP});
    if version > 1 {
        email["aliases"] = json!(["email"]);
    }
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "id", "type": "long"}, email]})
        .to_string()
}

async fn produce_orders(deployment: &Deployment, version: u8, ids: std::ops::Range<i64>) -> anyhow::Result<()> {
    let text = schema(version);
    let id = register_schema(&format!("{}-value", deployment.topic()), &text).await?;
    let parsed = Schema::parse_str(&text)?;
    let field = ["email", "customer_email", "contact_email"][usize::from(version) - 1];
    let producer = producer()?;
    for order_id in ids {
        let value =
            Avro::Record(vec![("id".into(), Avro::Long(order_id)), (field.into(), Avro::String(MARKUP.into()))]);
        produce_avro(&producer, &deployment.topic(), &order_id.to_string(), id, &parsed, value).await?;
    }
    Ok(())
}

async fn incidents(api: &str) -> anyhow::Result<Vec<Incident>> {
    Ok(reqwest::Client::new()
        .get(format!("http://{api}/incidents"))
        .bearer_auth("viewer-token")
        .send()
        .await?
        .json()
        .await?)
}

#[tokio::test]
async fn the_console_in_chromium() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("no repository root")?;
    let installed = root.join(".mend/browser");
    anyhow::ensure!(
        installed.join("node_modules/playwright-core").is_dir() && std::path::Path::new("/usr/bin/chromium").exists(),
        "playwright-core or Chromium is missing: `make venv` installs them"
    );
    // The script imports playwright-core from beside it.
    std::fs::copy(root.join("tests/browser/console.mjs"), installed.join("console.mjs"))?;
    let screenshots = root.join(".mend/screenshots");
    std::fs::create_dir_all(&screenshots)?;

    let mut deployment = Deployment::new("sqlite", "")?;
    deployment.env = vec![("MEND_API_TOKENS".into(), "vic:viewer:viewer-token,alice:approver:approver-token".into())];
    let mut up = deployment.up("up.log").await?;
    let api = deployment.api.clone();
    produce_orders(&deployment, 1, 0..3).await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    eventually("3 rows", || {
        let (warehouse, table) = (warehouse.clone(), deployment.dataset.clone());
        async move { Ok((warehouse.count(&table).await.unwrap_or(0) >= 3).then_some(())) }
    })
    .await?;
    produce_orders(&deployment, 2, 3..5).await?;
    produce_orders(&deployment, 3, 5..6).await?;
    let dataset = deployment.dataset.clone();
    let waiting = eventually("two renames to wait", || {
        let (api, dataset) = (api.clone(), dataset.clone());
        async move {
            let mut waiting: Vec<Incident> = incidents(&api)
                .await?
                .into_iter()
                .filter(|i| i.dataset == dataset && i.status == IncidentStatus::AwaitingApproval)
                .collect();
            waiting.sort_by_key(|i| i.writer_schema_id);
            Ok((waiting.len() == 2).then_some(waiting))
        }
    })
    .await?;
    let (first, second) = (&waiting[0], &waiting[1]);

    let run = tokio::process::Command::new("node")
        .arg(installed.join("console.mjs"))
        .env("MEND_CONSOLE", format!("http://{api}"))
        .env("MEND_APPROVER_TOKEN", "approver-token")
        .env("MEND_VIEWER_TOKEN", "viewer-token")
        .env("MEND_FIRST", &first.id)
        .env("MEND_SECOND", &second.id)
        .env("MEND_DATASET", &deployment.dataset)
        .env("MEND_SCREENSHOTS", &screenshots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), run).await.context("the browser hung")??;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    anyhow::ensure!(output.status.success(), "the browser flows failed:\n{}", String::from_utf8_lossy(&output.stderr));

    // What the clicks recorded: alice, through the console.
    let all = incidents(&api).await?;
    let find = |id: &str| all.iter().find(|i| i.id == id).cloned().context("incident gone");
    let approved = find(&first.id)?;
    assert_eq!(approved.status, IncidentStatus::Healed);
    let decision = approved.decision.context("no decision")?;
    assert_eq!(
        (decision.by.as_str(), decision.channel, decision.outcome),
        ("alice", Channel::Console, Verdict::Approved)
    );
    let rejected = find(&second.id)?.decision.context("no decision")?;
    assert_eq!((rejected.channel, rejected.outcome), (Channel::Console, Verdict::Rejected));
    assert!(rejected.reason.as_deref().is_some_and(|r| r.starts_with("wrong_producer: <img")), "{rejected:?}");

    up.kill().await?;
    Ok(())
}
