//! The shared runner against the real broker: offsets move only after
//! outputs are delivered (a consumer killed mid-batch skips nothing), bad
//! input is quarantined with its bytes and reason, and retryable failures are
//! retried without loss or duplicate outputs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mend_avro::codec::{Codec, CodecError};
use mend_model::events::Quarantined;
use mend_model::topics;
use mend_runtime::handler::{Disposition, Handler, Inbound, Outbound, QuarantineReason};
use mend_runtime::runner::{Runner, RunnerConfig};
use mend_runtime::{HandleError, kafka};
use mend_tests::{brokers, committed_offset, consume_keyed, create_topic, eventually, produce, registry_url, unique};
use rdkafka::message::{Header, Headers as _, Message};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Emits one output per input: the input's offset, keyed like the input.
struct Echo {
    output: String,
    /// When set, the batch containing this offset never completes (a crash
    /// in the middle of handling it).
    hang_at: Option<i64>,
    reached: Arc<Notify>,
    failures_left: AtomicUsize,
}

impl Echo {
    fn new(output: &str) -> Self {
        Self {
            output: output.into(),
            hang_at: None,
            reached: Arc::new(Notify::new()),
            failures_left: AtomicUsize::new(0),
        }
    }
}

impl Handler for Echo {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        if let Some(hang) = self.hang_at
            && batch.iter().any(|r| r.offset >= hang)
        {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(HandleError::Retry("database unavailable (simulated)".into()));
        }
        Ok(batch
            .iter()
            .map(|record| {
                Disposition::Emit(vec![Outbound {
                    topic: self.output.clone(),
                    key: record.key.clone().unwrap_or_default(),
                    payload: record.offset.to_string().into_bytes(),
                    headers: vec![],
                }])
            })
            .collect())
    }
}

fn config(group: &str, input: &str) -> RunnerConfig {
    let mut config = RunnerConfig::new("test", &brokers(), group, vec![input.to_owned()]);
    config.max_batch = 10;
    config
}

async fn setup(records: usize) -> anyhow::Result<(String, String, String)> {
    let (input, output, key) = (unique("runner-in"), unique("runner-out"), unique("k"));
    create_topic(&input, 1).await?;
    create_topic(&output, 1).await?;
    let producer = mend_tests::producer()?;
    for i in 0..records {
        produce(&producer, &input, key.as_bytes(), format!("record {i}").as_bytes()).await?;
    }
    Ok((input, output, key))
}

fn offsets_in(messages: &[rdkafka::message::OwnedMessage]) -> BTreeSet<i64> {
    messages
        .iter()
        .filter_map(|m| m.payload().and_then(|p| std::str::from_utf8(p).ok()).and_then(|s| s.parse().ok()))
        .collect()
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_skips_nothing() -> anyhow::Result<()> {
    let (input, output, key) = setup(50).await?;
    let group = unique("runner-group");
    let codec = Codec::new(&registry_url())?;

    // First consumer: handles batches until the one holding offset 25, then
    // hangs in the middle of it and is killed.
    let mut hanging = Echo::new(&output);
    hanging.hang_at = Some(25);
    let reached = hanging.reached.clone();
    let runner =
        Runner::new(config(&group, &input), mend_runtime::kafka::producer(&brokers())?, codec.clone(), hanging)?;
    let task = tokio::spawn(runner.run(CancellationToken::new()));
    reached.notified().await;
    task.abort();
    let _ = task.await;

    let committed = committed_offset(&group, &input)?.unwrap_or(0);
    assert!(committed <= 25, "nothing past the hanging batch may be committed (committed {committed})");

    // Second consumer in the same group resumes from the committed offset.
    let runner =
        Runner::new(config(&group, &input), mend_runtime::kafka::producer(&brokers())?, codec, Echo::new(&output))?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let outputs =
        mend_tests::consume_until(&output, |m| m.key() == Some(key.as_bytes()), |seen| offsets_in(seen).len() >= 50)
            .await?;
    assert_eq!(offsets_in(&outputs), (0..50).collect::<BTreeSet<i64>>(), "every input has its output");

    shutdown.cancel();
    task.await??;
    assert_eq!(committed_offset(&group, &input)?, Some(50), "a clean stop commits everything handled");
    Ok(())
}

#[tokio::test]
async fn retryable_failures_are_retried_without_loss() -> anyhow::Result<()> {
    let (input, output, key) = setup(15).await?;
    let group = unique("runner-retry");
    let echo = Echo::new(&output);
    echo.failures_left.store(3, Ordering::SeqCst);
    let runner = Runner::new(
        config(&group, &input),
        mend_runtime::kafka::producer(&brokers())?,
        Codec::new(&registry_url())?,
        echo,
    )?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let outputs = consume_keyed(&output, &key, 15).await?;
    assert_eq!(offsets_in(&outputs), (0..15).collect::<BTreeSet<i64>>());
    eventually("offset 15 to be committed", || async {
        Ok((committed_offset(&group, &input)? == Some(15)).then_some(()))
    })
    .await?;
    shutdown.cancel();
    task.await??;
    Ok(())
}

/// Decodes each record through the registry; what does not decode is bad
/// input and goes to quarantine.
struct Decoder {
    codec: Arc<Codec>,
    dataset: String,
    output: String,
}

impl Handler for Decoder {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out = Vec::new();
        for record in batch {
            let payload = record.payload.as_deref().unwrap_or_default();
            out.push(match self.codec.decode(payload).await {
                Ok(value) => Disposition::Emit(vec![Outbound {
                    topic: self.output.clone(),
                    key: self.dataset.clone().into_bytes(),
                    payload: format!("{value:?}").into_bytes(),
                    headers: vec![],
                }]),
                Err(CodecError::Invalid(reason)) => Disposition::Quarantine(QuarantineReason {
                    dataset: Some(self.dataset.clone()),
                    kind: mend_model::QuarantineKind::Undecodable,
                    reason,
                }),
                Err(unavailable) => return Err(HandleError::retry("decoding", unavailable)),
            });
        }
        Ok(out)
    }
}

#[tokio::test]
async fn undecodable_records_are_quarantined_not_dropped() -> anyhow::Result<()> {
    kafka::ensure_topics(&brokers(), &kafka::audit_topics(1)).await?;
    let (input, output, dataset) = (unique("decode-in"), unique("decode-out"), unique("ds"));
    create_topic(&input, 1).await?;
    create_topic(&output, 1).await?;

    // Two good records between three bad ones: no magic byte, an unknown
    // schema id, and bytes that do not match their schema.
    let schema = r#"{"type":"record","name":"Good","fields":[{"name":"n","type":"long"}]}"#;
    let subject = format!("{input}-value");
    let http = reqwest::Client::new();
    let registered: serde_json::Value = http
        .post(format!("{}/subjects/{subject}/versions", registry_url()))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({"schema": schema}).to_string())
        .send()
        .await?
        .json()
        .await?;
    let id = u32::try_from(registered["id"].as_u64().ok_or_else(|| anyhow::anyhow!("{registered}"))?)?;
    let wire = |datum: &[u8]| [&[0u8][..], &id.to_be_bytes()[..], datum].concat();
    let records: Vec<(Vec<u8>, bool)> = vec![
        (b"{\"n\": 1}".to_vec(), false),
        (wire(&[2]), true), // n = 1 (zig-zag)
        ([&[0u8, 0x7f, 0xff, 0xff, 0xf0][..], &[2]].concat(), false),
        (wire(&[4]), true),
        (wire(&[]), false), // truncated datum
    ];
    let producer = mend_tests::producer()?;
    // The first carries headers of its own, two of them posing as mend's.
    let upstream = rdkafka::message::OwnedHeaders::new()
        .insert(Header { key: "mend-incident", value: Some("forged") })
        .insert(Header { key: "traceparent", value: Some("00-forged") })
        .insert(Header { key: "x-upstream", value: Some("kept") });
    let first = rdkafka::producer::FutureRecord::to(&input).key("k").payload(&records[0].0).headers(upstream);
    producer.send(first, std::time::Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    for (payload, _) in &records[1..] {
        produce(&producer, &input, b"k", payload).await?;
    }

    let codec = Codec::new(&registry_url())?;
    let handler = Decoder { codec: codec.clone(), dataset: dataset.clone(), output: output.clone() };
    let runner = Runner::new(
        config(&unique("decode-group"), &input),
        mend_runtime::kafka::producer(&brokers())?,
        codec.clone(),
        handler,
    )?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));

    let quarantined = consume_keyed(topics::QUARANTINE, &dataset, 3).await?;
    let good = consume_keyed(&output, &dataset, 2).await?;
    assert_eq!(good.len(), 2);
    let mut events = Vec::new();
    for message in &quarantined {
        let event: Quarantined = codec.decode_event(message.payload().unwrap_or_default()).await?;
        // The record's own headers go along; none passes for mend's.
        let headers: Vec<(&str, &[u8])> = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect())
            .unwrap_or_default();
        let named = |name: &str| headers.iter().filter(|(key, _)| *key == name).map(|(_, v)| *v).collect::<Vec<_>>();
        assert_eq!(named("mend-incident"), [event.envelope.incident_id.0.as_bytes()], "{headers:?}");
        assert_eq!(named("traceparent").len(), 1, "{headers:?}");
        assert!(!named("traceparent")[0].ends_with(b"forged"), "{headers:?}");
        if event.offset == 0 {
            assert_eq!(named("x-upstream"), [b"kept"], "{headers:?}");
        }
        events.push(event);
    }
    events.sort_by_key(|e| e.offset);
    let bad: Vec<(i64, &Vec<u8>)> =
        records.iter().enumerate().filter(|(_, (_, ok))| !ok).map(|(i, (p, _))| (i as i64, p)).collect();
    assert_eq!(events.len(), bad.len());
    for (event, (offset, payload)) in events.iter().zip(bad) {
        assert_eq!(event.offset, offset);
        assert_eq!(event.topic, input);
        assert_eq!(event.value.as_ref(), Some(payload), "original bytes kept");
        assert_eq!(event.reason_kind.as_str(), "undecodable");
        assert!(!event.reason.is_empty());
        assert_eq!(event.envelope.dataset, dataset);
    }
    shutdown.cancel();
    task.await??;
    Ok(())
}

/// Records the size of every batch it is handed: (records, bytes).
struct Sizes(Arc<std::sync::Mutex<Vec<(usize, usize)>>>);

impl Handler for Sizes {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let bytes = batch.iter().map(|r| r.key.as_ref().map_or(0, Vec::len) + r.payload.as_ref().map_or(0, Vec::len));
        let size = (batch.len(), bytes.sum());
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(size);
        Ok(batch.iter().map(|_| Disposition::Emit(Vec::new())).collect())
    }
}

#[tokio::test]
async fn batches_end_at_their_byte_limit() -> anyhow::Result<()> {
    let input = unique("runner-bytes");
    create_topic(&input, 1).await?;
    let producer = mend_tests::producer()?;
    for _ in 0..40 {
        produce(&producer, &input, &[b'k'; 10], &[b'v'; 120]).await?; // 130 bytes each
    }
    // Every record is on the broker before the runner starts, so only the
    // byte limit can end a batch early.
    let mut config = config(&unique("runner-group"), &input);
    config.max_batch = 1000;
    config.max_batch_bytes = 1000;
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let runner = Runner::new(
        config,
        mend_runtime::kafka::producer(&brokers())?,
        Codec::new(&registry_url())?,
        Sizes(sizes.clone()),
    )?;
    let status = runner.status();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    eventually("every record handled", || {
        let handled = status.records.load(Ordering::Relaxed);
        async move { Ok((handled >= 40).then_some(())) }
    })
    .await?;
    shutdown.cancel();
    task.await??;
    let sizes = sizes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(sizes.iter().map(|(records, _)| records).sum::<usize>(), 40, "{sizes:?}");
    assert!(sizes.iter().all(|(_, bytes)| *bytes <= 1000), "no batch beyond its byte limit: {sizes:?}");
    assert!(sizes.len() >= 6, "40 records of 130 bytes take at least six batches of 1000 bytes: {sizes:?}");
    Ok(())
}

/// Emits one output per input, each larger than the broker (and the
/// producer) accepts.
/// Larger than the producer takes.
const REFUSED: usize = mend_runtime::kafka::MAX_EVENT_BYTES + (1 << 20);

struct Oversized {
    output: String,
}

impl Handler for Oversized {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        Ok(batch
            .iter()
            .map(|_| {
                Disposition::Emit(vec![Outbound {
                    topic: self.output.clone(),
                    key: b"k".to_vec(),
                    payload: vec![b'x'; REFUSED],
                    headers: vec![],
                }])
            })
            .collect())
    }
}

/// A record the broker refuses for good (too large) stops the stage with
/// that reason instead of being resent forever, and its batch's offsets are
/// not committed: after the fix, the batch is handled again.
#[tokio::test]
async fn a_permanently_refused_output_stops_the_runner_without_committing() -> anyhow::Result<()> {
    let (input, output, _) = setup(3).await?;
    let group = unique("runner-refused");
    let runner = Runner::new(
        config(&group, &input),
        mend_runtime::kafka::producer(&brokers())?,
        Codec::new(&registry_url())?,
        Oversized { output },
    )?;
    let stopped = tokio::time::timeout(mend_tests::WAIT, runner.run(CancellationToken::new()))
        .await
        .map_err(|_| anyhow::anyhow!("the runner kept resending a record the broker refuses"))?;
    let error = stopped.err().ok_or_else(|| anyhow::anyhow!("the runner should stop with an error"))?;
    assert!(error.to_string().contains(&format!("delivering {REFUSED} bytes")), "{error}");
    assert_eq!(committed_offset(&group, &input)?, None, "nothing of the refused batch is committed");
    Ok(())
}
