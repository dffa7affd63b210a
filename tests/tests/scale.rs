//! A stage as several processes on the local broker (assign mode,
//! `MEND_INSTANCE=k/3`): three loaders share two datasets' six partitions
//! each; one is killed with SIGKILL and the others finish its partitions;
//! it comes back and takes them again. Every record is loaded once (the
//! append-only table) and each key's updates land in order (the keyed one).

use apache_avro::Schema;
use apache_avro::types::Value;
use mend_tests::{Deployment, create_topic, eventually, producer, register_schema};
use rdkafka::producer::{FutureProducer, FutureRecord};

const PARTITIONS: i32 = 6;
const KEYS: i64 = 120;
const SCHEMA: &str = r#"{"type":"record","name":"Event","fields":[
    {"name":"id","type":"long"},{"name":"version","type":"long"},{"name":"seq","type":"long"}]}"#;

/// Sends `per_key` versions of every key (from `first`) to both topics; a
/// key's records go to partition `id mod 6`, in version order.
async fn send_round(
    producer: &FutureProducer,
    topics: &[String],
    schema: (u32, &Schema),
    first: i64,
    per_key: i64,
) -> anyhow::Result<()> {
    let mut sends = Vec::new();
    for version in first..first + per_key {
        for id in 0..KEYS {
            let seq = version * KEYS + id;
            let record = Value::Record(vec![
                ("id".into(), Value::Long(id)),
                ("version".into(), Value::Long(version)),
                ("seq".into(), Value::Long(seq)),
            ]);
            #[allow(deprecated)]
            let datum = apache_avro::to_avro_datum(schema.1, record)?;
            let payload = [&[0u8][..], &schema.0.to_be_bytes()[..], &datum].concat();
            for topic in topics {
                let partition = i32::try_from(id % i64::from(PARTITIONS))?;
                let key = id.to_string();
                let record = FutureRecord::to(topic).key(key.as_bytes()).payload(&payload).partition(partition);
                sends.push(producer.send_result(record).map_err(|(e, _)| e)?);
            }
        }
        // Versions of one key in order: each round is delivered before the next.
        for sent in sends.drain(..) {
            sent.await?.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// Waits until both tables hold everything sent up to `version` (exclusive).
async fn loaded_up_to(pool: &sqlx::PgPool, keyed: &str, append: &str, version: i64) -> anyhow::Result<()> {
    let expected = version * KEYS;
    eventually(&format!("every record up to version {version} loaded"), || async move {
        let appended: (i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*), count(DISTINCT seq) FROM {append}")))
                .fetch_one(pool)
                .await
                .unwrap_or((0, 0));
        let latest: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {keyed} WHERE version = {}",
            version - 1
        )))
        .fetch_one(pool)
        .await
        .unwrap_or(0);
        assert!(
            appended.0 <= expected,
            "{} rows appended for {expected} records sent: a record loaded twice",
            appended.0
        );
        assert_eq!(appended.0, appended.1, "a record loaded twice");
        Ok((appended.0 == expected && latest == KEYS).then_some(()))
    })
    .await
}

fn start(deployment: &Deployment, instance: u32, attempt: u32) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(deployment.dir.join(format!("loader-{instance}-{attempt}.log")))?;
    Ok(deployment
        .command(&["run", "loader"])?
        .env("MEND_INSTANCE", format!("{instance}/3"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// How many partitions the instance's log last said it holds.
fn holds(deployment: &Deployment, instance: u32, attempt: u32) -> anyhow::Result<Option<usize>> {
    let log = std::fs::read_to_string(deployment.dir.join(format!("loader-{instance}-{attempt}.log")))?;
    Ok(log.lines().rev().find_map(|line| line.split("holds=").nth(1)?.split_whitespace().next()?.parse().ok()))
}

async fn wait_holding(deployment: &Deployment, expected: [(u32, u32, usize); 2]) -> anyhow::Result<()> {
    eventually(&format!("the loaders to hold {expected:?}"), || async move {
        for (instance, attempt, count) in expected {
            if holds(deployment, instance, attempt)? != Some(count) {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

#[tokio::test]
async fn three_loaders_share_partitions_and_take_over_a_killed_one() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let keyed = deployment.dataset.clone();
    let append = format!("{keyed}_log");
    // A second dataset, append-only, beside the keyed one.
    let config = deployment.dir.join("mend.toml");
    let second = format!("\n[[dataset]]\nname = \"{append}\"\ntopic = \"{keyed}.log\"\ntable = \"{append}\"\n");
    std::fs::write(&config, std::fs::read_to_string(&config)? + &second)?;
    let topics = vec![deployment.topic(), format!("{keyed}.log")];
    for topic in &topics {
        create_topic(topic, PARTITIONS).await?;
    }
    let id = register_schema(&format!("{}-value", topics[0]), SCHEMA).await?;
    register_schema(&format!("{}-value", topics[1]), SCHEMA).await?;
    let schema = Schema::parse_str(SCHEMA)?;
    let producer = producer()?;
    let pool = sqlx::PgPool::connect(&deployment.warehouse).await?;

    let mut loaders = Vec::new();
    for instance in 1..=3 {
        loaders.push(start(&deployment, instance, 0)?);
    }
    // Twelve partitions, four each.
    send_round(&producer, &topics, (id, &schema), 0, 5).await?;
    loaded_up_to(&pool, &keyed, &append, 5).await?;
    for instance in 1..=3 {
        assert_eq!(holds(&deployment, instance, 0)?, Some(4), "instance {instance} holds its share");
    }

    // The second dies; the others finish its partitions.
    loaders[1].start_kill()?;
    loaders[1].wait().await?;
    send_round(&producer, &topics, (id, &schema), 5, 5).await?;
    loaded_up_to(&pool, &keyed, &append, 10).await?;
    wait_holding(&deployment, [(1, 0, 6), (3, 0, 6)]).await?;

    // It comes back and takes its partitions again.
    loaders[1] = start(&deployment, 2, 1)?;
    wait_holding(&deployment, [(1, 0, 4), (2, 1, 4)]).await?;
    send_round(&producer, &topics, (id, &schema), 10, 5).await?;
    loaded_up_to(&pool, &keyed, &append, 15).await?;
    assert_eq!(holds(&deployment, 3, 0)?, Some(4));
    for loader in &mut loaders {
        assert!(loader.try_wait()?.is_none(), "every loader still runs");
    }
    Ok(())
}

/// Datasets declared by a topic pattern: one per matching topic, its table
/// named after the topic; a topic created while `mend up` runs is picked up.
#[tokio::test]
async fn a_topic_pattern_loads_every_matching_topic_and_new_ones() -> anyhow::Result<()> {
    let deployment = Deployment::new("postgres", "")?;
    let prefix = deployment.dataset.clone();
    std::fs::write(
        deployment.dir.join("mend.toml"),
        format!("[[dataset]]\ntopic_pattern = \"{prefix}\\\\.(shop|crm)\\\\..*\"\nkey = [\"id\"]\n"),
    )?;
    let schema = Schema::parse_str(SCHEMA)?;
    let producer = producer()?;
    let pool = sqlx::PgPool::connect(&deployment.warehouse).await?;
    let first = format!("{prefix}.shop.orders");
    let unmatched = format!("{prefix}.other");
    let later = format!("{prefix}.crm.contacts");
    for topic in [&first, &unmatched] {
        create_topic(topic, PARTITIONS).await?;
    }
    let send = |topic: String| {
        let (producer, schema) = (&producer, &schema);
        async move {
            let schema_id = register_schema(&format!("{topic}-value"), SCHEMA).await?;
            send_round(producer, &[topic], (schema_id, schema), 0, 1).await
        }
    };
    let rows = |table: String| {
        let pool = pool.clone();
        async move {
            let count: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .ok();
            Ok::<_, anyhow::Error>(count)
        }
    };
    send(first.clone()).await?;
    send(unmatched.clone()).await?;
    let mut mend = deployment.up("up.log").await?;
    let table = |topic: &str| topic.replace('.', "_");
    eventually("the matching topic loaded", || async {
        Ok(rows(table(&first)).await?.filter(|n| *n == KEYS).map(|_| ()))
    })
    .await?;

    // A topic created while running, then its records.
    create_topic(&later, PARTITIONS).await?;
    send(later.clone()).await?;
    eventually("the new topic's dataset loaded", || async {
        Ok(rows(table(&later)).await?.filter(|n| *n == KEYS).map(|_| ()))
    })
    .await?;
    assert_eq!(rows(table(&unmatched)).await?, None, "a topic the pattern does not match is not loaded");
    assert!(mend.try_wait()?.is_none(), "mend up is still running");
    Ok(())
}
