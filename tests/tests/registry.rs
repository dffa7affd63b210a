//! The schema registry driven over HTTP: by schema_registry_converter (a
//! third-party Rust client) and by raw requests checking Confluent's bodies,
//! statuses and error codes. Runs against the registry `make test` starts;
//! one test adds a second instance on the same log.

use std::sync::Arc;

use anyhow::Context;
use mend_tests::{eventually, registry_url, unique};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use serde_json::{Value, json};

fn record(name: &str, fields: &str) -> String {
    format!(r#"{{"type":"record","name":"{name}","namespace":"test","fields":[{fields}]}}"#)
}

/// A raw HTTP client for one registry.
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: reqwest::Client::new() }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some(body) = body {
            request = request.header("Content-Type", "application/vnd.schemaregistry.v1+json").body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = serde_json::from_str(&text).with_context(|| format!("{path} answered {status}: {text}"))?;
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// Registers and returns the id; fails on any error answer.
    async fn register(&self, subject: &str, schema: &str) -> anyhow::Result<u64> {
        let (status, body) = self.post(&format!("/subjects/{subject}/versions"), json!({"schema": schema})).await?;
        anyhow::ensure!(status == 200, "register {subject}: {status} {body}");
        body["id"].as_u64().context("id")
    }
}

fn error_code(body: &Value) -> i64 {
    body["error_code"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn converter_encodes_and_decodes_through_the_registry() -> anyhow::Result<()> {
    let settings = SrSettings::new(registry_url());
    let topic = unique("conv");
    let schema = record("Order", r#"{"name":"id","type":"long"},{"name":"email","type":"string"}"#);
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.clone(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, schema),
    );
    #[derive(serde::Serialize)]
    struct Order {
        id: i64,
        email: String,
    }
    let encoder = AvroEncoder::new(settings.clone());
    let bytes = encoder.encode_struct(Order { id: 7, email: "a@b.c".into() }, &strategy).await?;
    assert_eq!(bytes[0], 0, "magic byte");

    let decoded = AvroDecoder::new(settings).decode(Some(&bytes)).await?;
    let apache_avro::types::Value::Record(fields) = decoded.value else { anyhow::bail!("not a record") };
    assert_eq!(fields[0], ("id".to_owned(), apache_avro::types::Value::Long(7)));
    assert_eq!(fields[1], ("email".to_owned(), apache_avro::types::Value::String("a@b.c".into())));
    Ok(())
}

#[tokio::test]
async fn registration_is_idempotent_and_ids_are_global() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let (a, b) = (unique("idem-a"), unique("idem-b"));
    let schema = record("Idem", r#"{"name":"x","type":"int"}"#);
    let spaced = format!("  {}\n", schema.replace(',', " ,\n ").replace(':', " : "));

    let first = http.register(&a, &schema).await?;
    assert_eq!(http.register(&a, &spaced).await?, first, "whitespace does not make a new schema");
    let (_, versions) = http.get(&format!("/subjects/{a}/versions")).await?;
    assert_eq!(versions, json!([1]));

    assert_eq!(http.register(&b, &schema).await?, first, "the same schema has one id across subjects");
    let other = http
        .register(&b, &record("Idem", r#"{"name":"x","type":"int"},{"name":"y","type":"int","default":0}"#))
        .await?;
    assert_ne!(other, first);

    let (status, by_id) = http.get(&format!("/schemas/ids/{first}")).await?;
    assert_eq!(status, 200);
    let stored: Value = serde_json::from_str(by_id["schema"].as_str().context("schema")?)?;
    assert_eq!(stored, serde_json::from_str::<Value>(&schema)?);

    let (_, latest) = http.get(&format!("/subjects/{b}/versions/latest")).await?;
    assert_eq!((latest["version"].as_u64(), latest["id"].as_u64()), (Some(2), Some(other)));
    let (_, minus_one) = http.get(&format!("/subjects/{b}/versions/-1")).await?;
    assert_eq!(minus_one, latest);
    let (_, subjects) = http.get("/subjects").await?;
    assert!(subjects.as_array().context("array")?.iter().any(|s| s == &json!(a)));
    let (_, listed) = http.get(&format!("/schemas?subjectPrefix={b}")).await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "both versions of {b}: {listed}");
    let (_, latest_only) = http.get(&format!("/schemas?subjectPrefix={b}&latestOnly=true")).await?;
    assert_eq!(latest_only[0]["version"], json!(2));
    let (_, usages) = http.get(&format!("/schemas/ids/{first}/versions")).await?;
    let usages = usages.as_array().context("array")?;
    assert!(usages.contains(&json!({"subject": a, "version": 1})), "{usages:?}");
    assert!(usages.contains(&json!({"subject": b, "version": 1})), "{usages:?}");
    Ok(())
}

/// Apicurio Registry 2's serdes and Kafka Connect converters in their
/// Confluent mode (the peer `make peers` runs) read a schema by its id as a
/// content id: the schema itself, and no references.
#[tokio::test]
async fn apicurio_readers_find_a_schema_by_its_id() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let schema = record("Peer", r#"{"name":"x","type":"long"}"#);
    let id = http.register(&unique("apicurio"), &schema).await?;
    for kind in ["contentIds", "globalIds"] {
        let (status, found) = http.get(&format!("/apis/registry/v2/ids/{kind}/{id}")).await?;
        assert_eq!((status, &found), (200, &serde_json::from_str::<Value>(&schema)?));
        let (status, references) = http.get(&format!("/apis/registry/v2/ids/{kind}/{id}/references")).await?;
        assert_eq!((status, references), (200, json!([])));
    }
    let (status, missing) = http.get("/apis/registry/v2/ids/contentIds/999999999").await?;
    assert_eq!((status, error_code(&missing)), (404, 40403));
    Ok(())
}

#[tokio::test]
async fn lookup_finds_registered_schemas_only() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let subject = unique("lookup");
    let schema = record("Look", r#"{"name":"x","type":"string"}"#);
    let id = http.register(&subject, &schema).await?;

    let (status, found) = http.post(&format!("/subjects/{subject}"), json!({"schema": schema})).await?;
    assert_eq!(status, 200);
    assert_eq!((found["id"].as_u64(), found["version"].as_u64()), (Some(id), Some(1)));
    assert_eq!(found["subject"], json!(subject));

    let other = record("Look", r#"{"name":"y","type":"string"}"#);
    let (status, missing) = http.post(&format!("/subjects/{subject}"), json!({"schema": other})).await?;
    assert_eq!((status, error_code(&missing)), (404, 40403));
    let (status, no_subject) = http.post(&format!("/subjects/{}", unique("nobody")), json!({"schema": schema})).await?;
    assert_eq!((status, error_code(&no_subject)), (404, 40401));
    Ok(())
}

#[tokio::test]
async fn errors_carry_confluent_codes() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let subject = unique("errors");
    http.register(&subject, &record("E", r#"{"name":"x","type":"int"}"#)).await?;

    let cases: Vec<(reqwest::Method, String, Option<Value>, u16, i64)> = vec![
        (reqwest::Method::GET, format!("/subjects/{}/versions", unique("none")), None, 404, 40401),
        (reqwest::Method::GET, format!("/subjects/{subject}/versions/9"), None, 404, 40402),
        (reqwest::Method::GET, "/schemas/ids/999999999".into(), None, 404, 40403),
        (reqwest::Method::GET, format!("/config/{subject}"), None, 404, 40408),
        (reqwest::Method::GET, format!("/subjects/{subject}/versions/abc"), None, 422, 42202),
        (reqwest::Method::GET, format!("/subjects/{subject}/versions/0"), None, 422, 42202),
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}/versions"),
            Some(json!({"schema": "{\"type\":\"record\",\"name\":\"X\"}"})),
            422,
            42201,
        ),
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}/versions"),
            Some(json!({"schema": "not json"})),
            422,
            42201,
        ),
        (reqwest::Method::PUT, format!("/config/{subject}"), Some(json!({"compatibility": "SIDEWAYS"})), 422, 42203),
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}-defaults/versions"),
            Some(json!({"schema": record("D", r#"{"name":"a","type":["null","int"],"default":5}"#)})),
            422,
            42201,
        ),
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}/versions"),
            Some(json!({"schema": record("E", r#"{"name":"x","type":"string"}"#)})),
            409,
            409,
        ),
        // Invalid names: of a record, of a field, of a subject.
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}-names/versions"),
            Some(json!({"schema": record("1-bad", r#"{"name":"x","type":"int"}"#)})),
            422,
            42201,
        ),
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}-names/versions"),
            Some(json!({"schema": record("Good", r#"{"name":"no-dash","type":"int"}"#)})),
            422,
            42201,
        ),
        (reqwest::Method::POST, "/subjects/bad%01name/versions".into(), Some(json!({"schema": "\"int\""})), 422, 42208),
        (reqwest::Method::POST, "/subjects/%20%20/versions".into(), Some(json!({"schema": "\"int\""})), 422, 42208),
        (reqwest::Method::POST, "/subjects/__GLOBAL".into(), Some(json!({"schema": "\"int\""})), 422, 42208),
        (reqwest::Method::PUT, "/config/tab%09name".into(), Some(json!({"compatibility": "NONE"})), 422, 42208),
        // Malformed bodies.
        (reqwest::Method::POST, format!("/subjects/{subject}/versions"), Some(json!({"schema": 7})), 422, 42201),
        (reqwest::Method::POST, format!("/subjects/{subject}/versions"), Some(json!([1, 2])), 422, 42201),
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}/versions"),
            Some(
                json!({"schema": "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"nosuchtype\"}]}"}),
            ),
            422,
            42201,
        ),
        // A huge body: refused before it is read whole.
        (
            reqwest::Method::POST,
            format!("/subjects/{subject}/versions"),
            Some(
                json!({"schema": record("Huge", &format!(r#"{{"name":"x","type":"int","doc":"{}"}}"#, "x".repeat(4 << 20)))}),
            ),
            422,
            42209,
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got_status, got) = http.call(method.clone(), &path, body).await?;
        assert_eq!((got_status, error_code(&got)), (status, code), "{method} {path}: {got}");
        assert!(got["message"].is_string(), "{path}: message");
    }
    Ok(())
}

/// A client still sending a too-large body gets the 42209, not a reset: the
/// registry reads the rest and throws it away before it answers. (Answering
/// first and closing made the kernel reset the connection under the client's
/// write; CI saw reqwest fail with "error sending request".)
#[tokio::test]
async fn a_too_large_body_is_answered_once_it_is_sent_not_reset() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let address = registry_url();
    let address = address.trim_start_matches("http://").trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut reader, mut writer) = stream.into_split();
    // Larger than loopback's socket buffers, so the writes are still going
    // on when a server that answers early has already closed.
    let body = vec![b' '; 32 << 20];
    let head = format!(
        "POST /subjects/{}/versions HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        unique("huge"),
        body.len()
    );
    // The writing half stays open until the answer is read: dropping it
    // sends a FIN, and a server without HTTP/1 half-close drops the answer.
    let send = async {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body).await?;
        writer.flush().await
    };
    let mut response = Vec::new();
    let (sent, read) = tokio::join!(send, reader.read_to_end(&mut response));
    drop(writer);
    sent.context("sending the body")?;
    read.context("reading the answer")?;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 422"), "{response}");
    assert!(response.contains("42209"), "{response}");
    Ok(())
}

/// mend's codec learns a subject's live schemas from one listing (`GET
/// /schemas?subjectPrefix=`): a schema of the subject is found, one
/// registered since loads all the same, and neither a schema of a subject
/// that merely shares the prefix nor a deleted version counts.
#[tokio::test]
async fn the_codec_finds_a_subjects_live_schemas_by_listing_it() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let subject = unique("listed");
    let v1 = u32::try_from(http.register(&subject, &record("L", r#"{"name":"a","type":"int"}"#)).await?)?;
    let v2 = u32::try_from(http.register(&subject, &record("L", r#"{"name":"a","type":"long"}"#)).await?)?;
    let longer =
        u32::try_from(http.register(&format!("{subject}-other"), &record("O", r#"{"name":"o","type":"int"}"#)).await?)?;
    let codec = mend_avro::Codec::new(&registry_url())?;
    let found = codec.live_schema_of(&subject, v1).await?.context("v1 is the subject's")?;
    assert_eq!((found.id, found.parsed.name().map(|n| n.name())), (v1, Some("L")));
    assert!(codec.live_schema_of(&subject, v2).await?.is_some());
    assert!(codec.live_schema_of(&subject, longer).await?.is_none(), "only the prefix is shared");
    let v3 = u32::try_from(http.register(&subject, &record("L", r#"{"name":"a","type":"double"}"#)).await?)?;
    // Registered since the listing: within a second the listing still
    // answers, and the loader's check asks for the schema itself.
    assert!(codec.live_schema_of(&subject, v3).await?.is_none(), "listed less than a second ago");
    assert!(mend_avro::loader::origin(&codec, v3, &subject).await?.is_ok(), "registered after the first listing");
    let (status, _) = http.delete(&format!("/subjects/{subject}/versions/3")).await?;
    assert_eq!(status, 200);
    let fresh = mend_avro::Codec::new(&registry_url())?;
    assert!(fresh.live_schema_of(&subject, v3).await?.is_none(), "a deleted version");
    assert!(fresh.live_schema_of(&subject, v1).await?.is_some());
    Ok(())
}

/// Each level, one evolution it allows and one it refuses, checked through
/// both the compatibility endpoint and registration.
#[tokio::test]
async fn every_compatibility_level_accepts_and_refuses() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let base = record("C", r#"{"name":"a","type":"int"}"#);
    let add_optional = record("C", r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);
    let add_required = record("C", r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
    let widen = record("C", r#"{"name":"a","type":"long"}"#);
    let retype = record("C", r#"{"name":"a","type":"string"}"#);
    // (level, passes, fails)
    let cases = [
        ("BACKWARD", &widen, &add_required),
        ("FORWARD", &add_required, &widen),
        ("FULL", &add_optional, &widen),
        ("NONE", &retype, &retype),
    ];
    for (level, passes, fails) in cases {
        let subject = unique(&format!("compat-{}", level.to_lowercase()));
        let (status, set) = http.put(&format!("/config/{subject}"), json!({"compatibility": level})).await?;
        assert_eq!((status, set["compatibility"].as_str()), (200, Some(level)));
        http.register(&subject, &base).await?;
        let check = |schema: &str| {
            let body = json!({"schema": schema});
            let path = format!("/compatibility/subjects/{subject}/versions/latest?verbose=true");
            let http = &http;
            async move { http.post(&path, body).await }
        };
        let (_, ok) = check(passes).await?;
        assert_eq!(ok["is_compatible"], json!(true), "{level}: {ok}");
        if level != "NONE" {
            let (_, bad) = check(fails).await?;
            assert_eq!(bad["is_compatible"], json!(false), "{level}");
            assert!(!bad["messages"].as_array().context("messages")?.is_empty());
            let (status, refused) =
                http.post(&format!("/subjects/{subject}/versions"), json!({"schema": fails})).await?;
            assert_eq!((status, error_code(&refused)), (409, 409), "{level}");
        }
        http.register(&subject, passes).await?;
    }

    // Transitive levels check every earlier version, not just the latest:
    // each third schema is compatible with the second but not with the first.
    let a_string = record("C", r#"{"name":"a","type":"string"}"#);
    let empty = record("C", "");
    let a_int_default = record("C", r#"{"name":"a","type":"int","default":0}"#);
    for (level, first, second, third) in [
        ("BACKWARD_TRANSITIVE", &a_string, &empty, &a_int_default),
        ("FORWARD_TRANSITIVE", &base, &a_int_default, &empty),
        ("FULL_TRANSITIVE", &base, &a_int_default, &empty),
    ] {
        let subject = unique("compat-transitive");
        http.put(&format!("/config/{subject}"), json!({"compatibility": level})).await?;
        http.register(&subject, first).await?;
        http.register(&subject, second).await?;
        let (_, verdict) = http
            .post(&format!("/compatibility/subjects/{subject}/versions?verbose=true"), json!({"schema": third}))
            .await?;
        assert_eq!(verdict["is_compatible"], json!(false), "{level}: {verdict}");
        let (status, _) = http.post(&format!("/subjects/{subject}/versions"), json!({"schema": third})).await?;
        assert_eq!(status, 409, "{level}");
        // The same third schema would pass the non-transitive level.
        let plain = level.trim_end_matches("_TRANSITIVE");
        http.put(&format!("/config/{subject}"), json!({"compatibility": plain})).await?;
        let (status, body) = http.post(&format!("/subjects/{subject}/versions"), json!({"schema": third})).await?;
        assert_eq!(status, 200, "{plain}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn config_is_global_and_per_subject() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let (_, global) = http.get("/config").await?;
    assert!(global["compatibilityLevel"].is_string());
    let subject = unique("config");
    http.put(&format!("/config/{subject}"), json!({"compatibility": "forward_transitive"})).await?;
    let (_, got) = http.get(&format!("/config/{subject}")).await?;
    assert_eq!(got["compatibilityLevel"], json!("FORWARD_TRANSITIVE"));
    let (status, deleted) = http.delete(&format!("/config/{subject}")).await?;
    assert_eq!((status, deleted["compatibilityLevel"].as_str()), (200, Some("FORWARD_TRANSITIVE")));
    let (status, _) = http.get(&format!("/config/{subject}")).await?;
    assert_eq!(status, 404);
    let (status, fallback) = http.get(&format!("/config/{subject}?defaultToGlobal=true")).await?;
    assert_eq!((status, &fallback["compatibilityLevel"]), (200, &global["compatibilityLevel"]));
    Ok(())
}

#[tokio::test]
async fn soft_and_permanent_deletes() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let subject = unique("delete");
    let v1 = record("D", r#"{"name":"a","type":"int"}"#);
    let v2 = record("D", r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":1}"#);
    let id1 = http.register(&subject, &v1).await?;
    http.register(&subject, &v2).await?;

    // A version must be soft-deleted before it is deleted permanently.
    let (status, body) = http.delete(&format!("/subjects/{subject}/versions/1?permanent=true")).await?;
    assert_eq!((status, error_code(&body)), (404, 40407));
    let (status, body) = http.delete(&format!("/subjects/{subject}/versions/1")).await?;
    assert_eq!((status, body), (200, json!(1)));
    let (status, body) = http.delete(&format!("/subjects/{subject}/versions/1")).await?;
    assert_eq!(status, 404, "already soft-deleted: {body}");
    let (_, versions) = http.get(&format!("/subjects/{subject}/versions")).await?;
    assert_eq!(versions, json!([2]));
    let (_, all) = http.get(&format!("/subjects/{subject}/versions?deleted=true")).await?;
    assert_eq!(all, json!([1, 2]));
    let (status, _) = http.get(&format!("/subjects/{subject}/versions/1")).await?;
    assert_eq!(status, 404);
    let (status, _) = http.get(&format!("/subjects/{subject}/versions/1?deleted=true")).await?;
    assert_eq!(status, 200);
    let (status, _) = http.get(&format!("/schemas/ids/{id1}?deleted=true")).await?;
    assert_eq!(status, 200);
    let (status, body) = http.delete(&format!("/subjects/{subject}/versions/1?permanent=true")).await?;
    assert_eq!((status, body), (200, json!(1)));
    let (_, all) = http.get(&format!("/subjects/{subject}/versions?deleted=true")).await?;
    assert_eq!(all, json!([2]));

    // The subject: permanent needs soft first; soft twice is 40404.
    let (status, body) = http.delete(&format!("/subjects/{subject}?permanent=true")).await?;
    assert_eq!((status, error_code(&body)), (404, 40405));
    let (status, body) = http.delete(&format!("/subjects/{subject}")).await?;
    assert_eq!((status, body), (200, json!([2])));
    let (status, body) = http.delete(&format!("/subjects/{subject}")).await?;
    assert_eq!((status, error_code(&body)), (404, 40404));
    let (_, subjects) = http.get("/subjects").await?;
    assert!(!subjects.as_array().context("array")?.contains(&json!(subject)));
    let (_, with_deleted) = http.get("/subjects?deleted=true").await?;
    assert!(with_deleted.as_array().context("array")?.contains(&json!(subject)));
    let (status, body) = http.delete(&format!("/subjects/{subject}?permanent=true")).await?;
    assert_eq!((status, body), (200, json!([2])));
    let (status, body) = http.get(&format!("/subjects/{subject}/versions?deleted=true")).await?;
    assert_eq!((status, error_code(&body)), (404, 40401));

    // Re-registering after a soft delete starts a new version with the same id.
    let again = unique("delete-again");
    let id = http.register(&again, &v1).await?;
    http.delete(&format!("/subjects/{again}")).await?;
    assert_eq!(http.register(&again, &v1).await?, id);
    let (_, versions) = http.get(&format!("/subjects/{again}/versions")).await?;
    assert_eq!(versions, json!([2]));
    Ok(())
}

#[tokio::test]
async fn references_resolve_by_subject_and_version() -> anyhow::Result<()> {
    let http = Http::new(&registry_url());
    let address_subject = unique("address");
    let address = r#"{"type":"record","name":"Address","namespace":"shop","fields":[{"name":"city","type":"string"}]}"#;
    http.register(&address_subject, address).await?;
    // Named the way Java writers name a type of their own namespace.
    let customer =
        r#"{"type":"record","name":"Customer","namespace":"shop","fields":[{"name":"home","type":"Address"}]}"#;
    let subject = unique("customer");
    let references = json!([{"name": "shop.Address", "subject": address_subject, "version": 1}]);
    let (status, body) = http
        .post(&format!("/subjects/{subject}/versions"), json!({"schema": customer, "references": references}))
        .await?;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_u64().context("id")?;
    let (_, fetched) = http.get(&format!("/schemas/ids/{id}")).await?;
    assert_eq!(fetched["references"], references);
    let (_, referenced) = http.get(&format!("/subjects/{address_subject}/versions/1/referencedby")).await?;
    assert_eq!(referenced, json!([id]));
    // A referenced version cannot be deleted.
    let (status, body) = http.delete(&format!("/subjects/{address_subject}/versions/1")).await?;
    assert_eq!((status, error_code(&body)), (422, 42206));
    // Without the reference the schema does not parse.
    let (status, body) =
        http.post(&format!("/subjects/{}/versions", unique("noref")), json!({"schema": customer})).await?;
    assert_eq!((status, error_code(&body)), (422, 42201));

    // A third-party client resolves the reference (GET by subject and
    // version) to decode. (Its encoder cannot parse a supplied schema with
    // references, so the datum is written by hand: one string, "Lyon".)
    let id = u32::try_from(id)?;
    let bytes = [&[0u8][..], &id.to_be_bytes()[..], &[8], b"Lyon"].concat();
    let decoded = AvroDecoder::new(SrSettings::new(registry_url())).decode(Some(&bytes)).await?;
    assert!(format!("{:?}", decoded.value).contains("Lyon"));
    Ok(())
}

/// A second registry instance on the same log sees what the first wrote, and
/// concurrent registrations through both end in one agreed state.
#[tokio::test]
async fn two_instances_agree() -> anyhow::Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = mend_registry::RegistryConfig {
        brokers: mend_tests::brokers(),
        listen: "127.0.0.1:0".parse()?,
        topic: mend_model::topics::SCHEMAS.into(),
    };
    let second = mend_registry::Registry::open(&config, shutdown.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let second_url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(mend_registry::serve(Arc::clone(&second), listener, shutdown.clone()));

    let a = Http::new(&registry_url());
    let b = Http::new(&second_url);
    let subject = unique("agree");
    let id = a.register(&subject, &record("A", r#"{"name":"x","type":"int"}"#)).await?;
    let seen = eventually("the second instance to see the first's schema", || async {
        let (status, body) = b.get(&format!("/subjects/{subject}/versions/1")).await?;
        Ok((status == 200).then_some(body))
    })
    .await?;
    assert_eq!(seen["id"].as_u64(), Some(id));

    // Race: both instances register different (compatible) schemas at once.
    let racing = unique("race");
    a.put(&format!("/config/{racing}"), json!({"compatibility": "NONE"})).await?;
    let schemas: Vec<String> = (0..6).map(|i| record("R", &format!(r#"{{"name":"f{i}","type":"int"}}"#))).collect();
    let mut tasks = Vec::new();
    for (i, schema) in schemas.iter().enumerate() {
        let http = if i % 2 == 0 { Http::new(&registry_url()) } else { Http::new(&second_url) };
        let subject = racing.clone();
        let schema = schema.clone();
        tasks.push(tokio::spawn(async move { http.register(&subject, &schema).await }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await??);
    }
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "six different schemas, six ids: {ids:?}");

    // Both instances list the same six versions with the same ids.
    let listing = |http: Http| {
        let racing = racing.clone();
        async move {
            let mut out = Vec::new();
            for version in 1..=6 {
                let (status, body) = http.get(&format!("/subjects/{racing}/versions/{version}")).await?;
                anyhow::ensure!(status == 200, "version {version}: {body}");
                out.push((body["id"].as_u64(), body["schema"].clone()));
            }
            anyhow::Ok(out)
        }
    };
    let from_a = listing(Http::new(&registry_url())).await?;
    let from_b = eventually("the second instance to list all six versions", || {
        let (listing, url) = (listing, second_url.clone());
        async move { Ok(listing(Http::new(&url)).await.ok()) }
    })
    .await?;
    assert_eq!(from_a, from_b);

    shutdown.cancel();
    server.await??;
    Ok(())
}
