//! The read model: every incident as the audit topics tell it, kept current
//! by the projector (a fresh consumer group at every start, so it is rebuilt
//! from the beginning of the topics).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mend_avro::codec::CodecError;
pub use mend_model::api::{ApplicationView, DecisionView, DraftView, Incident, SupervisorView};
use mend_model::audit::AuditEvent;
use mend_model::events::{AgentRun, Application, Decision, Detection, Diagnosis, Envelope, Proposal};
use mend_model::{ApplicationOutcome, Channel, IncidentStatus, Policy, Verdict};
use mend_runtime::handler::{Disposition, Handler, Inbound};
use mend_runtime::{Context, HandleError};

/// The read model: incidents and the proposals that can be decided.
#[derive(Debug, Default)]
pub struct ReadModel {
    pub(crate) incidents: BTreeMap<String, Incident>,
    pub(crate) proposals: BTreeMap<String, Proposal>,
    /// The next offset read per (topic, partition): how far it has caught up.
    pub(crate) progress: BTreeMap<(String, i32), i64>,
    /// Counts the model's changes; the console's live updates wait on it.
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
}

impl ReadModel {
    pub(crate) fn incident(&mut self, envelope: &Envelope) -> &mut Incident {
        let incident = self.incidents.entry(envelope.incident_id.0.clone()).or_default();
        if incident.id.is_empty() {
            incident.id = envelope.incident_id.0.clone();
            incident.dataset = envelope.dataset.clone();
            incident.status = IncidentStatus::Open;
            incident.detected_at = envelope.time;
        }
        incident
    }

    pub(crate) fn detection(&mut self, event: Detection) {
        let incident = self.incident(&event.envelope);
        incident.source.get_or_insert(event.source);
        if incident.evidence.is_empty() {
            incident.evidence.clone_from(&event.evidence);
        }
        incident.writer_schema_id = event.writer_schema_id;
        incident.contract_schema_id = event.contract_schema_id;
        if incident.changes.is_empty() {
            incident.changes = event.changes;
        }
    }

    fn diagnosis(&mut self, event: Diagnosis) {
        let incident = self.incident(&event.envelope);
        incident.changes = event.changes;
        incident.evidence = event.evidence;
    }

    pub(crate) fn proposal(&mut self, event: Proposal) {
        let incident = self.incident(&event.envelope);
        if event.is_draft() && !incident.drafts.iter().any(|d| d.proposal_id == event.proposal_id) {
            incident.drafts.push(DraftView {
                proposal_id: event.proposal_id.clone(),
                accepted: event.policy != Policy::Block,
                by: event.origin.as_ref().and_then(|o| o.by.clone()),
                rationale: event.origin.as_ref().and_then(|o| o.rationale.clone()),
                refused: event.refused.clone(),
                rules: event.rules.clone(),
                at: event.envelope.time,
            });
        }
        // A refused draft, or a draft after the incident was decided,
        // changes nothing else: the incident keeps its proposal. Nor does
        // the rules' proposal once a draft waits (a draft recorded by this
        // process can be known before the rules' proposal comes back
        // through the topic).
        let draft_waits = incident.drafts.iter().any(|d| d.accepted);
        if (event.is_draft() && (event.policy == Policy::Block || incident.decision.is_some()))
            || (!event.is_draft() && draft_waits)
        {
            self.proposals.insert(event.proposal_id.clone(), event);
            return;
        }
        incident.proposal_id = Some(event.proposal_id.clone());
        incident.policy = Some(event.policy);
        incident.rules.clone_from(&event.rules);
        incident.steps.clone_from(&event.steps);
        incident.blast_radius.clone_from(&event.blast_radius);
        incident.proposed_at.get_or_insert(event.envelope.time);
        if incident.decision.is_none() && incident.application.is_none() {
            incident.status = match event.policy {
                Policy::Approve => IncidentStatus::AwaitingApproval,
                Policy::Block => IncidentStatus::Blocked,
                Policy::Auto => IncidentStatus::Open,
            };
        }
        self.proposals.insert(event.proposal_id.clone(), event);
    }

    pub(crate) fn decision(&mut self, event: Decision) {
        let incident = self.incident(&event.envelope);
        if incident.decision.is_some() {
            return; // the first decision stands
        }
        if event.outcome == Verdict::Rejected {
            incident.status = IncidentStatus::Blocked;
        } else if incident.application.is_none() {
            incident.status = IncidentStatus::Open;
        }
        if event.channel != Channel::Policy
            && let Some(proposed) = incident.proposed_at
        {
            incident.waiting_for_person_seconds = Some((event.envelope.time - proposed) as f64 / 1000.0);
        }
        incident.decision = Some(DecisionView {
            id: event.envelope.event_id.clone(),
            outcome: event.outcome,
            by: event.by,
            channel: event.channel,
            reason: event.reason,
            at: event.envelope.time,
        });
    }

    fn application(&mut self, event: Application) {
        let incident = self.incident(&event.envelope);
        // Healed only when the replay loaded every record it was to take.
        let applied = event.healed();
        incident.status = match event.outcome {
            ApplicationOutcome::Applied if applied => IncidentStatus::Healed,
            ApplicationOutcome::Applied => IncidentStatus::Held,
            _ => IncidentStatus::Failed,
        };
        if applied && incident.healed_at.is_none() {
            incident.healed_at = Some(event.envelope.time);
            incident.time_to_heal_seconds = Some((event.envelope.time - incident.detected_at) as f64 / 1000.0);
        }
        incident.application = Some(ApplicationView {
            outcome: event.outcome,
            statements: event.statements,
            replayed: event.replayed,
            loaded: event.loaded,
            still_quarantined: event.still_quarantined,
            held: event.held,
            error: event.error,
            lock_waits: event.lock_waits,
            contract_before: event.contract_before,
            decision_id: Some(event.decision_id),
        });
    }

    fn supervisor_run(&mut self, event: AgentRun) {
        let incident = self.incident(&event.envelope);
        let detection_to_proposal_seconds =
            event.proposal_id.as_ref().map(|_| (event.envelope.time - incident.detected_at) as f64 / 1000.0);
        incident.supervisor = Some(SupervisorView {
            outcome: event.outcome,
            reason: event.reason,
            proposal_id: event.proposal_id,
            model: event.model,
            tools: event.tool_calls.iter().map(|c| c.name.clone()).collect(),
            calls: event.tool_calls,
            text: event.text,
            input_tokens: event.input_tokens,
            output_tokens: event.output_tokens,
            seconds: event.duration_ms as f64 / 1000.0,
            detection_to_proposal_seconds,
        });
    }

    /// Projects one audit event (of a managed dataset) onto the model.
    pub fn apply(&mut self, event: AuditEvent) {
        match event {
            AuditEvent::Detection(e) => self.detection(e),
            AuditEvent::Diagnosis(e) => self.diagnosis(e),
            AuditEvent::Proposal(e) => self.proposal(e),
            AuditEvent::Decision(e) => self.decision(e),
            AuditEvent::Application(e) => self.application(e),
            AuditEvent::AgentRun(e) => self.supervisor_run(e),
            // Counted from the warehouse instead (see `incidents`).
            AuditEvent::Quarantined(_) => {}
        }
    }

    /// Tells whoever waits on [`ReadModel::changes`] that incidents changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn incidents(&self) -> Vec<Incident> {
        let mut all: Vec<Incident> = self.incidents.values().filter(|i| i.is_known()).cloned().collect();
        all.sort_by_key(|i| i.detected_at);
        all
    }
}

/// Keeps the read model current.
pub struct Projector {
    pub(crate) context: Arc<Context>,
    pub(crate) model: Arc<Mutex<ReadModel>>,
}

impl Projector {
    /// The audit event a record holds; None for an unreadable one (logged
    /// and skipped: the read model shows what it can).
    async fn decode(&self, record: &Inbound) -> Result<Option<AuditEvent>, HandleError> {
        let payload = record.payload.as_deref().unwrap_or_default();
        match self.context.codec.decode_audit(&record.topic, payload).await {
            Ok(event) => Ok(Some(event)),
            Err(CodecError::Invalid(reason)) => {
                tracing::warn!(topic = %record.topic, %reason, "unreadable audit event skipped");
                Ok(None)
            }
            Err(unavailable) => Err(unavailable.into()),
        }
    }
}

impl Handler for Projector {
    async fn handle(&self, batch: &[Inbound]) -> Result<Vec<Disposition>, HandleError> {
        let mut events = Vec::with_capacity(batch.len());
        for record in batch {
            events.extend(self.decode(record).await?);
        }
        events.retain(|event| self.context.manages(&event.envelope().dataset));
        let mut model = self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = !events.is_empty();
        for event in events {
            model.apply(event);
        }
        if changed {
            model.changed();
        }
        for record in batch {
            let next = model.progress.entry((record.topic.to_string(), record.partition)).or_insert(0);
            *next = (*next).max(record.offset + 1);
        }
        Ok(vec![Disposition::Emit(Vec::new()); batch.len()])
    }
}

#[cfg(test)]
mod tests;
