//! `mend demo`: the drift story against a running `mend up`.
//!
//! An orders stream is produced in four phases: the baseline; a nullable
//! `coupon` field added (healed on its own); `email` renamed to
//! `customer_email` with an Avro alias (approval shown and given); `amount`
//! changed from double to string (quarantined and blocked). Then every
//! produced record is checked: in the table with each value in its column, or
//! in quarantine. The report says "nothing lost" only after that check.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use std::sync::Arc;

use mend_avro::codec::Codec;
use mend_avro::registry::set_compatibility;
use mend_model::api::{DemoReport, Incident};
use mend_model::{Channel, IncidentStatus, Verdict};
use mend_store::Warehouse;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::Global;
use crate::client::{Client, describe_changes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset to drive (default: the first configured one).
    #[arg(long)]
    dataset: Option<String>,
    /// Records per phase.
    #[arg(long, default_value_t = 200)]
    records: usize,
    /// How long to wait for each phase to settle (`90s`, `2m`).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

fn schema(version: u8) -> String {
    let email = match version {
        1 | 2 => json!({"name": "email", "type": "string"}),
        _ => json!({"name": "customer_email", "type": "string", "aliases": ["email"], "doc": "renamed from email"}),
    };
    let amount = if version == 4 {
        json!({"name": "amount", "type": "string"})
    } else {
        json!({"name": "amount", "type": "double"})
    };
    let mut fields =
        vec![json!({"name": "id", "type": "long"}), email, amount, json!({"name": "status", "type": "string"})];
    if version >= 2 {
        fields
            .push(json!({"name": "coupon", "type": ["null", "string"], "default": null, "doc": "promotion code used"}));
    }
    json!({"type": "record", "name": "Order", "namespace": "shop", "fields": fields}).to_string()
}

/// What the demo produced for one order id, to check against the table.
#[derive(Debug, Clone)]
struct Expected {
    phase: u8,
    email: String,
    amount: f64,
    status: String,
    coupon: Option<String>,
}

fn record(version: u8, id: i64, expected: &Expected) -> Avro {
    let email_field = if version >= 3 { "customer_email" } else { "email" };
    let amount =
        if version == 4 { Avro::String(format!("{:.2} EUR", expected.amount)) } else { Avro::Double(expected.amount) };
    let mut fields = vec![
        ("id".to_owned(), Avro::Long(id)),
        (email_field.to_owned(), Avro::String(expected.email.clone())),
        ("amount".to_owned(), amount),
        ("status".to_owned(), Avro::String(expected.status.clone())),
    ];
    if version >= 2 {
        let coupon = match &expected.coupon {
            Some(c) => Avro::Union(1, Box::new(Avro::String(c.clone()))),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        fields.push(("coupon".to_owned(), coupon));
    }
    Avro::Record(fields)
}

struct Driver<'a> {
    api: &'a Client,
    dataset: String,
    codec: Arc<Codec>,
    subject: String,
    timeout: Duration,
}

impl Driver<'_> {
    async fn register(&self, schema: &str) -> anyhow::Result<u32> {
        self.codec.register(&self.subject, schema).await.map_err(|e| anyhow::anyhow!("registering a schema: {e}"))
    }

    /// Polls the control API until `check` finds what it waits for. The API
    /// may be briefly away (a restart): keep asking until the timeout.
    async fn wait<T>(&self, what: &str, check: impl Fn(&[Incident]) -> Option<T>) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Ok(incidents) = self.api.incidents().await
                && let Some(found) = check(&incidents)
            {
                return Ok(found);
            }
            anyhow::ensure!(Instant::now() < deadline, "timed out after {:?} waiting for {what}", self.timeout);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Approves, retrying while the API is away (a restart); a proposal
    /// found already approved (our earlier attempt got through) is fine.
    async fn approve(&self, proposal: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self
                .api
                .decide(proposal, Verdict::Approved, "demo", Some("the alias proves the rename"), Channel::Cli)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if error.to_string().contains("already approved") => return Ok(()),
                Err(error) if error.to_string().starts_with("409") => return Err(error.into()),
                Err(error) => {
                    anyhow::ensure!(Instant::now() < deadline, "could not approve {proposal}: {error}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    async fn incident_of(&self, what: &str, writer: u32, statuses: &[IncidentStatus]) -> anyhow::Result<Incident> {
        self.wait(what, |incidents| {
            incidents.iter().find(|i| self.is_ours(i, writer) && statuses.contains(&i.status)).cloned()
        })
        .await
    }

    /// Whether `incident` is this dataset's, of writer schema `writer`.
    fn is_ours(&self, incident: &Incident, writer: u32) -> bool {
        incident.dataset == self.dataset
            && incident.writer_schema_id.and_then(|w| u32::try_from(w).ok()) == Some(writer)
    }
}

async fn wait_rows(warehouse: &Warehouse, table: &str, at_least: i64, timeout: Duration) -> anyhow::Result<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let count = warehouse.count(table).await.unwrap_or(0);
        if count >= at_least {
            return Ok(count);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {at_least} rows in {table} (have {count})");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<()> {
    let config = global.load_config()?;
    let (connections, warehouse_url, api) = (&global.connections, global.warehouse.as_str(), &global.api());
    let dataset = match &args.dataset {
        Some(name) => config.dataset(name).ok_or_else(|| anyhow::anyhow!("no dataset {name} in the configuration"))?,
        None => config.datasets.first().ok_or_else(|| anyhow::anyhow!("no dataset configured"))?,
    };
    let warehouse = Warehouse::connect(&dataset.warehouse.clone().unwrap_or_else(|| warehouse_url.to_owned())).await?;
    let driver = Driver {
        api,
        dataset: dataset.name.clone(),
        codec: Codec::new(&connections.registry_url)?,
        subject: dataset.subject(),
        timeout: args.timeout,
    };
    println!("mend demo: dataset {} (topic {}, table {})", dataset.name, dataset.topic, dataset.table);
    driver.wait("mend up to answer", |_| Some(())).await?;
    // The upstream team changes types without asking: compatibility checks
    // are off for this subject, as they are on many real ones.
    set_compatibility(&reqwest::Client::new(), &connections.registry_url, &driver.subject, "NONE").await?;
    let producer: FutureProducer = mend_runtime::kafka::producer(&connections.brokers)?;
    let n = args.records;
    let mut expected: BTreeMap<i64, Expected> = BTreeMap::new();
    let mut ids = Vec::new();
    let mut drift_started: BTreeMap<u8, Instant> = BTreeMap::new();
    let mut healed_after: BTreeMap<u8, Duration> = BTreeMap::new();

    for version in 1..=4u8 {
        let text = schema(version);
        let parsed = Schema::parse_str(&text)?;
        let id = driver.register(&text).await?;
        ids.push(id);
        let label = ["baseline", "added field coupon", "renamed email -> customer_email", "amount double -> string"]
            [usize::from(version - 1)];
        println!("\nphase {version}: {label} (schema id {id}), producing {n} records");
        if version > 1 {
            drift_started.insert(version, Instant::now());
        }
        // Sent without waiting for each delivery (the idempotent producer
        // keeps them in order), so the time to heal is the pipeline's, not
        // 500 round trips of this loop.
        let mut sends = Vec::with_capacity(n);
        for i in 0..n {
            let order = i64::try_from((usize::from(version) - 1) * n + i)?;
            let exp = Expected {
                phase: version,
                email: format!("customer{order}@example.com"),
                amount: (order as f64) * 1.5 + 0.25,
                status: ["paid", "shipped", "refunded"][i % 3].to_owned(),
                coupon: (version >= 2 && i % 2 == 0).then(|| format!("SAVE{}", i % 10)),
            };
            #[allow(deprecated)]
            let datum = apache_avro::to_avro_datum(&parsed, record(version, order, &exp))?;
            let payload = [&[0u8][..], &id.to_be_bytes()[..], &datum].concat();
            let key = order.to_string();
            let producer = producer.clone();
            let topic = dataset.topic.clone();
            sends.push(async move {
                producer
                    .send(FutureRecord::to(&topic).key(&key).payload(&payload), Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))
            });
            expected.insert(order, exp);
        }
        futures::future::try_join_all(sends).await?;
        match version {
            1 => {
                wait_rows(&warehouse, &dataset.table, i64::try_from(n)?, driver.timeout).await?;
                println!("  loaded {n} rows into {}", dataset.table);
            }
            2 => {
                let incident = driver.incident_of("the added field to heal", id, &[IncidentStatus::Healed]).await?;
                healed_after.insert(2, drift_started[&2].elapsed());
                println!("  detected: {}", describe_changes(&incident.changes));
                println!("  policy: {} -> healed automatically", incident.rules.join("; "));
                wait_rows(&warehouse, &dataset.table, i64::try_from(2 * n)?, driver.timeout).await?;
            }
            3 => {
                let waiting = [IncidentStatus::AwaitingApproval, IncidentStatus::Healed];
                let incident = driver.incident_of("the rename to await approval", id, &waiting).await?;
                println!("  detected: {}", describe_changes(&incident.changes));
                for step in &incident.steps {
                    println!("  plan step [{}] {}", step.kind, step.description);
                }
                if incident.status == IncidentStatus::AwaitingApproval {
                    let proposal = incident.proposal_id.as_deref().unwrap_or_default();
                    println!("  awaiting approval: mend approve {proposal} --by demo");
                    driver.approve(proposal).await?;
                    println!("  approved by demo");
                }
                driver.incident_of("the rename to heal", id, &[IncidentStatus::Healed]).await?;
                healed_after.insert(3, drift_started[&3].elapsed());
                wait_rows(&warehouse, &dataset.table, i64::try_from(3 * n)?, driver.timeout).await?;
            }
            _ => {
                let incident =
                    driver.incident_of("the type change to be blocked", id, &[IncidentStatus::Blocked]).await?;
                println!("  detected: {}", describe_changes(&incident.changes));
                println!("  blocked: {}", incident.rules.join("; "));
                let want = u64::try_from(n)?;
                driver
                    .wait("the blocked records to be quarantined", |incidents| {
                        incidents.iter().find(|i| driver.is_ours(i, id) && i.quarantined >= want).map(|_| ())
                    })
                    .await?;
                let health = api.health().await.map_err(|e| anyhow::anyhow!("asking mend up for its health: {e}"))?;
                if health.supervisor {
                    let (incident, run) = driver
                        .wait("the supervisor's run on the type change", |incidents| {
                            let incident = incidents.iter().find(|i| driver.is_ours(i, id))?;
                            Some((incident.id.clone(), incident.supervisor.clone()?))
                        })
                        .await?;
                    println!(
                        "  supervisor ({}): {} after {:.1}s, tools {}",
                        run.model,
                        run.outcome,
                        run.seconds,
                        run.tools.join(", ")
                    );
                    match run.proposal_id.as_deref() {
                        Some(proposal) => println!(
                            "  its plan waits for a person: mend show {incident} / mend approve {proposal} --by you"
                        ),
                        None => println!("  escalated to a person: {}", run.reason.as_deref().unwrap_or("")),
                    }
                } else {
                    println!(
                        "  the supervisor is off: with MEND_ANTHROPIC_API_KEY set for `make demo`, Claude investigates \
                         this incident with mend's MCP tools and drafts a fix that waits for your approval"
                    );
                }
            }
        }
    }

    // Verify every record: in the table with each value in its column, or quarantined.
    let columns = ["id", "email", "amount", "status", "coupon"];
    let rows = warehouse.rows_as_text(&dataset.table, &columns).await?;
    let mut in_table: BTreeMap<i64, Vec<Option<String>>> = BTreeMap::new();
    let mut duplicates = 0;
    for row in rows {
        let id: i64 = row[0].as_deref().unwrap_or("-1").parse()?;
        if in_table.insert(id, row).is_some() {
            duplicates += 1;
        }
    }
    let (mut loaded, mut lost, mut misplaced, mut quarantined) = (0, 0, 0, 0);
    for (id, exp) in &expected {
        match (exp.phase, in_table.get(id)) {
            (4, None) => quarantined += 1,
            (4, Some(_)) => misplaced += 1, // blocked records must not be loaded
            (_, None) => lost += 1,
            (_, Some(row)) => {
                let amount_ok = row[2]
                    .as_deref()
                    .and_then(|a| a.parse::<f64>().ok())
                    .is_some_and(|a| (a - exp.amount).abs() < 1e-9);
                let ok = row[1].as_deref() == Some(exp.email.as_str())
                    && amount_ok
                    && row[3].as_deref() == Some(exp.status.as_str())
                    && row[4].as_deref() == exp.coupon.as_deref();
                if ok { loaded += 1 } else { misplaced += 1 }
            }
        }
    }
    let extra = in_table.keys().filter(|id| !expected.contains_key(id)).count();
    let incidents = api.incidents().await?;
    let ours: Vec<&Incident> = incidents.iter().filter(|i| i.dataset == dataset.name).collect();

    println!("\nreport");
    println!("  produced         {}", expected.len());
    println!("  loaded           {loaded} (each value checked in its column)");
    println!("  quarantined      {quarantined} (blocked type change, waiting for a person)");
    println!("  lost             {lost}");
    println!("  misplaced        {misplaced}");
    println!("  duplicated rows  {duplicates}");
    for incident in &ours {
        println!("  incident {} {:<18} {}", incident.id, incident.status.as_str(), describe_changes(&incident.changes));
    }
    for (version, elapsed) in &healed_after {
        println!("  phase {version}: first drifted record produced -> healed in {:.1}s", elapsed.as_secs_f64());
    }
    let clean = lost == 0 && misplaced == 0 && duplicates == 0 && extra == 0 && loaded + quarantined == expected.len();
    if let Some(path) = &args.report {
        let report = DemoReport {
            produced: expected.len(),
            loaded,
            quarantined,
            lost,
            misplaced,
            duplicates,
            schema_ids: ids,
            healed_seconds: healed_after.iter().map(|(v, d)| (v.to_string(), d.as_secs_f64())).collect(),
            incidents: ours.into_iter().cloned().collect(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    anyhow::ensure!(clean, "the demo found lost, misplaced or duplicated records (see the report above)");
    println!("\nnothing lost, nothing misplaced: every record is in its column or in quarantine with a reason");
    Ok(())
}
