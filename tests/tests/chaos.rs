//! Chaos: the drift story on two datasets (ten incidents of five kinds:
//! an addition, a widening, a rename proven by values, new enum symbols,
//! two removals) with every stage a process of its own (two of the loader,
//! sharing the partitions in their consumer group), on a three-node Kafka
//! cluster of the test's own (replication factor 3, min.insync.replicas 2),
//! once undisturbed and once while a seeded driver kills a random process
//! with SIGKILL twenty times at random moments, SIGKILLs a random broker
//! three times and the active controller once (each restarted after a
//! moment; partition leaders move), and restarts PostgreSQL and the
//! registry once each. Every restart is proven (a new process id; a
//! broker's own log of its start), and how long writes stall after each
//! broker loss is measured and printed. A supervisor restarts every process that exits, as systemd
//! or Kubernetes would. The end states must be the same: every value in its
//! column, the columns, the quarantine, incident statuses and kinds, each
//! change applied once, and which incidents have events on each audit topic.
//! The sealer is one of the processes: each dataset's audit log, exported,
//! verifies with the public key after either run.
//!
//! `MEND_CHAOS_SEEDS=1,2,3` runs those seeds (default: one seed from the
//! clock, printed, so a failing one can be run again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use mend_model::IncidentStatus;
use mend_model::api::Incident;
use mend_model::events::{Application, Decision, Detection, Diagnosis, Event, Proposal};
use mend_store::Warehouse;
use mend_tests::infra::{self, Cluster};
use mend_tests::story::{COLUMNS, PER_VERSION, POLICY, VERSIONS, expected, record, schema};
use mend_tests::{Deployment, brokers, create_topic, produce_avro, producer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::process::Child;
use tokio::sync::Mutex;

/// How long the story may take to converge after a disturbance.
const CONVERGE: Duration = Duration::from_secs(300);

const STAGES: [(&str, &str); 8] = [
    ("loader-1", "loader"),
    ("loader-2", "loader"),
    ("detector", "detector"),
    ("diagnoser", "diagnoser"),
    ("proposer", "proposer"),
    ("applier", "applier"),
    ("control", "control"),
    ("sealer", "sealer"),
];

/// Ports of the test's own cluster (nodes on 29092, 29094, 29096) and registry.
const CLUSTER_BASE: u16 = 29092;
const REGISTRY_PORT: u16 = 28081;

/// The test's cluster and its registry, which the driver restarts.
struct World {
    cluster: Cluster,
    registry: Mutex<Child>,
    registry_log: PathBuf,
}

impl World {
    async fn start() -> anyhow::Result<Arc<Self>> {
        let cluster = Cluster::start(CLUSTER_BASE, 3).await?;
        let registry_log = cluster.dir.join("registry.log");
        let registry = cluster.registry(REGISTRY_PORT, &registry_log)?;
        let world = Arc::new(Self { cluster, registry: Mutex::new(registry), registry_log });
        world.registry_answers().await?;
        Ok(world)
    }

    async fn registry_answers(&self) -> anyhow::Result<()> {
        converge("the registry to answer", || async {
            let answer = reqwest::get(format!("http://127.0.0.1:{REGISTRY_PORT}/subjects")).await?;
            Ok(answer.status().is_success().then_some(()))
        })
        .await
    }

    /// Kills the registry and starts a new one (a new process, by construction).
    async fn restart_registry(&self) -> anyhow::Result<()> {
        let mut registry = self.registry.lock().await;
        let old = registry.id();
        registry.start_kill()?;
        registry.wait().await?;
        *registry = self.cluster.registry(REGISTRY_PORT, &self.registry_log)?;
        anyhow::ensure!(registry.id() != old && registry.id().is_some(), "the registry did not restart");
        drop(registry);
        self.registry_answers().await
    }

    /// SIGKILLs broker `node`, restarts it after `down`, and returns how
    /// long a write (acks=all) to a partition it led took to be accepted
    /// after the kill (by a producer that was already connected).
    async fn broker_fault(&self, node: u16, down: Duration) -> anyhow::Result<Duration> {
        let partition = led_by(PROBE_TOPIC, node).await?;
        let producer = producer()?;
        // Sent again while the cluster refuses it (each send gives up after
        // the producer's 30 s message timeout), for as long as the story
        // may take to converge.
        let write = move |producer: FutureProducer| async move {
            let deadline = Instant::now() + CONVERGE;
            loop {
                let record = FutureRecord::to(PROBE_TOPIC).key("probe").payload("probe").partition(partition);
                match producer.send(record, Duration::from_secs(30)).await {
                    Ok(_) => return Ok::<_, anyhow::Error>(()),
                    Err((error, _)) if Instant::now() < deadline => eprintln!("probe write refused ({error}); again"),
                    Err((error, _)) => return Err(error.into()),
                }
            }
        };
        write(producer.clone()).await?;
        self.cluster.kill(node).await?;
        let killed = Instant::now();
        let probe = tokio::spawn(async move { write(producer).await.map(|()| killed.elapsed()) });
        tokio::time::sleep(down).await;
        self.cluster.restart(node).await?;
        probe.await?
    }
}

/// The topic a probe write goes to after each broker loss: three
/// partitions, so one is led by whichever broker is lost.
const PROBE_TOPIC: &str = "mend-chaos-probe";

/// A partition of `topic` whose leader is `node` (the first when none is).
async fn led_by(topic: &str, node: u16) -> anyhow::Result<i32> {
    let (topic, brokers) = (topic.to_owned(), brokers());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = mend_runtime::kafka::client_config(&brokers).create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions = metadata.topics().iter().flat_map(|t| t.partitions().iter());
        let led: Vec<(i32, i32)> = partitions.map(|p| (p.id(), p.leader())).collect();
        Ok(led.iter().find(|(_, leader)| *leader == i32::from(node)).or(led.first()).map_or(0, |(id, _)| *id))
    })
    .await?
}

/// Restarts the shared PostgreSQL with the project's scripts and proves it
/// (its postmaster has a new process id).
async fn restart_postgres() -> anyhow::Result<()> {
    let before = infra::postgres_pid()?;
    infra::script("down.sh", &["postgres"]).await?;
    infra::script("up.sh", &[]).await?;
    let after = infra::postgres_pid()?;
    anyhow::ensure!(after != before, "PostgreSQL kept its process id {after}: it was not restarted");
    Ok(())
}

/// The stage processes of one deployment, restarted when they exit.
struct Fleet {
    deployment: Arc<Deployment>,
    children: Mutex<Vec<Option<Child>>>,
    started: std::sync::atomic::AtomicUsize,
}

impl Fleet {
    fn spawn(deployment: &Deployment, index: usize) -> anyhow::Result<Child> {
        let (name, stage) = STAGES[index];
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(deployment.dir.join(format!("{name}.log")))?;
        Ok(deployment.command(&["run", stage])?.stdout(std::process::Stdio::null()).stderr(log).spawn()?)
    }

    fn start(deployment: Arc<Deployment>) -> anyhow::Result<Arc<Self>> {
        let children = (0..STAGES.len()).map(|i| Self::spawn(&deployment, i).map(Some)).collect::<Result<_, _>>()?;
        Ok(Arc::new(Self {
            deployment,
            children: Mutex::new(children),
            started: std::sync::atomic::AtomicUsize::new(STAGES.len()),
        }))
    }

    /// Restarts every process that has exited (after a second, as a
    /// service manager would).
    async fn supervise(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut children = self.children.lock().await;
            for (index, slot) in children.iter_mut().enumerate() {
                let exited = match slot {
                    Some(child) => child.try_wait().ok().flatten().is_some(),
                    None => true,
                };
                if exited {
                    *slot = Self::spawn(&self.deployment, index).ok();
                    self.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    async fn kill(&self, index: usize) {
        if let Some(child) = self.children.lock().await[index].as_mut() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

/// Retries `step` until it succeeds (the broker or registry may be away).
async fn persist<T, F, Fut>(what: &str, mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + CONVERGE;
    let mut failures = 0;
    loop {
        match step().await {
            Ok(value) => {
                if failures > 0 {
                    eprintln!("{what}: done after {failures} failed attempts");
                }
                return Ok(value);
            }
            Err(error) if Instant::now() < deadline => {
                if failures == 0 {
                    eprintln!("{what}: {error}; retrying");
                }
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.context(format!("{what}: gave up"))),
        }
    }
}

/// Waits until `check` holds, tolerating errors while things restart.
async fn converge<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + CONVERGE;
    loop {
        if let Ok(Some(value)) = check().await {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One deployment with two story datasets, `<name>` and `<name>_b`, and a
/// signing key for its sealer (the public key's file is beside it, `.pub`).
async fn deployment() -> anyhow::Result<Deployment> {
    let mut deployment = Deployment::new("postgres", POLICY)?;
    let secret = deployment.dir.join("sealer.key").to_string_lossy().into_owned();
    let output = deployment.command(&["audit", "keygen", "--out", &secret])?.output().await?;
    anyhow::ensure!(output.status.success(), "keygen: {}", String::from_utf8_lossy(&output.stderr));
    deployment.env.push(("MEND_AUDIT_SIGNING_KEY".into(), secret));
    let config = deployment.dir.join("mend.toml");
    let name = &deployment.dataset;
    let second = format!(
        "\n[[dataset]]\nname = \"{name}_b\"\ntopic = \"{name}.b\"\ntable = \"{name}_b\"\nkey = [\"id\"]\n{POLICY}"
    );
    std::fs::write(&config, std::fs::read_to_string(&config)? + &second)?;
    Ok(deployment)
}

/// Produces the story on both datasets, waiting for each version to heal.
async fn story(deployment: &Deployment) -> anyhow::Result<()> {
    let producer = producer()?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let datasets = [
        (deployment.dataset.clone(), deployment.topic()),
        (format!("{}_b", deployment.dataset), format!("{}.b", deployment.dataset)),
    ];
    for version in 1..=VERSIONS {
        let text = schema(version).to_string();
        let parsed = Schema::parse_str(&text)?;
        for (_, topic) in &datasets {
            let subject = format!("{topic}-value");
            let id = persist("registering a schema", || mend_tests::register_schema(&subject, &text)).await?;
            for n in 0..PER_VERSION {
                let order = i64::from(version - 1) * PER_VERSION + n;
                let (key, value) = (order.to_string(), record(version, order, &expected(version, order)));
                persist("producing", || produce_avro(&producer, topic, &key, id, &parsed, value.clone())).await?;
            }
        }
        let want = i64::from(version) * PER_VERSION;
        for (table, _) in &datasets {
            converge(&format!("version {version} loaded into {table}"), || {
                let (warehouse, table) = (warehouse.clone(), table.clone());
                async move { Ok((warehouse.count(&table).await? >= want).then_some(())) }
            })
            .await?;
        }
    }
    Ok(())
}

/// What must be the same after any run of the story (dataset names
/// replaced by `A` and `B`).
#[derive(Debug, PartialEq, Eq)]
struct EndState {
    rows: BTreeMap<String, Vec<Vec<Option<String>>>>,
    columns: BTreeMap<String, Vec<String>>,
    /// Per dataset: (change kinds, status) of each incident, sorted.
    incidents: BTreeMap<String, Vec<(Vec<String>, String)>>,
    /// Per dataset: plans applied and their statements.
    applied: BTreeMap<String, (i64, i64)>,
    /// Per dataset: quarantined records still not loaded (how many were
    /// quarantined at all may differ: a batch re-delivered after its
    /// contract moved loads records the first delivery quarantined).
    unloaded: BTreeMap<String, i64>,
    /// Per event topic and dataset: the distinct incidents with an event there.
    events: BTreeMap<(String, String), usize>,
}

async fn end_state(deployment: &Deployment) -> anyhow::Result<EndState> {
    let name = deployment.dataset.clone();
    let role = |dataset: &str| if dataset == name { "A".to_owned() } else { "B".to_owned() };
    let tables = [name.clone(), format!("{name}_b")];
    let url = format!("http://{}/incidents", deployment.api);
    let incidents: Vec<Incident> = converge("every incident healed", || {
        let url = url.clone();
        async move {
            let list: Vec<Incident> = reqwest::get(&url).await?.json().await?;
            Ok((list.len() >= 10 && list.iter().all(|i| i.status == IncidentStatus::Healed)).then_some(list))
        }
    })
    .await?;
    let warehouse = Warehouse::connect(&deployment.warehouse).await?;
    let pool = sqlx::PgPool::connect(&deployment.warehouse).await?;
    let mut state = EndState {
        rows: BTreeMap::new(),
        columns: BTreeMap::new(),
        incidents: BTreeMap::new(),
        applied: BTreeMap::new(),
        unloaded: BTreeMap::new(),
        events: BTreeMap::new(),
    };
    for table in &tables {
        let mut rows = warehouse.rows_as_text(table, &COLUMNS).await?;
        rows.sort_by_key(|r| r[0].as_deref().and_then(|id| id.parse::<i64>().ok()));
        state.rows.insert(role(table), rows);
        state.columns.insert(role(table), warehouse.columns(table).await?.into_iter().map(|c| c.name).collect());
        let applied: (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), sum(statements)::int8 FROM mend_applied WHERE dataset = $1")
                .bind(table)
                .fetch_one(&pool)
                .await?;
        state.applied.insert(role(table), (applied.0, applied.1.unwrap_or(0)));
        let unloaded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mend_quarantined WHERE dataset = $1 AND NOT loaded")
                .bind(table)
                .fetch_one(&pool)
                .await?;
        state.unloaded.insert(role(table), unloaded);
    }
    for incident in incidents.iter().filter(|i| tables.contains(&i.dataset)) {
        let mut kinds: Vec<String> = incident.changes.iter().map(|c| c.kind.to_string()).collect();
        kinds.sort();
        state.incidents.entry(role(&incident.dataset)).or_default().push((kinds, incident.status.to_string()));
    }
    for list in state.incidents.values_mut() {
        list.sort();
    }
    // At least once: a stage killed after delivering its events and before
    // committing delivers them again, so only distinct incidents compare.
    let codec = mend_avro::codec::Codec::new(&mend_tests::registry_url())?;
    for topic in [Detection::TOPIC, Diagnosis::TOPIC, Proposal::TOPIC, Decision::TOPIC, Application::TOPIC] {
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for message in mend_runtime::kafka::read_to_end(&brokers(), topic).await? {
            let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
            if !tables.iter().any(|t| t == key) {
                continue;
            }
            let event = codec.decode_audit(topic, message.payload().unwrap_or_default()).await?;
            seen.entry(role(key)).or_default().insert(event.envelope().incident_id.0.clone());
        }
        for (dataset, incidents) in seen {
            state.events.insert((topic.to_owned(), dataset), incidents.len());
        }
    }
    Ok(state)
}

/// The story with the fleet, undisturbed (`seed` None) or under chaos.
async fn run(world: &Arc<World>, seed: Option<u64>) -> anyhow::Result<(EndState, Retried)> {
    let deployment = Arc::new(deployment().await?);
    let fleet = Fleet::start(deployment.clone())?;
    let supervisor = tokio::spawn(fleet.clone().supervise());
    let chaos = seed.map(|seed| {
        let (fleet, world) = (fleet.clone(), world.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            for round in 1..=20 {
                tokio::time::sleep(Duration::from_millis(rng.u64(300..3000))).await;
                let victim = rng.usize(0..STAGES.len());
                eprintln!("chaos seed {seed} round {round}: SIGKILL {}", STAGES[victim].0);
                fleet.kill(victim).await;
                let down = Duration::from_millis(rng.u64(500..4000));
                let node = match round {
                    3 | 8 | 13 => Some(rng.u16(1..=3)),
                    18 => Some(world.cluster.active_controller().await?),
                    _ => None,
                };
                if let Some(node) = node {
                    let what = if round == 18 { "the active controller, broker" } else { "broker" };
                    let stall = world.broker_fault(node, down).await?;
                    eprintln!(
                        "chaos seed {seed} round {round}: SIGKILL {what} {node}, restarted after {down:?} (new pid, \
                         its log says it started): writes accepted again {stall:.2?} after the kill"
                    );
                }
                if round == 10 {
                    restart_postgres().await?;
                    eprintln!("chaos seed {seed} round {round}: PostgreSQL restarted (new postmaster pid)");
                }
                if round == 15 {
                    world.restart_registry().await?;
                    eprintln!("chaos seed {seed} round {round}: the registry restarted");
                }
            }
            Ok::<_, anyhow::Error>(())
        })
    });
    let told = story(&deployment).await;
    if let Some(chaos) = chaos {
        chaos.await??;
    }
    told?;
    let state = end_state(&deployment).await;
    let verified = verify_exports(&deployment).await;
    supervisor.abort();
    eprintln!(
        "{}: {} process starts (logs in {})",
        seed.map_or("undisturbed".to_owned(), |s| format!("chaos seed {s}")),
        fleet.started.load(std::sync::atomic::Ordering::Relaxed),
        deployment.dir.display()
    );
    Ok((state?, verified?))
}

/// Per service, the retried copies `mend audit verify` counts in the
/// story's audit logs.
type Retried = BTreeMap<String, usize>;

/// What the test reads of `mend audit verify --json`.
#[derive(serde::Deserialize)]
struct Verified {
    events: usize,
    findings: Vec<serde_json::Value>,
    retried: Retried,
}

/// The stages whose batches are Kafka transactions: no retried copies.
const EXACTLY_ONCE: [&str; 3] = ["detector", "diagnoser", "proposer"];

/// Each story dataset's audit log, exported once the sealer has sealed it
/// (a sealer killed and restarted along with the rest), verifies with the
/// public key: every event, chain, digest, signature and sealed range.
/// Returns the retried copies it counts, per service.
async fn verify_exports(deployment: &Deployment) -> anyhow::Result<Retried> {
    let mut retried = Retried::new();
    let public = deployment.dir.join("sealer.key.pub").to_string_lossy().into_owned();
    for dataset in [deployment.dataset.clone(), format!("{}_b", deployment.dataset)] {
        let file = deployment.dir.join(format!("{dataset}.jsonl")).to_string_lossy().into_owned();
        persist(&format!("exporting {dataset}'s audit log"), || async {
            let output =
                deployment.command(&["audit", "export", "--dataset", &dataset, "--out", &file])?.output().await?;
            anyhow::ensure!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            Ok(())
        })
        .await?;
        let output = deployment
            .command(&["audit", "verify", "--json", "--file", &file, "--public-key", &public])?
            .output()
            .await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Verified = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{dataset}: {e}: {text}"))?;
        anyhow::ensure!(output.status.success() && report.findings.is_empty(), "{dataset}: {text}");
        eprintln!("{dataset}: {} events verified, 0 findings, retried copies {:?}", report.events, report.retried);
        for (service, copies) in report.retried {
            *retried.entry(service).or_default() += copies;
        }
    }
    Ok(retried)
}

#[tokio::test]
async fn the_story_under_chaos_ends_as_the_undisturbed_run() -> anyhow::Result<()> {
    let seeds: Vec<u64> = match std::env::var("MEND_CHAOS_SEEDS") {
        Ok(list) => list.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?,
        Err(_) => vec![std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 10_000],
    };
    let world = World::start().await?;
    mend_tests::point_at(&world.cluster.brokers(), &format!("http://127.0.0.1:{REGISTRY_PORT}"));
    create_topic(PROBE_TOPIC, 3).await?;
    let (calm, calm_retried) = run(&world, None).await?;
    eprintln!("undisturbed: incidents {:?}, applied {:?}", calm.incidents, calm.applied);
    for stage in EXACTLY_ONCE {
        assert_eq!(calm_retried.get(stage), None, "undisturbed: {stage} answers each event once");
    }
    assert!(calm.incidents.values().map(Vec::len).sum::<usize>() >= 10, "ten incidents or more: {:?}", calm.incidents);
    assert_eq!(calm.rows.values().map(Vec::len).sum::<usize>(), 2 * usize::from(VERSIONS) * 20);
    for seed in seeds {
        eprintln!("chaos seed {seed} (MEND_CHAOS_SEEDS={seed} runs it again)");
        let (stormy, retried) = run(&world, Some(seed)).await?;
        eprintln!("seed {seed}: retried copies by service {retried:?} (undisturbed: {calm_retried:?})");
        for stage in EXACTLY_ONCE {
            assert_eq!(retried.get(stage), None, "seed {seed}: {stage} writes in transactions: no retried copies");
        }
        // Field by field, so a failure says what differs.
        assert_eq!(stormy.columns, calm.columns, "seed {seed}: the tables' columns");
        assert_eq!(stormy.rows, calm.rows, "seed {seed}: the rows (every value in its column)");
        assert_eq!(stormy.incidents, calm.incidents, "seed {seed}: the incidents' changes and statuses");
        assert_eq!(stormy.applied, calm.applied, "seed {seed}: the plans and statements applied (each once)");
        assert_eq!(stormy.unloaded, calm.unloaded, "seed {seed}: the records still quarantined");
        assert_eq!(stormy.events, calm.events, "seed {seed}: the incidents with events on each audit topic");
        assert_eq!(stormy, calm, "seed {seed}: the end state differs from the undisturbed run");
    }
    Ok(())
}
