//! A stage as several processes in one consumer group: a loader grows
//! from one process to three while two datasets' six partitions each
//! stream in, and one is killed with SIGKILL mid-stream; the group moves
//! their partitions each time. The end state is compared, row by row, with
//! an undisturbed run of one process: every record loaded once (the
//! append-only table), each key's updates applied in order (the keyed one).

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

fn start(deployment: &Deployment, process: u32) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(deployment.dir.join(format!("loader-{process}.log")))?;
    Ok(deployment.command(&["run", "loader"])?.stdout(std::process::Stdio::null()).stderr(log).spawn()?)
}

/// How many partitions of its group the process's log last said it holds.
fn holds(deployment: &Deployment, process: u32) -> anyhow::Result<Option<usize>> {
    let log = std::fs::read_to_string(deployment.dir.join(format!("loader-{process}.log")))?;
    Ok(log.lines().rev().find_map(|line| line.split("holds=").nth(1)?.split_whitespace().next()?.parse().ok()))
}

/// Waits until the processes' logs say they hold `expected` partitions.
async fn wait_holding(deployment: &Deployment, expected: &[(u32, usize)]) -> anyhow::Result<()> {
    eventually(&format!("the loaders to hold {expected:?} partitions"), || async move {
        for &(process, count) in expected {
            if holds(deployment, process)? != Some(count) {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await
}

/// The rows of both tables: (id, version, seq), by id (keyed) and by seq
/// (append-only).
async fn rows(pool: &sqlx::PgPool, keyed: &str, append: &str) -> anyhow::Result<[Vec<(i64, i64, i64)>; 2]> {
    let read = |sql: String| async move {
        sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await
    };
    Ok([
        read(format!("SELECT id, version, seq FROM {keyed} ORDER BY id")).await?,
        read(format!("SELECT id, version, seq FROM {append} ORDER BY seq")).await?,
    ])
}

/// A deployment with the keyed dataset and an append-only one beside it,
/// both topics of six partitions, and their schema id.
async fn two_datasets() -> anyhow::Result<(Deployment, [String; 2], [String; 2], u32)> {
    let deployment = Deployment::new("postgres", "")?;
    let keyed = deployment.dataset.clone();
    let append = format!("{keyed}_log");
    let config = deployment.dir.join("mend.toml");
    let second = format!("\n[[dataset]]\nname = \"{append}\"\ntopic = \"{keyed}.log\"\ntable = \"{append}\"\n");
    std::fs::write(&config, std::fs::read_to_string(&config)? + &second)?;
    let topics = [deployment.topic(), format!("{keyed}.log")];
    for topic in &topics {
        create_topic(topic, PARTITIONS).await?;
    }
    let id = register_schema(&format!("{}-value", topics[0]), SCHEMA).await?;
    register_schema(&format!("{}-value", topics[1]), SCHEMA).await?;
    Ok((deployment, [keyed, append], topics, id))
}

const ROUNDS: i64 = 15;

/// One process from start to end: the run the disturbed one must equal.
async fn undisturbed() -> anyhow::Result<[Vec<(i64, i64, i64)>; 2]> {
    let (deployment, [keyed, append], topics, id) = two_datasets().await?;
    let (schema, producer) = (Schema::parse_str(SCHEMA)?, producer()?);
    let pool = sqlx::PgPool::connect(&deployment.warehouse).await?;
    let mut loader = start(&deployment, 1)?;
    send_round(&producer, &topics, (id, &schema), 0, ROUNDS).await?;
    loaded_up_to(&pool, &keyed, &append, ROUNDS).await?;
    loader.start_kill()?;
    rows(&pool, &keyed, &append).await
}

#[tokio::test]
async fn a_loader_grows_to_three_processes_loses_one_and_ends_as_one_alone() -> anyhow::Result<()> {
    let calm = undisturbed().await?;
    let (deployment, [keyed, append], topics, id) = two_datasets().await?;
    let (schema, producer) = (Schema::parse_str(SCHEMA)?, producer()?);
    let pool = sqlx::PgPool::connect(&deployment.warehouse).await?;

    // One process holds all twelve partitions.
    let mut loaders = vec![start(&deployment, 1)?];
    send_round(&producer, &topics, (id, &schema), 0, 2).await?;
    loaded_up_to(&pool, &keyed, &append, 2).await?;
    wait_holding(&deployment, &[(1, 12)]).await?;

    // It grows to three while records stream in: four partitions each.
    let streaming = {
        let (producer, topics, schema) = (producer.clone(), topics.clone(), schema.clone());
        tokio::spawn(async move { send_round(&producer, &topics, (id, &schema), 2, 6).await })
    };
    loaders.push(start(&deployment, 2)?);
    loaders.push(start(&deployment, 3)?);
    wait_holding(&deployment, &[(1, 4), (2, 4), (3, 4)]).await?;
    streaming.await??;

    // The second dies mid-stream; the others take its partitions.
    let streaming = {
        let (producer, topics, schema) = (producer.clone(), topics.clone(), schema.clone());
        tokio::spawn(async move { send_round(&producer, &topics, (id, &schema), 8, ROUNDS - 8).await })
    };
    eventually("the stream to be under way", || async {
        let count: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {append}"))).fetch_one(&pool).await?;
        Ok((count > 8 * KEYS).then_some(()))
    })
    .await?;
    loaders[1].start_kill()?;
    loaders[1].wait().await?;
    streaming.await??;
    loaded_up_to(&pool, &keyed, &append, ROUNDS).await?;
    wait_holding(&deployment, &[(1, 6), (3, 6)]).await?;
    for process in [0, 2] {
        assert!(loaders[process].try_wait()?.is_none(), "loader {} still runs", process + 1);
    }

    // Field by field, as the undisturbed run left it.
    let [keyed_rows, appended] = rows(&pool, &keyed, &append).await?;
    assert_eq!(appended.len(), calm[1].len(), "every record appended once");
    assert_eq!(appended, calm[1], "the append-only table equals the undisturbed run's");
    assert_eq!(keyed_rows, calm[0], "each key's last update won, as in the undisturbed run");
    for loader in &mut loaders {
        let _ = loader.start_kill();
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
