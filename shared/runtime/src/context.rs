//! What every service of a process shares: connection settings, the dataset
//! configuration, one producer, one codec (one schema cache), one record
//! loader per dataset contract (one plan per writer schema) and one pool per
//! warehouse. Built once in `main` and passed down; no globals.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::producer::FutureProducer;
use tokio::sync::Mutex;

use mend_avro::codec::{Codec, CodecError};
use mend_avro::loader::RecordLoaders;
use mend_config::{Dataset, FileConfig, Secret};
use mend_store::{StoreError, Warehouse};

use crate::handler::Handler;
use crate::runner::{Runner, RunnerConfig, RunnerError, RunnerStatus};
use crate::settings::Connections;

/// The default warehouse: an embedded SQLite file under `.mend/`.
pub const DEFAULT_WAREHOUSE: &str = "sqlite://.mend/warehouse.db";

/// Shared clients of one process.
pub struct Context {
    pub connections: Connections,
    pub config: FileConfig,
    /// Warehouse of datasets that do not name their own.
    pub warehouse_url: String,
    pub producer: FutureProducer,
    pub codec: Arc<Codec>,
    /// Per dataset, how records load under its contract in force.
    pub loaders: RecordLoaders,
    pub integrations: Integrations,
    warehouses: Mutex<HashMap<String, Warehouse>>,
}

/// Where mend notifies people (optional; nothing is sent without them).
#[derive(Debug, Clone, Default)]
pub struct Integrations {
    /// Slack incoming webhook for proposals awaiting approval.
    pub slack_webhook_url: Option<Secret>,
    /// GitHub API base (`https://api.github.com`) and token for pull requests.
    pub github_api_url: String,
    pub github_token: Option<Secret>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("connections", &self.connections).finish_non_exhaustive()
    }
}

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode it: {0}")]
    Encode(CodecError),
    #[error("not delivered: {0}")]
    Deliver(rdkafka::error::KafkaError),
}

/// Why a context could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Context {
    pub fn new(connections: Connections, config: FileConfig, warehouse_url: String) -> Result<Arc<Self>, ContextError> {
        Self::with(connections, config, warehouse_url, Integrations::default())
    }

    /// A context that also notifies through `integrations`.
    pub fn with(
        connections: Connections,
        config: FileConfig,
        warehouse_url: String,
        integrations: Integrations,
    ) -> Result<Arc<Self>, ContextError> {
        let producer = crate::kafka::producer(&connections.brokers)?;
        let codec = Codec::new(&connections.registry_url)?;
        Ok(Arc::new(Self {
            connections,
            config,
            warehouse_url,
            producer,
            codec,
            loaders: RecordLoaders::default(),
            integrations,
            warehouses: Mutex::default(),
        }))
    }

    /// Publishes one event outside a runner (an API's decision, a draft, a
    /// reported failure) and waits until the broker has it.
    pub async fn publish<E: mend_model::events::Event>(&self, event: &E) -> Result<(), PublishError> {
        let out = crate::handler::Outbound::event(&self.codec, event).await.map_err(PublishError::Encode)?;
        let headers = out.headers.iter().fold(rdkafka::message::OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(rdkafka::message::Header { key, value: Some(value) })
        });
        let record =
            rdkafka::producer::FutureRecord::to(&out.topic).key(&out.key).payload(&out.payload).headers(headers);
        self.producer
            .send(record, std::time::Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| PublishError::Deliver(error))
    }

    /// The warehouse URL of a dataset.
    pub fn warehouse_url_of(&self, dataset: &Dataset) -> String {
        dataset.warehouse.clone().unwrap_or_else(|| self.warehouse_url.clone())
    }

    /// A dataset's warehouse pool (connected once per URL).
    pub async fn warehouse(&self, dataset: &Dataset) -> Result<Warehouse, StoreError> {
        self.pool(self.warehouse_url_of(dataset)).await
    }

    /// The pool the applier uses for a dataset (its own role when configured).
    pub async fn applier_warehouse(&self, dataset: &Dataset) -> Result<Warehouse, StoreError> {
        match &dataset.applier_warehouse {
            Some(url) => self.pool(url.clone()).await,
            None => self.warehouse(dataset).await,
        }
    }

    async fn pool(&self, url: String) -> Result<Warehouse, StoreError> {
        let mut pools = self.warehouses.lock().await;
        if let Some(pool) = pools.get(&url) {
            return Ok(pool.clone());
        }
        let pool = Warehouse::connect(&url).await?;
        pools.insert(url, pool.clone());
        Ok(pool)
    }

    /// The dataset a source topic belongs to.
    pub fn dataset_of_topic(&self, topic: &str) -> Option<&Dataset> {
        self.config.datasets.iter().find(|d| d.topic == topic)
    }

    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        self.config.dataset(name)
    }

    /// The source topics of every dataset.
    pub fn dataset_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.config.datasets.iter().map(|d| d.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The consumer group of a stage (`<prefix>-<stage>`).
    pub fn group(&self, stage: &str) -> String {
        format!("{}-{stage}", self.connections.group_prefix)
    }

    /// Whether this deployment manages `dataset`. Audit topics are shared by
    /// every deployment on a cluster; events of other datasets are skipped.
    pub fn manages(&self, dataset: &str) -> bool {
        self.config.dataset(dataset).is_some()
    }

    /// A runner for `handler` in consumer group `group` on `topics`.
    pub fn runner<H: Handler>(
        &self,
        service: &str,
        group: &str,
        topics: Vec<String>,
        handler: H,
    ) -> Result<(Runner<H>, Arc<RunnerStatus>), RunnerError> {
        self.runner_with(RunnerConfig::new(service, &self.connections.brokers, group, topics), handler)
    }

    /// A runner for a stage whose only effects are its events: each batch's
    /// outputs and offsets are one Kafka transaction (exactly once).
    pub fn transactional_runner<H: Handler>(
        &self,
        service: &str,
        group: &str,
        topics: Vec<String>,
        handler: H,
    ) -> Result<(Runner<H>, Arc<RunnerStatus>), RunnerError> {
        let mut config = RunnerConfig::new(service, &self.connections.brokers, group, topics);
        config.exactly_once = true;
        self.runner_with(config, handler)
    }

    /// A runner for `handler` with its own [`RunnerConfig`].
    pub fn runner_with<H: Handler>(
        &self,
        config: RunnerConfig,
        handler: H,
    ) -> Result<(Runner<H>, Arc<RunnerStatus>), RunnerError> {
        let runner = Runner::new(config, self.producer.clone(), self.codec.clone(), handler)?;
        let status = runner.status();
        Ok((runner, status))
    }
}
