//! diagnoser — gathers the evidence and classifies every field change.
//!
//! - input topic: `mend.detections`;
//! - output topic: `mend.diagnoses`;
//! - key: the dataset name;
//! - delivery: at least once; a diagnosis is a pure function of its detection
//!   and the evidence, so a re-delivery yields an equivalent diagnosis.
//!
//! Evidence comes from the shared tool functions (`mend_shared::tools`), the
//! same ones the MCP server exposes.

use std::collections::BTreeMap;
use std::sync::Arc;

use mend_shared::context::Context;
use mend_shared::drift::classify;
use mend_shared::events::{Detection, Diagnosis, Envelope, Event};
use mend_shared::runner::{Disposition, Handler, Inbound, Outbound, Runner, RunnerStatus, decode_event};
use mend_shared::{HandleError, tools, topics};

const SERVICE: &str = "diagnoser";

pub struct Diagnoser {
    context: Arc<Context>,
}

impl Diagnoser {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context }
    }

    /// Diagnoses one detection.
    pub async fn diagnose(&self, detection: &Detection) -> Result<Diagnosis, HandleError> {
        let dataset = self.context.dataset(&detection.envelope.dataset).ok_or_else(|| {
            HandleError::Fatal(format!("detection for unknown dataset {}", detection.envelope.dataset))
        })?;
        let codec = &self.context.codec;
        let mut evidence = BTreeMap::new();
        let writer = detection.writer_schema_id.and_then(|id| u32::try_from(id).ok());
        let contract = detection.contract_schema_id.and_then(|id| u32::try_from(id).ok());
        let changes = match (writer, contract) {
            (Some(writer), Some(contract)) => {
                let new = codec.schema(writer).await;
                let old = codec.schema(contract).await.map_err(HandleError::from)?;
                match new {
                    Ok(new) => {
                        evidence.insert("writer_schema".into(), new.raw.clone());
                        evidence.insert("contract_schema".into(), old.raw.clone());
                        classify(&old.parsed, &new.parsed)
                    }
                    Err(mend_shared::codec::CodecError::Invalid(reason)) => {
                        evidence.insert("writer_schema".into(), format!("unknown to the registry: {reason}"));
                        Vec::new()
                    }
                    Err(unavailable) => return Err(unavailable.into()),
                }
            }
            _ => detection.changes.clone(),
        };
        let versions = tools::registry_versions(&self.context.connections.registry_url, &dataset.subject())
            .await
            .map_err(|e| HandleError::retry("registry versions", e))?;
        evidence.insert(
            "registry_versions".into(),
            format!("{}: {}", dataset.subject(), versions.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        );
        let warehouse = self.context.warehouse(dataset).await?;
        let columns = tools::table_columns(&warehouse, &dataset.table)
            .await
            .map_err(|e| HandleError::retry("table columns", e))?;
        evidence.insert("table".into(), format!("{} ({})", dataset.table, warehouse.dialect().name()));
        evidence.insert("table_columns".into(), tools::describe_columns(&columns));
        evidence.insert(
            "drift_at".into(),
            format!("{} partition {} offset {}", detection.topic, detection.partition, detection.offset),
        );
        let mut diagnosis = Diagnosis {
            envelope: Envelope::answering(SERVICE, &detection.envelope),
            writer_schema_id: detection.writer_schema_id,
            contract_schema_id: detection.contract_schema_id,
            changes,
            evidence,
        };
        diagnosis.seal();
        Ok(diagnosis)
    }
}

impl Handler for Diagnoser {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut out = Vec::with_capacity(batch.len());
        for record in batch {
            let detection: Detection = match decode_event(&self.context.codec, record).await? {
                Ok(event) => event,
                Err(bad) => {
                    out.push(bad);
                    continue;
                }
            };
            if !self.context.manages(&detection.envelope.dataset) {
                out.push(Disposition::Emit(Vec::new())); // another deployment's dataset
                continue;
            }
            let diagnosis = self.diagnose(&detection).await?;
            tracing::info!(incident = %diagnosis.envelope.incident_id, changes = diagnosis.changes.len(), "diagnosed");
            out.push(Disposition::Emit(vec![Outbound {
                topic: Diagnosis::TOPIC.to_owned(),
                key: diagnosis.envelope.dataset.clone().into_bytes(),
                payload: self.context.codec.encode_event(&diagnosis).await.map_err(HandleError::from)?,
                headers: record.headers.clone(),
            }]));
        }
        Ok(out)
    }
}

pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Diagnoser>, Arc<RunnerStatus>)> {
    Ok(context.runner(
        SERVICE,
        &context.group("diagnoser"),
        vec![topics::DETECTIONS.to_owned()],
        Diagnoser::new(context.clone()),
    )?)
}
