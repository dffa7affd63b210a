//! diagnoser — gathers the evidence and classifies every field change.
//!
//! - input topic: `mend.detections`;
//! - output topic: `mend.diagnoses`;
//! - key: the dataset name;
//! - delivery: at least once; a diagnosis is a pure function of its detection
//!   and the evidence, so a re-delivery yields an equivalent diagnosis.
//!
//! Evidence: the registry's versions of the subject, the table's columns
//! from the database catalog, the drifted records sampled at the drift, and
//! the old column's values (for renames without an alias).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;

use mend_avro::codec::{CodecError, schema_id};
use mend_avro::drift::{
    OverlapEvidence, classify, classify_with, comparable, comparable_value, rename_candidates, value_overlap,
};
use mend_avro::schema::{record_of, strip_null, type_name};
use mend_avro::values::{Writer, to_sql};
use mend_config::Dataset;
use mend_model::events::{CastSample, Detection, Diagnosis, Envelope, Event, FieldChange};
use mend_model::table::describe_columns;
use mend_model::{ChangeKind, DetectionSource, topics};
use mend_runtime::handler::{EventHandler, Outbound};
use mend_runtime::runner::{Runner, RunnerStatus};
use mend_runtime::{Context, HandleError, kafka};

const SERVICE: &str = "diagnoser";
/// Drifted records and column values sampled to score a rename.
pub const SAMPLE: usize = 10_000;

pub struct Diagnoser {
    context: Arc<Context>,
}

impl Diagnoser {
    pub fn new(context: Arc<Context>) -> Self {
        Self { context }
    }

    /// Values of `fields` in the drifted records (writer schema `writer`),
    /// sampled from the source topic at the drift: comparable text per field,
    /// and how many records were read.
    async fn sample(
        &self,
        detection: &Detection,
        writer: u32,
        new: &Schema,
        fields: &[String],
    ) -> Result<(usize, BTreeMap<String, Vec<String>>), HandleError> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if fields.is_empty() {
            return Ok((0, values));
        }
        let records = kafka::read_range(
            &self.context.connections.brokers,
            &detection.topic,
            detection.partition,
            detection.offset,
            SAMPLE,
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(|e| HandleError::retry("sampling drifted records", e))?;
        let schemas: Vec<(&String, Schema)> = fields
            .iter()
            .filter_map(|name| Some((name, record_of(new)?.fields.iter().find(|f| &f.name == name)?.schema.clone())))
            .collect();
        let mut sampled = 0;
        for record in &records {
            let Some(payload) = rdkafka::message::Message::payload(record) else { continue };
            if schema_id(payload) != Some(writer) {
                continue;
            }
            let Ok(Value::Record(decoded)) = self.context.codec.decode(payload).await else { continue };
            sampled += 1;
            for (name, value) in decoded {
                if let Some((field, schema)) = schemas.iter().find(|(f, _)| **f == name)
                    && let Ok(sql) = to_sql(value, schema, Writer::alone(schema))
                    && let Some(text) = comparable_value(&sql)
                {
                    values.entry((*field).clone()).or_default().push(text);
                }
            }
        }
        Ok((sampled, values))
    }

    /// Classifies with the evidence values give: the overlap of each rename
    /// candidate (a removed and an added field with agreeing types) between
    /// the new field's values in the drifted records and the old column in
    /// the table, and for each type change whether every sampled value
    /// parses as the old type (then a cast is an option).
    async fn classify_with_values(
        &self,
        dataset: &Dataset,
        detection: &Detection,
        writer: u32,
        old: &Schema,
        new: &Schema,
        evidence: &mut BTreeMap<String, String>,
    ) -> Result<Vec<FieldChange>, HandleError> {
        let candidates = rename_candidates(old, new);
        let retyped: Vec<String> = classify(old, new)
            .into_iter()
            .filter(|c| c.kind == ChangeKind::TypeChanged && !c.field.contains(['.', '[', '{']))
            .map(|c| c.field)
            .collect();
        let mut fields: Vec<String> =
            candidates.iter().map(|(_, to)| to.clone()).chain(retyped.iter().cloned()).collect();
        fields.sort();
        fields.dedup();
        let (sampled, values) = self.sample(detection, writer, new, &fields).await?;
        if !fields.is_empty() {
            evidence.insert(
                "value_sample".into(),
                format!(
                    "{sampled} drifted records from {} partition {} offset {}",
                    detection.topic, detection.partition, detection.offset
                ),
            );
        }
        let mut overlap = OverlapEvidence::new();
        let warehouse = self.context.warehouse(dataset).await?;
        let mapping = warehouse.contract(&dataset.name).await?.map(|c| c.mapping).unwrap_or_default();
        for (from, to) in &candidates {
            let column = mapping.get(from).cloned().unwrap_or_else(|| from.clone());
            let old_values: HashSet<String> = warehouse
                .column_values(&dataset.table, &column, i64::try_from(SAMPLE).unwrap_or(i64::MAX))
                .await?
                .iter()
                .map(|v| comparable(v))
                .collect();
            let new_values = values.get(to).map(Vec::as_slice).unwrap_or_default();
            if new_values.is_empty() || old_values.is_empty() {
                continue; // nothing to compare: names and types decide
            }
            overlap
                .insert((from.clone(), to.clone()), value_overlap(new_values.iter().map(String::as_str), &old_values));
        }
        let mut changes = classify_with(old, new, &overlap);
        for change in changes.iter_mut().filter(|c| c.kind == ChangeKind::TypeChanged && retyped.contains(&c.field)) {
            let Some(old_type) = record_of(old).and_then(|r| r.fields.iter().find(|f| f.name == change.field)) else {
                continue;
            };
            let sampled = values.get(&change.field).map(Vec::as_slice).unwrap_or_default();
            let parsing = sampled.iter().filter(|v| parses_as(v, &old_type.schema)).count();
            let cast = CastSample {
                sampled: i64::try_from(sampled.len()).unwrap_or(i64::MAX),
                parsing: i64::try_from(parsing).unwrap_or(i64::MAX),
                check: format!(
                    "{parsing} of {} sampled values parse as {}",
                    sampled.len(),
                    type_name(&old_type.schema)
                ),
            };
            change.evidence.insert("cast_sampled".into(), cast.sampled.to_string());
            change.evidence.insert("cast_parsing".into(), cast.parsing.to_string());
            change.evidence.insert("cast_check".into(), cast.check.clone());
            change.cast = Some(cast);
        }
        Ok(changes)
    }

    /// Diagnoses one detection.
    pub async fn diagnose(&self, detection: &Detection) -> Result<Diagnosis, HandleError> {
        let dataset = self.context.dataset(&detection.envelope.dataset).ok_or_else(|| {
            HandleError::Fatal(format!("detection for unknown dataset {}", detection.envelope.dataset).into())
        })?;
        let codec = &self.context.codec;
        // What the source said (a pipeline failure's error message) first.
        let mut evidence = detection.evidence.clone();
        let writer = detection.writer_schema_id.and_then(|id| u32::try_from(id).ok());
        let contract = detection.contract_schema_id.and_then(|id| u32::try_from(id).ok());
        let changes = match (writer, contract) {
            (Some(writer), Some(contract)) => {
                let new = codec.schema(writer).await;
                let old = codec.schema(contract).await?;
                match new {
                    Ok(new) => {
                        evidence.insert("writer_schema".into(), new.raw.clone());
                        evidence.insert("contract_schema".into(), old.raw.clone());
                        self.classify_with_values(dataset, detection, writer, &old.parsed, &new.parsed, &mut evidence)
                            .await?
                    }
                    Err(CodecError::Invalid(reason)) => {
                        evidence.insert("writer_schema".into(), format!("unknown to the registry: {reason}"));
                        Vec::new()
                    }
                    Err(unavailable) => return Err(unavailable.into()),
                }
            }
            _ => detection.changes.clone(),
        };
        let versions = match codec.versions(&dataset.subject()).await {
            Ok(versions) => versions.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            Err(CodecError::Invalid(reason)) => format!("unknown to the registry: {reason}"),
            Err(unavailable) => return Err(HandleError::retry("registry versions", unavailable)),
        };
        evidence.insert("registry_versions".into(), format!("{}: {versions}", dataset.subject()));
        let warehouse = self.context.warehouse(dataset).await?;
        let columns = warehouse.columns(&dataset.table).await?;
        evidence.insert("table".into(), format!("{} ({})", dataset.table, warehouse.dialect().name()));
        evidence.insert("table_columns".into(), describe_columns(&columns));
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

/// Whether a value's text (as sampled) is a value of the old type.
fn parses_as(text: &str, old: &Schema) -> bool {
    match strip_null(old).0 {
        Schema::Int => text.trim().parse::<i32>().is_ok(),
        Schema::Long => text.trim().parse::<i64>().is_ok(),
        Schema::Float | Schema::Double => text.trim().parse::<f64>().is_ok_and(f64::is_finite),
        Schema::Boolean => matches!(text.trim(), "true" | "false"),
        Schema::String | Schema::Bytes => true,
        _ => false,
    }
}

impl EventHandler for Diagnoser {
    type Event = Detection;

    fn context(&self) -> &Context {
        &self.context
    }

    async fn answer(&self, detection: Detection) -> Result<Vec<Outbound>, HandleError> {
        if detection.source == DetectionSource::Revert {
            // A person's revert comes with its plan (drafted by the control
            // API): nothing to diagnose.
            return Ok(Vec::new());
        }
        let diagnosis = self.diagnose(&detection).await?;
        tracing::info!(incident = %diagnosis.envelope.incident_id, changes = diagnosis.changes.len(), "diagnosed");
        Ok(vec![Outbound::event(&self.context.codec, &diagnosis).await?])
    }
}

pub fn runner(context: &Arc<Context>) -> anyhow::Result<(Runner<Diagnoser>, Arc<RunnerStatus>)> {
    Ok(context.transactional_runner(
        SERVICE,
        &context.group("diagnoser"),
        vec![topics::DETECTIONS.to_owned()],
        Diagnoser::new(context.clone()),
    )?)
}
