//! The loader alone, in process, on batches of several chunks: every good
//! record lands once with its values, every bad one is quarantined with its
//! bytes, and a full re-delivery (a new consumer group reading from offset 0)
//! changes nothing but quarantines the bad records again. On PostgreSQL
//! (append-only: COPY into the table; keyed: COPY into a stage, then upsert)
//! and SQLite. Also: replays write each quarantined record once. Needs the
//! broker, the registry and PostgreSQL (`make test`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use apache_avro::Schema;
use apache_avro::types::Value;
use mend_config::{Dataset, FileConfig};
use mend_runtime::Connections;
use mend_runtime::Context;
use mend_runtime::kafka;
use mend_tests::{brokers, create_topic, eventually, postgres_url, producer, register_schema, registry_url, unique};
use tokio_util::sync::CancellationToken;

const SCHEMA: &str = r#"{"type":"record","name":"Order","namespace":"loadertest","fields":[
  {"name":"id","type":"long"},{"name":"email","type":"string"},{"name":"amount","type":"double"}]}"#;

/// More than several loader chunks (`mend_loader::CHUNK`), in one batch.
const RECORDS: i64 = 7_321;
/// Every this many records, one that is not Avro.
const BAD_EVERY: i64 = 997;
/// Keyed datasets: ids repeat with this period, so later records replace
/// earlier ones within a batch and across chunks.
const KEYS: i64 = 3_000;

fn context(dataset: &Dataset, warehouse: &str) -> anyhow::Result<Arc<Context>> {
    let connections =
        Connections { group_prefix: unique("loadertest"), ..Connections::new(&brokers(), &registry_url()) };
    let config = FileConfig { datasets: vec![dataset.clone()], ..FileConfig::default() };
    Ok(Context::new(connections, config, warehouse.to_owned())?)
}

/// Runs the loader (a new consumer group) until it has handled every record.
async fn load(dataset: &Dataset, warehouse: &str) -> anyhow::Result<()> {
    let context = context(dataset, warehouse)?;
    let (runner, status) = mend_loader::runner(&context)?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let records = u64::try_from(RECORDS)?;
    eventually("the loader to handle every record", || {
        let handled = status.records.load(Ordering::Relaxed);
        async move { Ok((handled >= records).then_some(())) }
    })
    .await?;
    shutdown.cancel();
    task.await??;
    Ok(())
}

fn is_bad(offset: i64) -> bool {
    offset % BAD_EVERY == BAD_EVERY - 1
}

fn id_of(offset: i64, keyed: bool) -> i64 {
    if keyed { offset % KEYS } else { offset }
}

async fn story(warehouse: &str, keyed: bool) -> anyhow::Result<()> {
    // Quarantined records go to mend.quarantine (`mend up` creates it).
    kafka::ensure_topics(&brokers(), &kafka::audit_topics(1)).await?;
    let name = unique("loadertest").replace('-', "_");
    let topic = format!("{name}.orders");
    create_topic(&topic, 1).await?;
    let id = register_schema(&format!("{topic}-value"), SCHEMA).await?;
    let schema = Schema::parse_str(SCHEMA)?;
    let producer = producer()?;
    let mut deliveries = Vec::new();
    for offset in 0..RECORDS {
        let payload = if is_bad(offset) {
            format!("not avro {offset}").into_bytes()
        } else {
            let record = Value::Record(vec![
                ("id".into(), Value::Long(id_of(offset, keyed))),
                ("email".into(), Value::String(format!("user{offset}@example.com"))),
                ("amount".into(), Value::Double(offset as f64 / 4.0)),
            ]);
            #[allow(deprecated)]
            let datum = apache_avro::to_avro_datum(&schema, record)?;
            [&[0u8][..], &id.to_be_bytes()[..], &datum].concat()
        };
        let key = offset.to_string();
        let record = rdkafka::producer::FutureRecord::to(&topic).key(&key).payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in deliveries {
        let delivered = delivery.await?.map_err(|(e, _)| e)?;
        anyhow::ensure!(delivered.partition == 0 && delivered.offset < RECORDS, "unexpected position {delivered:?}");
    }
    let dataset = Dataset {
        name: name.clone(),
        topic: topic.clone(),
        table: name.clone(),
        key: if keyed { vec!["id".into()] } else { Vec::new() },
        ..Dataset::default()
    };

    // The expected table: per id, the last good record written for it.
    let mut expected = std::collections::BTreeMap::new();
    for offset in (0..RECORDS).filter(|o| !is_bad(*o)) {
        expected.insert(id_of(offset, keyed), offset);
    }
    let bad: HashSet<i64> = (0..RECORDS).filter(|o| is_bad(*o)).collect();

    for delivery in ["first delivery", "full re-delivery"] {
        load(&dataset, warehouse).await?;
        let store = context(&dataset, warehouse)?.warehouse(&dataset).await?;
        let rows = store.rows_as_text(&name, &["id", "email", "amount", "_mend_offset"]).await?;
        assert_eq!(rows.len(), expected.len(), "{delivery}: one row per id");
        for row in &rows {
            let [Some(id), Some(email), Some(amount), Some(offset)] = &row[..] else {
                anyhow::bail!("{delivery}: a NULL in {row:?}");
            };
            let (id, offset): (i64, i64) = (id.parse()?, offset.parse()?);
            assert_eq!(expected.get(&id), Some(&offset), "{delivery}: id {id} holds the last record written for it");
            assert_eq!(email, &format!("user{offset}@example.com"), "{delivery}: email of offset {offset}");
            assert_eq!(amount.parse::<f64>()?, offset as f64 / 4.0, "{delivery}: amount of offset {offset}");
        }
        let quarantined = store.quarantined(&name, &topic, 0, RECORDS).await?;
        assert_eq!(quarantined, bad, "{delivery}: the records that are not Avro, and only those, are quarantined");
        let next = store.offsets(&name).await?.get(&(topic.clone(), 0)).copied();
        assert_eq!(next, Some(RECORDS), "{delivery}: the next offset is stored with the rows");
    }
    Ok(())
}

#[tokio::test]
async fn postgres_append_only_batches_of_several_chunks() -> anyhow::Result<()> {
    story(&postgres_url(), false).await
}

#[tokio::test]
async fn postgres_keyed_batches_of_several_chunks() -> anyhow::Result<()> {
    story(&postgres_url(), true).await
}

#[tokio::test]
async fn sqlite_batches_of_several_chunks() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("loadertest"));
    std::fs::create_dir_all(&dir)?;
    story(&format!("sqlite://{}/warehouse.db", dir.display()), true).await
}

/// Replays write each quarantined record once, whoever replays it and how
/// often: the claim in `mend_quarantined` is made in the transaction that
/// writes the row (append-only tables have no index on the position to
/// fall back on). A record a replay loaded is no longer judged again by a
/// re-delivered loader batch.
async fn replays_claim(warehouse: &str) -> anyhow::Result<()> {
    use mend_model::{Column, Contract, Position, Row, SqlValue};
    use mend_store::{Advance, Bookkeeping, Chunk, LoadTarget, QuarantinedRecord, Warehouse};
    let store = Warehouse::connect(warehouse).await?;
    let name = unique("claimtest").replace('-', "_");
    let column = Column { name: "id".into(), sql_type: "BIGINT".into(), nullable: false };
    let mapping = [("id".to_owned(), "id".to_owned())].into();
    let contract = Contract { dataset: name.clone(), schema_id: 1, mapping };
    store.establish(&name, &name, &[], &[column], &contract).await?;
    let target = LoadTarget {
        dataset: name.clone(),
        topic: format!("{name}.orders"),
        table: name.clone(),
        key: Vec::new(),
        columns: vec!["id".into()],
    };
    // The loader quarantined offsets 0..10 of partition 0.
    let position = |offset| Position { partition: 0, offset };
    let bookkeeping = Bookkeeping {
        quarantined: (0..10)
            .map(|offset| QuarantinedRecord { position: position(offset), writer: Some(2), payload: Some(vec![0]) })
            .collect(),
        reloaded: Vec::new(),
        next_offsets: vec![Advance { partition: 0, from: None, to: 10 }],
    };
    let (done, bookkept) = tokio::sync::oneshot::channel();
    done.send(bookkeeping).map_err(|_| anyhow::anyhow!("bookkeeping not sent"))?;
    store.load_batch(&target, futures::stream::iter(Vec::<Chunk>::new()), bookkept).await?;
    assert_eq!(store.quarantined(&name, &target.topic, 0, 10).await?.len(), 10);

    let rows: Vec<Row> =
        (0..10).map(|offset| Row { position: position(offset), values: vec![SqlValue::Int(offset)] }).collect();
    assert_eq!(store.replay_rows(&target, &rows[..6]).await?, 6, "the first replay claims what it loads");
    assert_eq!(store.replay_rows(&target, &rows).await?, 4, "a second replay only what is left");
    assert_eq!(store.replay_rows(&target, &rows).await?, 0, "a third replay nothing");
    assert_eq!(store.count(&name).await?, 10, "one row per quarantined record");
    let ids = store.rows_as_text(&name, &["id", "_mend_offset"]).await?;
    assert!(ids.iter().all(|row| row[0] == row[1]), "each row at its own position: {ids:?}");
    assert!(store.quarantined(&name, &target.topic, 0, 10).await?.is_empty(), "nothing left to judge again");
    Ok(())
}

#[tokio::test]
async fn postgres_replays_claim_each_record_once() -> anyhow::Result<()> {
    replays_claim(&postgres_url()).await
}

#[tokio::test]
async fn sqlite_replays_claim_each_record_once() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("claimtest"));
    std::fs::create_dir_all(&dir)?;
    replays_claim(&format!("sqlite://{}/warehouse.db", dir.display())).await
}

/// A PostgreSQL role that may only read and write mend's tables (created
/// before by another role) connects: nothing it does at start-up needs the
/// right to create or alter.
#[tokio::test]
async fn postgres_role_with_only_table_rights_connects() -> anyhow::Result<()> {
    use mend_store::Warehouse;
    Warehouse::connect(&postgres_url()).await?; // mend's tables exist
    let admin = sqlx::PgPool::connect(&postgres_url()).await?;
    let role = unique("dml").replace('-', "_");
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON mend_offsets, mend_quarantined, mend_contracts, mend_applied TO {role}"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&admin).await?;
    }
    let mut url = reqwest::Url::parse(&postgres_url())?;
    url.set_username(&role).map_err(|()| anyhow::anyhow!("cannot set the user of {url}"))?;
    let used = async {
        let store = Warehouse::connect(url.as_str()).await?;
        let offsets = store.offsets("nothing").await?;
        store.close().await;
        anyhow::Ok(offsets)
    }
    .await;
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&admin).await?;
    }
    assert!(used?.is_empty());
    Ok(())
}

/// Two processes briefly reading one partition (a loader taking over from
/// one that was only paused) cannot both load its records: a batch's
/// offsets are stored only if still the ones it was judged against, or
/// the whole batch, rows and all, is refused as a conflict (and retried).
async fn a_batch_judged_against_moved_offsets_is_refused(warehouse: &str) -> anyhow::Result<()> {
    use mend_model::{Column, Contract, Position, Row, SqlValue};
    use mend_store::{Advance, Bookkeeping, Chunk, LoadTarget, StoreError, Warehouse};
    let store = Warehouse::connect(warehouse).await?;
    let name = unique("fencetest").replace('-', "_");
    let column = Column { name: "id".into(), sql_type: "BIGINT".into(), nullable: false };
    let mapping = [("id".to_owned(), "id".to_owned())].into();
    let contract = Contract { dataset: name.clone(), schema_id: 1, mapping };
    store.establish(&name, &name, &[], &[column], &contract).await?;
    let target = LoadTarget {
        dataset: name.clone(),
        topic: format!("{name}.orders"),
        table: name.clone(),
        key: Vec::new(),
        columns: vec!["id".into()],
    };
    let load = |from: Option<i64>, offsets: std::ops::Range<i64>| {
        let rows: Vec<Row> = offsets
            .clone()
            .map(|offset| Row { position: Position { partition: 0, offset }, values: vec![SqlValue::Int(offset)] })
            .collect();
        let bookkeeping = Bookkeeping {
            next_offsets: vec![Advance { partition: 0, from, to: offsets.end }],
            ..Bookkeeping::default()
        };
        let (store, target) = (&store, &target);
        async move {
            let (done, bookkept) = tokio::sync::oneshot::channel();
            done.send(bookkeeping).map_err(|_| anyhow::anyhow!("bookkeeping not sent"))?;
            Ok::<_, anyhow::Error>(store.load_batch(target, futures::stream::iter([Chunk::Rows(rows)]), bookkept).await)
        }
    };
    load(None, 0..5).await??;
    // Both judged against nothing stored, or against 5: the second is refused.
    assert!(matches!(load(None, 0..5).await?, Err(StoreError::Conflict(_))));
    load(Some(5), 5..8).await??;
    assert!(matches!(load(Some(5), 5..9).await?, Err(StoreError::Conflict(_))));
    assert_eq!(store.count(&name).await?, 8, "each record once");
    assert_eq!(store.offsets(&name).await?.into_values().collect::<Vec<_>>(), vec![8]);
    Ok(())
}

#[tokio::test]
async fn postgres_refuses_a_batch_judged_against_moved_offsets() -> anyhow::Result<()> {
    a_batch_judged_against_moved_offsets_is_refused(&postgres_url()).await
}

#[tokio::test]
async fn sqlite_refuses_a_batch_judged_against_moved_offsets() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("fencetest"));
    std::fs::create_dir_all(&dir)?;
    a_batch_judged_against_moved_offsets_is_refused(&format!("sqlite://{}/warehouse.db", dir.display())).await
}
