//! Foundation figures (needs `make infra-up`): schema registry register and
//! lookup requests per second, and wire-format decode throughput with a warm
//! schema cache against plain apache-avro decoding of the same bytes.
//!
//! Run: `make bench` (or `cargo bench -p mend-tests --bench foundation`).

use std::time::Instant;

use apache_avro::Schema;
use apache_avro::types::Value;
use mend_avro::codec::Codec;
use mend_tests::{registry_url, unique};

const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"bench","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"},
  {"name":"status","type":"string"},{"name":"created_at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

fn field_schema(i: usize) -> String {
    format!(r#"{{"type":"record","name":"B{i}","fields":[{{"name":"f{i}","type":"long"}}]}}"#)
}

async fn post(client: &reqwest::Client, path: &str, schema: &str) -> anyhow::Result<serde_json::Value> {
    let response = client
        .post(format!("{}{path}", registry_url()))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "schema": schema }).to_string())
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "{path}: {}", response.status());
    Ok(response.json().await?)
}

/// Runs `total` requests over `clients` concurrent clients; returns requests/s.
async fn rate<F, Fut>(total: usize, clients: usize, request: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < total {
                request(i).await?;
                i += clients;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    println!("schema registry at {}", registry_url());

    for clients in [1, 8] {
        let subject = unique("bench-register");
        let c = client.clone();
        let s = subject.clone();
        let registered = rate(200, clients, move |i| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                // A new subject per request: every call writes to the log.
                post(&c, &format!("/subjects/{s}-{i}/versions"), &field_schema(i)).await?;
                Ok(())
            }
        })
        .await?;
        println!("register (new schema, written to _schemas): {registered:>8.0} req/s with {clients} client(s)");
    }

    let subject = unique("bench-lookup");
    let id = post(&client, &format!("/subjects/{subject}/versions"), SCHEMA).await?["id"].as_u64().unwrap_or(0);
    for clients in [1, 8] {
        let (c, s) = (client.clone(), subject.clone());
        let again = rate(2000, clients, move |_| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                post(&c, &format!("/subjects/{s}/versions"), SCHEMA).await?;
                Ok(())
            }
        })
        .await?;
        let (c, s) = (client.clone(), subject.clone());
        let lookup = rate(2000, clients, move |_| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                post(&c, &format!("/subjects/{s}"), SCHEMA).await?;
                Ok(())
            }
        })
        .await?;
        let c = client.clone();
        let by_id = rate(2000, clients, move |_| {
            let c = c.clone();
            async move {
                let response = c.get(format!("{}/schemas/ids/{id}", registry_url())).send().await?;
                anyhow::ensure!(response.status().is_success());
                Ok(())
            }
        })
        .await?;
        println!(
            "with {clients} client(s): re-register (already known) {again:>8.0} req/s, lookup {lookup:>8.0} req/s, GET /schemas/ids {by_id:>8.0} req/s"
        );
    }

    // Wire-format decode with a warm cache vs plain apache-avro.
    let schema = Schema::parse_str(SCHEMA)?;
    let records = 200_000;
    let mut payloads = Vec::with_capacity(records);
    let id32 = u32::try_from(id)?;
    for i in 0..records {
        let value = Value::Record(vec![
            ("id".into(), Value::Long(i as i64)),
            ("email".into(), Value::String(format!("user{i}@example.com"))),
            ("amount".into(), Value::Double(i as f64 * 1.25)),
            ("status".into(), Value::String("paid".into())),
            ("created_at".into(), Value::TimestampMillis(1_700_000_000_000 + i as i64)),
        ]);
        #[allow(deprecated)]
        let datum = apache_avro::to_avro_datum(&schema, value)?;
        payloads.push([&[0u8][..], &id32.to_be_bytes()[..], &datum].concat());
    }
    let codec = Codec::new(&registry_url())?;
    codec.decode(&payloads[0]).await?; // warm the cache

    let start = Instant::now();
    let mut checksum = 0usize;
    for payload in &payloads {
        if let Value::Record(fields) = codec.decode(payload).await? {
            checksum += fields.len();
        }
    }
    let codec_rate = records as f64 / start.elapsed().as_secs_f64();

    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&schema).build()?;
    let start = Instant::now();
    for payload in &payloads {
        if let Value::Record(fields) = reader.read_value(&mut &payload[5..])? {
            checksum += fields.len();
        }
    }
    let plain_rate = records as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(checksum == records * 10, "decoded the wrong number of fields");
    println!("decode {records} records: codec (warm cache) {codec_rate:>10.0} rec/s");
    println!("                         plain apache-avro {plain_rate:>10.0} rec/s");
    println!("                         ratio codec/plain {:>10.2}", codec_rate / plain_rate);
    Ok(())
}
