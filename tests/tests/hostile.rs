//! Hostile input at the edge, through the broker: one `mend up` on a keyed
//! PostgreSQL dataset is sent every kind of bad record a producer can write,
//! between two good ones. Each bad record is quarantined with its own reason
//! kind, the good ones load, no incident is opened (none of these is schema
//! drift) and `mend up` keeps running.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use apache_avro::Schema;
use apache_avro::types::Value;
use mend_avro::codec::Codec;
use mend_model::events::{Event, Quarantined};
use mend_tests::{Deployment, brokers, create_topic, eventually, produce, register_schema, registry_url};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;

const FIELDS: &str = r#"{"name":"id","type":["null","long"]},{"name":"email","type":"string"}"#;

fn schema(name: &str, extra: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","fields":[{FIELDS}{extra}]}}"#)
}

fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    [&[0u8][..], &id.to_be_bytes()[..], datum].concat()
}

fn datum(schema: &Schema, id: Option<i64>, email: &str) -> anyhow::Result<Vec<u8>> {
    let id = match id {
        Some(id) => Value::Union(1, Box::new(Value::Long(id))),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    #[allow(deprecated)]
    Ok(apache_avro::to_avro_datum(
        schema,
        Value::Record(vec![("id".into(), id), ("email".into(), Value::String(email.into()))]),
    )?)
}

#[tokio::test]
async fn every_hostile_record_is_quarantined_with_its_reason() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let topic = deployment.topic();
    let subject = format!("{topic}-value");
    create_topic(&topic, 1).await?;
    let text = schema("Order", "");
    let id = register_schema(&subject, &text).await?;
    let parsed = Schema::parse_str(&text)?;
    let mut mend = deployment.up("up.log").await?;

    // A producer that sends what any client may: up to 16 MiB.
    let producer: rdkafka::producer::FutureProducer =
        mend_runtime::kafka::producer_config(&brokers()).set("message.max.bytes", (16 << 20).to_string()).create()?;
    let good = |n: i64| datum(&parsed, Some(n), &format!("{n}@example.com"));
    produce(&producer, &topic, b"1", &framed(id, &good(1)?)).await?;

    // Another subject's schema, and a version of ours deleted since.
    let foreign = register_schema(&format!("{}-other-value", deployment.dataset), &schema("Payment", "")).await?;
    let deleted_text = schema("Order", r#",{"name":"note","type":["null","string"],"default":null}"#);
    let deleted = register_schema(&subject, &deleted_text).await?;
    let http = reqwest::Client::new();
    let versions: Vec<u32> =
        http.get(format!("{}/subjects/{subject}/versions", registry_url())).send().await?.json().await?;
    let status = http
        .delete(format!("{}/subjects/{subject}/versions/{}", registry_url(), versions.last().context("a version")?))
        .send()
        .await?
        .status();
    anyhow::ensure!(status.is_success(), "deleting the version: {status}");
    let deleted_datum = {
        let schema = Schema::parse_str(&deleted_text)?;
        #[allow(deprecated)]
        apache_avro::to_avro_datum(
            &schema,
            Value::Record(vec![
                ("id".into(), Value::Union(1, Box::new(Value::Long(7)))),
                ("email".into(), Value::String("d@example.com".into())),
                ("note".into(), Value::Union(0, Box::new(Value::Null))),
            ]),
        )?
    };

    let whole = good(3)?;
    let mut invalid_utf8 = datum(&parsed, Some(4), "ab")?;
    let at = invalid_utf8.len() - 2;
    invalid_utf8[at..].copy_from_slice(&[0xff, 0xfe]);
    // Over mend's limit (not decoded, kept in its source topic); and over
    // Kafka's 1 MiB default fetch size (Kafka returns it all the same).
    let large = datum(&parsed, Some(5), &"x".repeat(3 << 20))?;
    let huge = datum(&parsed, Some(6), &"x".repeat(10 << 20))?;
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("not_wire_format", Some([&[1u8][..], &framed(id, &whole)[1..]].concat())),
        ("not_wire_format", Some(vec![0, 0, 1])),
        ("unknown_schema", Some(framed(0x7fff_fff0, &whole))),
        ("foreign_schema", Some(framed(foreign, &whole))),
        ("truncated", Some(framed(id, &whole[..whole.len() - 3]))),
        ("trailing_bytes", Some(framed(id, &[&whole[..], &[2, 4]].concat()))),
        ("too_large", Some(framed(id, &large))),
        ("too_large", Some(framed(id, &huge))),
        ("invalid_utf8", Some(framed(id, &invalid_utf8))),
        ("missing_key", Some(framed(id, &datum(&parsed, None, "nokey@example.com")?))),
        ("deleted_schema", Some(framed(deleted, &deleted_datum))),
        ("null_value", None),
    ];
    let mut expected = BTreeMap::new();
    for (kind, payload) in &cases {
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).key(b"k");
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        let delivery = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
        expected.insert(delivery.offset, *kind);
    }
    produce(&producer, &topic, b"2", &framed(id, &good(2)?)).await?;

    // Every bad record has its quarantine event, with its own reason kind.
    let codec = Codec::new(&registry_url())?;
    let events = eventually("a quarantine event per hostile record", || {
        let (codec, dataset, expected) = (&codec, &deployment.dataset, &expected);
        async move {
            let mut found = BTreeMap::new();
            for message in mend_runtime::kafka::read_to_end(&brokers(), Quarantined::TOPIC).await? {
                if message.key() == Some(dataset.as_bytes()) {
                    let event: Quarantined = codec.decode_event(message.payload().unwrap_or_default()).await?;
                    found.insert(event.offset, event);
                }
            }
            Ok((found.len() >= expected.len()).then_some(found))
        }
    })
    .await?;
    let kinds: BTreeMap<i64, &str> = events.iter().map(|(offset, e)| (*offset, e.reason_kind.as_str())).collect();
    assert_eq!(kinds, expected, "reason kinds by offset: {events:#?}");
    for event in events.values() {
        assert!(!event.reason.is_empty(), "{event:?}");
        match event.reason_kind.as_str() {
            // Too large to copy: the event names where it is.
            "too_large" => assert!(event.value.is_none() && event.reason.contains("source topic"), "{event:?}"),
            "null_value" => assert!(event.value.is_none()),
            _ => assert!(event.value.is_some(), "{event:?}"),
        }
    }

    // The good records loaded, the bad ones did not.
    let pool = sqlx::PgPool::connect(&deployment.warehouse).await?;
    let table = &deployment.dataset;
    let ids = eventually("both good records in the table", || {
        let pool = pool.clone();
        async move {
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {table} ORDER BY id")))
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
            Ok((ids.len() >= 2).then_some(ids))
        }
    })
    .await?;
    assert_eq!(ids, vec![1, 2]);

    // None of this is drift: once the detector has read every record, no
    // incident is open for the dataset, and `mend up` is still running.
    let metrics = format!("http://{}/metrics", deployment.api);
    let lag = format!(r#"mend_consumer_lag{{stage="detector",topic="{topic}"}} 0"#);
    eventually("the detector to read every record", || {
        let (metrics, lag) = (metrics.clone(), lag.clone());
        async move { Ok(reqwest::get(&metrics).await?.text().await?.lines().any(|l| l == lag).then_some(())) }
    })
    .await?;
    let incidents: Vec<mend_model::api::Incident> =
        reqwest::get(format!("http://{}/incidents", deployment.api)).await?.json().await?;
    let ours: Vec<_> = incidents.iter().filter(|i| i.dataset == deployment.dataset).collect();
    assert!(ours.is_empty(), "{ours:#?}");
    assert!(mend.try_wait()?.is_none(), "mend up is still running");
    Ok(())
}
