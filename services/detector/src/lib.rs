//! detector — notices drift from the first record.
//!
//! - input topics: every dataset's source topic (its own consumer group);
//! - output topic: `mend.detections`;
//! - key: the dataset name;
//! - delivery: at least once; one incident per (dataset, writer schema), not
//!   one per record: the incident id is derived from the pair, incidents
//!   already on `mend.detections` are read back at start, and later ones are
//!   remembered in memory.
//!
//! Cost per record: reading the 5-byte wire-format header and a map lookup.
//! Only a writer schema not seen before costs more (one registry lookup, a
//! structural diff against the contract), once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mend_avro::codec::{CodecError, schema_id};
use mend_avro::drift::classify;
use mend_config::Dataset;
use mend_model::events::{Detection, Envelope, Event, IncidentId};
use mend_model::{DetectionSource, QuarantineKind, topics};
use mend_runtime::handler::{Disposition, Handler, Inbound, Outbound};
use mend_runtime::runner::{Runner, RunnerStatus};
use mend_runtime::{Context, HandleError, kafka};

const SERVICE: &str = "detector";

/// How long the detector waits for the loader to establish a new dataset's
/// first contract before it lets records without one go unchecked.
pub const BASELINE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Per dataset: the contract's schema id, and for each writer schema seen,
/// whether it fits the contract (or was already reported).
#[derive(Default)]
struct Known {
    contract: Option<u32>,
    fits: HashMap<u32, bool>,
    /// Writer schemas reported, each with the source position of the record
    /// that reported it. That record met again is a redelivery: its batch's
    /// transaction, detection included, did not commit (a later record of
    /// the batch failed, or the commit did), so it reports again.
    reported: HashMap<u32, (i32, i64)>,
    /// When the detector first met a record of the dataset without a
    /// contract to judge it against.
    waiting_since: Option<std::time::Instant>,
}

impl Known {
    /// Whether `writer` was reported by a record other than the one at `at`
    /// (the same record again is a redelivery of a batch that did not
    /// commit, and reports again).
    fn reported_elsewhere(&self, writer: u32, at: (i32, i64)) -> bool {
        self.reported.get(&writer).is_some_and(|by| *by != at)
    }
}

/// The detector's handler.
pub struct Detector {
    context: Arc<Context>,
    known: Mutex<HashMap<String, Known>>,
}

impl Detector {
    /// A detector that already knows the incidents on `mend.detections`.
    pub async fn new(context: Arc<Context>) -> anyhow::Result<Self> {
        let mut known: HashMap<String, Known> = HashMap::new();
        for message in kafka::read_to_end(&context.connections.brokers, topics::DETECTIONS).await? {
            use rdkafka::message::Message;
            let Some(payload) = message.payload() else { continue };
            match context.codec.decode_event::<Detection>(payload).await {
                // A revert's writer is the schema it restores, not a record's.
                Ok(detection) if detection.source == DetectionSource::Revert => {}
                Ok(detection) => {
                    if let Some(id) = detection.writer_schema_id.and_then(|id| u32::try_from(id).ok()) {
                        let at = (detection.partition, detection.offset);
                        known.entry(detection.envelope.dataset).or_default().reported.insert(id, at);
                    }
                }
                Err(error) => tracing::warn!(%error, "skipping an unreadable detection"),
            }
        }
        Ok(Self { context, known: Mutex::new(known) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `writer` needs a detection now at `at` (the fast path is a
    /// map lookup).
    fn needs_look(&self, dataset: &str, writer: u32, at: (i32, i64)) -> bool {
        let known = self.lock();
        match known.get(dataset) {
            Some(k) => {
                !(k.contract == Some(writer) || k.reported_elsewhere(writer, at) || k.fits.get(&writer) == Some(&true))
            }
            None => true,
        }
    }

    /// Looks at a writer schema not seen before; returns a detection when it
    /// does not fit the contract.
    async fn look(&self, dataset: &Dataset, record: &Inbound, writer: u32) -> Result<Option<Detection>, HandleError> {
        let at = (record.partition, record.offset);
        let warehouse = self.context.warehouse(dataset).await?;
        let Some(contract) = warehouse.contract(&dataset.name).await? else {
            // No baseline yet: the loader establishes it from the dataset's
            // first records. A drifted record in that same first batch must
            // wait for it, or its drift is never seen (no later record of
            // its writer may come): the batch is tried again, for a while.
            let mut known = self.lock();
            let since = *known
                .entry(dataset.name.clone())
                .or_default()
                .waiting_since
                .get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < BASELINE_WAIT {
                return Err(HandleError::retry(
                    "waiting for the loader to establish the dataset's first contract",
                    format!("dataset {} has no contract yet", dataset.name),
                ));
            }
            tracing::warn!(dataset = %dataset.name, writer, waited = ?BASELINE_WAIT, "no contract yet: this record is not checked for drift");
            return Ok(None);
        };
        {
            let mut known = self.lock();
            let state = known.entry(dataset.name.clone()).or_default();
            state.waiting_since = None;
            if state.contract != Some(contract.schema_id) {
                state.contract = Some(contract.schema_id);
                state.fits.clear();
            }
            if contract.schema_id == writer || state.reported_elsewhere(writer, at) {
                return Ok(None);
            }
        }
        let contract_id = contract.schema_id;
        let loader = self.context.loaders.get(&self.context.codec, dataset, contract).await?;
        // Drift is a schema of the dataset's subject the contract does not
        // fit. Records of an unknown, deleted or foreign schema are bad
        // input: quarantined with their reason, and no incident (no change
        // of the table could load them).
        let fits = match loader.fit(&self.context.codec, writer).await? {
            Ok(_) => true,
            Err(rejection) if rejection.kind == QuarantineKind::SchemaMismatch => false,
            Err(rejection) => {
                tracing::warn!(dataset = %dataset.name, writer, kind = %rejection.kind, reason = %rejection.reason, "records of this writer schema are quarantined; not a drift");
                true
            }
        };
        let changes = match self.context.codec.schema(writer).await {
            _ if fits => Vec::new(),
            Ok(schema) => classify(loader.schema(), &schema.parsed),
            // Gone between the two calls: the detection has no changes.
            Err(CodecError::Invalid(_)) => Vec::new(),
            Err(unavailable) => return Err(HandleError::retry("fetching a writer schema", unavailable)),
        };
        let mut known = self.lock();
        let state = known.entry(dataset.name.clone()).or_default();
        state.fits.insert(writer, fits);
        if fits || state.reported_elsewhere(writer, at) {
            return Ok(None);
        }
        state.reported.insert(writer, at);
        drop(known);
        let mut detection = Detection {
            envelope: Envelope::new(SERVICE, &dataset.name, IncidentId::for_drift(&dataset.name, writer)),
            source: DetectionSource::SchemaId,
            topic: record.topic.to_string(),
            partition: record.partition,
            offset: record.offset,
            subject: dataset.subject(),
            writer_schema_id: i32::try_from(writer).ok(),
            contract_schema_id: i32::try_from(contract_id).ok(),
            changes,
            evidence: Default::default(),
        };
        detection.seal();
        tracing::info!(
            dataset = %dataset.name, writer, contract = contract_id, incident = %detection.envelope.incident_id,
            changes = detection.changes.len(), "drift detected"
        );
        Ok(Some(detection))
    }
}

impl Handler for Detector {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out = Vec::with_capacity(batch.len());
        for record in batch {
            let mut outputs = Vec::new();
            let dataset = self.context.dataset_of_topic(&record.topic);
            let writer = record.payload.as_deref().and_then(schema_id);
            if let (Some(dataset), Some(writer)) = (dataset, writer)
                && self.needs_look(&dataset.name, writer, (record.partition, record.offset))
                && let Some(detection) = self.look(dataset, record, writer).await?
            {
                outputs.push(Outbound::event(&self.context.codec, &detection).await?);
            }
            out.push(Disposition::Emit(outputs));
        }
        Ok(out)
    }
}

/// The detector's runner on every dataset topic.
pub async fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Detector>, Arc<RunnerStatus>)> {
    let detector = Detector::new(context.clone()).await?;
    Ok(context.transactional_runner(SERVICE, &context.group("detector"), context.dataset_topics(), detector)?)
}

#[cfg(test)]
mod tests {
    use super::Known;

    /// The race CI met: a batch reports a writer, a later record of the
    /// same batch fails, the transaction aborts and the batch is read again.
    /// The reporting record met again reports again; any other record of
    /// the writer does not.
    #[test]
    fn a_detection_whose_batch_did_not_commit_is_reported_again() {
        let mut known = Known::default();
        assert!(!known.reported_elsewhere(7, (0, 41)), "never reported");
        known.reported.insert(7, (0, 41));
        assert!(!known.reported_elsewhere(7, (0, 41)), "the redelivered record reports again");
        assert!(known.reported_elsewhere(7, (0, 42)), "a later record of the writer does not");
        assert!(known.reported_elsewhere(7, (1, 41)), "nor one of another partition");
        assert!(!known.reported_elsewhere(8, (0, 42)), "another writer is its own");
    }
}
