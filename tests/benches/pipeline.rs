//! Pipeline figures (needs `make infra-up` for the registry and PostgreSQL).
//! Starts its own one-node Kafka (127.0.0.1:29192, `infra/kafka.sh`), so
//! nothing else loads the broker, and prints:
//! - that broker's raw produce and consume rates;
//! - loader rows/s into PostgreSQL, append-only and keyed, each beside COPY of
//!   the same rows (the practical limit), as a ratio;
//! - detector records/s beside a plain rdkafka consumer of the same topic;
//! - the sealer's cost: the append-only load with 1% of the records bad
//!   (each one a quarantine event on the audit log), with and without the
//!   sealer sealing those events in the same process (throughput and CPU
//!   time, both noisier than the cost), then the sealer alone sealing all
//!   those events: its CPU per event against the loader's per record;
//! - time from the first drifted record to the healed table (added field),
//!   measured on the durable broker (see below).
//!
//! Run: `make bench` (`BENCH_RECORDS` sets the record count, default 1,000,000;
//! `BENCH_ONLY=sealer` measures the sealer's cost alone; `BENCH_ONLY=loader`
//! the loads and COPY only, printing each load's window in seconds since
//! boot, for `perf record -a -k boottime` and `perf report --time`).

#[allow(dead_code)]
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apache_avro::Schema;
use mend_config::FileConfig;
use mend_model::topics;
use mend_runtime::Connections;
use mend_runtime::Context;
use mend_runtime::kafka;
use mend_tests::{registry_url, unique};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use common::{
    BROKER, V1, V2, audit_events, context, copy_baseline, dataset, load, load_with, postgres, produce, produce_with,
    register, sealer, wait_rows,
};

async fn raw_consume(topic: &str, count: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = kafka::reader_config(BROKER)
        .set("group.id", unique("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let start = Instant::now();
    for _ in 0..count {
        consumer.recv().await?;
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

/// Seconds since boot (`/proc/uptime`: CLOCK_BOOTTIME, the clock of
/// `perf record -k boottime`).
fn uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    text.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0)
}

/// Starts the process's peak-memory mark afresh (Linux: `clear_refs` 5).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset (`VmHWM`), MiB.
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The sealer's own CPU per event: new chains seal everything on the audit
/// topics (the loads' quarantine events), timed from when each is
/// consuming until all is sealed, less what this process spends idle over
/// as long (measured just before: its clients' polling); the least of
/// three. They seal at least every 100 ms, so that the last events, fewer
/// than a digest's worth, are not waited for two seconds. Returns the
/// events, the seconds per event and the events sealed per second.
async fn sealer_alone() -> anyhow::Result<(u64, f64, f64)> {
    let context = context(vec![], &unique("bench"))?;
    let (mut best, mut rate) = (f64::MAX, 0f64);
    let mut events = 0;
    for _ in 0..3 {
        // Idle, waking as often as the wait below does.
        let (idle_cpu, idle_wall) = (cpu_time::ProcessTime::now(), Instant::now());
        while idle_wall.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let idle = idle_cpu.elapsed().as_secs_f64() / idle_wall.elapsed().as_secs_f64();
        // Counted a second after the last load: the memory broker's high
        // watermark lags right after a burst.
        events = audit_events().await?;
        anyhow::ensure!(events >= 10_000, "only {events} audit events to seal");
        let sealer = sealer(&context, Duration::from_millis(100));
        let status = sealer.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sealer.run(shutdown.clone()));
        while !status.consuming.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (cpu, wall) = (cpu_time::ProcessTime::now(), Instant::now());
        while status.records.load(Ordering::Relaxed) < events {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (cpu, wall) = (cpu.elapsed().as_secs_f64(), wall.elapsed().as_secs_f64());
        best = best.min((cpu - idle * wall) / events as f64);
        rate = rate.max(events as f64 / wall);
        shutdown.cancel();
        task.await??;
    }
    Ok((events, best, rate))
}

/// The sealer's cost on the pipeline: 1% of the records bad, so the
/// loader writes an audit event (a quarantine) per hundred records and the
/// sealer seals them as they come (timed once it has caught up with earlier
/// runs' events); runs alternate, best of three each.
async fn sealer_cost(records: i64) -> anyhow::Result<()> {
    let mixed = unique("bench-mixed");
    kafka::ensure_topics(BROKER, &[kafka::TopicSpec::new(&mixed, 1), kafka::TopicSpec::new(topics::DIGESTS, 1)])
        .await?;
    let mixed_id = register(&format!("{mixed}-value"), V1).await?;
    produce_with(BROKER, &mixed, mixed_id, &Schema::parse_str(V1)?, 0, records, false, 100).await?;
    let good = records - (records + 99) / 100;
    // Throughput on two cores shared with the broker varies by more than
    // the sealer costs, so its cost is also read as this process's CPU
    // time (every thread, CLOCK_PROCESS_CPUTIME_ID): what the sealer adds
    // to loading the same records (the broker's work serving its fetches
    // is not in it).
    let (mut without, mut with) = (0f64, 0f64);
    let (mut cpu_without, mut cpu_with) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let plain = dataset(&unique("bench_mixed").replace('-', "_"), &mixed, &[]);
        let loaded = load_with(plain, records, good, false).await?;
        (without, cpu_without) = (without.max(loaded.rate), cpu_without.min(loaded.cpu));
        let sealed = dataset(&unique("bench_mixed").replace('-', "_"), &mixed, &[]);
        let loaded = load_with(sealed, records, good, true).await?;
        (with, cpu_with) = (with.max(loaded.rate), cpu_with.min(loaded.cpu));
    }
    let (events, per_event, rate) = sealer_alone().await?;
    println!("sealer's cost: {records} records, 1% bad (an audit event per hundred records)");
    println!(
        "  loader alone                {without:>10.0} rec/s   CPU {:.3} s (best and least of three)",
        cpu_without.as_secs_f64()
    );
    println!(
        "  loader beside the sealer    {with:>10.0} rec/s   CPU {:.3} s (these two differ from run to run by more than the sealer costs)",
        cpu_with.as_secs_f64()
    );
    // The measurement: the sealer alone, per event, beside the loader's
    // CPU per record, at one event per hundred records.
    let loader_per_record = cpu_without.as_secs_f64() / records as f64;
    println!(
        "  sealer alone ({events} events) {:.2} µs CPU per event: {:.2}% of the loader's CPU per record (goal < 1%); {rate:.0} events/s",
        per_event * 1e6,
        per_event * (records - good) as f64 / records as f64 / loader_per_record * 100.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let records: i64 = std::env::var("BENCH_RECORDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1_000_000);
    let count = usize::try_from(records)?;
    let _telemetry = mend_runtime::telemetry::init("bench");
    let broker = mend_tests::infra::Cluster::start(29192, 1).await.context("starting the bench's own Kafka")?;
    println!("pipeline bench: {records} records, Apache Kafka at {BROKER}, PostgreSQL warehouse");
    let mut specs = kafka::audit_topics(1);
    specs.push(kafka::TopicSpec::new(topics::SCHEMAS, 1));
    kafka::ensure_topics(BROKER, &specs).await?;
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "sealer") {
        return sealer_cost(records).await;
    }

    let topic = unique("bench-orders");
    kafka::ensure_topics(BROKER, &[kafka::TopicSpec::new(&topic, 1)]).await?;
    let subject = format!("{topic}-value");
    let v1_id = register(&subject, V1).await?;
    let v1 = Schema::parse_str(V1)?;

    let start = Instant::now();
    produce(BROKER, &topic, v1_id, &v1, 0, records, false).await?;
    println!("broker raw produce            {:>10.0} rec/s", records as f64 / start.elapsed().as_secs_f64());
    let raw = raw_consume(&topic, count).await?;
    println!("broker raw consume (rdkafka)  {raw:>10.0} rec/s");

    let append = dataset(&unique("bench_append").replace('-', "_"), &topic, &[]);
    reset_peak_memory();
    let window = uptime();
    let loaded = load(append.clone(), records).await?;
    let window = format!("{window:.3},{:.3}", uptime());
    let peak = peak_memory_mib();
    let copy = copy_baseline(records, false).await?;
    println!(
        "loader append-only            {:>10.0} rows/s   COPY {copy:>10.0} rows/s   ratio {:.2}   (after the first batch {:.0} rows/s)",
        loaded.rate,
        loaded.rate / copy,
        loaded.steady
    );
    if let Some(peak) = peak {
        println!("loader append-only peak RSS    {peak:>10} MiB (the whole bench process, earlier phases included)");
    }
    let keyed = dataset(&unique("bench_keyed").replace('-', "_"), &topic, &["id"]);
    let keyed_window = uptime();
    let loaded = load(keyed, records).await?;
    let keyed_window = format!("{keyed_window:.3},{:.3}", uptime());
    let copy = copy_baseline(records, true).await?;
    println!(
        "loader keyed (staged upsert)  {:>10.0} rows/s   COPY+upsert {copy:>10.0} rows/s   ratio {:.2}   (after the first batch {:.0} rows/s)",
        loaded.rate,
        loaded.rate / copy,
        loaded.steady
    );

    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "loader") {
        println!("windows (seconds since boot): append-only {window}, keyed {keyed_window}");
        return Ok(());
    }
    sealer_cost(records).await?;

    // Detector over the same topic: the append dataset has a contract now.
    let context = context(vec![append.clone()], &unique("bench"))?;
    let (runner, status) = mend_detector::runner(&context).await?;
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    while status.records.load(Ordering::Relaxed) < records as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detected = records as f64 / start.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await??;
    println!(
        "detector                      {detected:>10.0} rec/s   raw consumer {raw:>10.0} rec/s   ratio {:.2}",
        detected / raw
    );

    // Drift to healed: the whole loop in this process, an added nullable
    // field, on the infrastructure's broker.
    let durable = mend_tests::brokers();
    let topic = unique("bench-heal");
    let mut specs = kafka::audit_topics(3);
    specs.push(kafka::TopicSpec::new(&topic, 1));
    kafka::ensure_topics(&durable, &specs).await?;
    let subject = format!("{topic}-value");
    let heal = dataset(&unique("bench_heal").replace('-', "_"), &topic, &[]);
    let connections = Connections { group_prefix: unique("bench"), ..Connections::new(&durable, &registry_url()) };
    let context =
        Context::new(connections, FileConfig { datasets: vec![heal.clone()], ..FileConfig::default() }, postgres())?;
    context.codec.register_event_schemas().await?;
    let baseline = 1000;
    produce(&durable, &topic, register(&subject, V1).await?, &v1, 0, baseline, false).await?;
    let mut tasks = Vec::new();
    let shutdown = CancellationToken::new();
    macro_rules! start {
        ($runner:expr) => {{
            let (runner, _) = $runner;
            tasks.push(tokio::spawn(runner.run(shutdown.clone())));
        }};
    }
    start!(mend_loader::runner(&context)?);
    start!(mend_detector::runner(&context).await?);
    start!(mend_diagnoser::runner(&context)?);
    start!(mend_proposer::runner(&context)?);
    start!(mend_applier::runner(&context)?);
    let warehouse = context.warehouse(&heal).await?;
    wait_rows(&warehouse, &heal.table, baseline).await?;
    let v2_id = register(&subject, V2).await?;
    let drifted = 1000;
    let start = Instant::now();
    produce(&durable, &topic, v2_id, &Schema::parse_str(V2)?, baseline, drifted, true).await?;
    tokio::select! {
        waited = tokio::time::timeout(Duration::from_secs(120), wait_rows(&warehouse, &heal.table, baseline + drifted)) => {
            waited.context("the added field did not heal within 120 s")??;
        }
        (finished, _, _) = futures::future::select_all(tasks.iter_mut()) => {
            anyhow::bail!("a service stopped: {:?}", finished?);
        }
    }
    println!(
        "added field (durable broker): first drifted record -> healed table, {drifted} records replayed or loaded: {:.2}s",
        start.elapsed().as_secs_f64()
    );
    shutdown.cancel();
    for task in tasks {
        task.await??;
    }
    drop(broker);
    Ok(())
}
