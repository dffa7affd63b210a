use super::*;
use crate::protocol::*;
use apache_avro::Schema;

fn envelope() -> Envelope {
    Envelope::new("test", "orders", IncidentId::for_drift("orders", 7))
}

fn change() -> FieldChange {
    FieldChange {
        from: Some("email".into()),
        to: Some("customer_email".into()),
        confidence: Some(0.93),
        evidence: BTreeMap::from([("alias".into(), "email".into())]),
        // Every typed field, so that each goes through the Avro contracts.
        doc: Some("the customer's email".into()),
        rename_proof: Some(RenameProof::Alias),
        cast: Some(CastSample { sampled: 5, parsing: 4, check: "4 of 5 sampled values parse as long".into() }),
        all_symbols: vec!["a".into(), "b".into()],
        avro_error: Some("not readable".into()),
        ..FieldChange::new(ChangeKind::FieldRenamed, "customer_email")
    }
}

/// Encodes with the event's own `.avsc`, decodes, and compares.
fn round_trip<E: Event + Clone + PartialEq + std::fmt::Debug>(mut event: E) -> anyhow::Result<()> {
    event.seal();
    let schema = Schema::parse_str(E::SCHEMA)?;
    let value = apache_avro::to_value(&event)?.resolve(&schema)?;
    #[allow(deprecated)]
    let bytes = apache_avro::to_avro_datum(&schema, value)?;
    #[allow(deprecated)]
    let decoded = apache_avro::from_avro_datum(&schema, &mut bytes.as_slice(), None)?;
    let back: E = apache_avro::from_value(&decoded)?;
    assert_eq!(back, event);
    assert!(back.verify_hash());
    Ok(())
}

#[test]
fn quarantined_round_trips() -> anyhow::Result<()> {
    round_trip(Quarantined {
        envelope: envelope(),
        topic: "shop.orders".into(),
        partition: 2,
        offset: 42,
        key: Some(b"k".to_vec()),
        value: Some(vec![0, 0, 0, 0, 7, 2, 4]),
        writer_schema_id: Some(7),
        reason_kind: QuarantineKind::SchemaMismatch,
        reason: "field customer_email has no column".into(),
    })
}

#[test]
fn detection_round_trips() -> anyhow::Result<()> {
    round_trip(Detection {
        envelope: envelope(),
        source: DetectionSource::SchemaId,
        topic: "shop.orders".into(),
        partition: 0,
        offset: 10,
        subject: "shop.orders-value".into(),
        writer_schema_id: Some(7),
        contract_schema_id: None,
        changes: vec![change()],
        evidence: BTreeMap::new(),
    })
}

#[test]
fn diagnosis_round_trips() -> anyhow::Result<()> {
    round_trip(Diagnosis {
        envelope: envelope(),
        writer_schema_id: Some(7),
        contract_schema_id: Some(3),
        changes: vec![change(), FieldChange::new(ChangeKind::DefaultChanged, "x")],
        evidence: BTreeMap::from([("table_columns".into(), "id,email".into())]),
    })
}

#[test]
fn proposal_round_trips() -> anyhow::Result<()> {
    let steps = vec![PlanStep {
        kind: StepKind::Ddl,
        description: "add column".into(),
        sql: Some("ALTER TABLE orders ADD COLUMN coupon TEXT".into()),
        field: Some("coupon".into()),
        column: Some("coupon".into()),
        patch: None,
        cost: None,
    }];
    round_trip(Proposal {
        envelope: envelope(),
        proposal_id: Uuid::now_v7().to_string(),
        writer_schema_id: Some(7),
        changes: vec![change()],
        plan_hash: Proposal::hash_steps(&steps),
        steps,
        policy: Policy::Auto,
        rules: vec!["field_added(nullable) => auto".into()],
        origin: Some(ProposalOrigin::draft("alice", "the alias proves it")),
        refused: vec!["step 1: refused".into()],
        blast_radius: Some(BlastRadius {
            manifest: "target/manifest.json".into(),
            sources: vec!["source.shop.shop.orders".into()],
            effects: vec!["email renamed to contact".into()],
            nodes: vec![Downstream {
                id: "model.shop.stg_orders".into(),
                kind: "model".into(),
                name: "stg_orders".into(),
                impact: Impact::Breaking,
                reasons: vec!["reads orders.email (join), which is renamed to contact".into()],
            }],
            error: None,
        }),
    })
}

#[test]
fn decision_round_trips() -> anyhow::Result<()> {
    round_trip(Decision {
        envelope: envelope(),
        proposal_id: "p".into(),
        plan_hash: "h".into(),
        writer_schema_id: Some(3),
        steps: vec![PlanStep {
            kind: StepKind::Ddl,
            description: "widen".into(),
            sql: Some("ALTER TABLE t ALTER COLUMN q TYPE bigint".into()),
            field: None,
            column: None,
            patch: None,
            cost: Some(StatementCost {
                class: CostClass::Rewrite,
                lock: Some("ACCESS EXCLUSIVE".into()),
                reason: "int4 -> int8".into(),
                probe: None,
                rows: None,
                bytes: Some(8192),
                lint: vec![LintFinding {
                    rule: "changing-column-type".into(),
                    message: "rewrites the table".into(),
                    help: None,
                }],
            }),
        }],
        outcome: Verdict::Approved,
        by: "alice".into(),
        channel: Channel::Cli,
        reason: None,
    })
}

#[test]
fn application_round_trips() -> anyhow::Result<()> {
    round_trip(Application {
        envelope: envelope(),
        proposal_id: "p".into(),
        decision_id: "d".into(),
        outcome: ApplicationOutcome::Applied,
        contract_schema_id: Some(7),
        statements: 1,
        replayed: 10,
        loaded: 10,
        still_quarantined: 0,
        held: Vec::new(),
        applied_at: None,
        error: Some("none".into()),
        lock_waits: Vec::new(),
        contract_before: None,
    })?;
    round_trip(Application {
        envelope: envelope(),
        proposal_id: "p".into(),
        decision_id: "d".into(),
        outcome: ApplicationOutcome::Applied,
        contract_schema_id: Some(7),
        statements: 1,
        replayed: 10,
        loaded: 9,
        still_quarantined: 1,
        held: vec![Held { partition: 2, offset: 41, reason: "field amount is string in the record".into() }],
        applied_at: Some(1_700_000_000_000),
        error: None,
        lock_waits: vec![LockWait { at: 1_700_000_000_000, waited_ms: 2003, error: "lock timeout".into() }],
        contract_before: Some(ContractState {
            schema_id: 6,
            mapping: [("email".to_owned(), "email".to_owned()), ("shipping.city".into(), "shipping__city".into())]
                .into(),
        }),
    })
}

#[test]
fn every_schema_embeds_the_same_envelope() -> anyhow::Result<()> {
    let envelope_of = |schema: &str| -> anyhow::Result<serde_json::Value> {
        let json: serde_json::Value = serde_json::from_str(schema)?;
        Ok(json["fields"][0]["type"].clone())
    };
    let reference = envelope_of(Detection::SCHEMA)?;
    for schema in [
        Quarantined::SCHEMA,
        Diagnosis::SCHEMA,
        Proposal::SCHEMA,
        Decision::SCHEMA,
        Application::SCHEMA,
        AgentRun::SCHEMA,
    ] {
        assert_eq!(envelope_of(schema)?, reference);
    }
    Ok(())
}

/// An approval by alice through the CLI.
fn decision(envelope: Envelope) -> Decision {
    Decision {
        envelope,
        proposal_id: "p".into(),
        plan_hash: "h".into(),
        writer_schema_id: None,
        steps: vec![],
        outcome: Verdict::Approved,
        by: "alice".into(),
        channel: Channel::Cli,
        reason: None,
    }
}

#[test]
fn editing_a_sealed_event_breaks_its_hash() {
    let mut first = decision(envelope());
    first.seal();
    let mut next = Decision { envelope: Envelope::answering("test", &first.envelope), ..first.clone() };
    next.seal();
    assert!(first.verify_hash() && next.verify_hash());
    assert_eq!(next.envelope.prev_hash.as_deref(), Some(first.envelope.hash.as_str()));

    let mut tampered = first.clone();
    tampered.by = "mallory".into();
    assert!(!tampered.verify_hash());
}

#[test]
fn incident_ids_are_stable_per_dataset_and_schema() {
    assert_eq!(IncidentId::for_drift("orders", 7), IncidentId::for_drift("orders", 7));
    assert_ne!(IncidentId::for_drift("orders", 7), IncidentId::for_drift("orders", 8));
    assert_ne!(IncidentId::for_drift("orders", 7), IncidentId::for_drift("order", 7));
}

/// Every value of every enum an event carries, encoded with the event's own
/// `.avsc` and decoded back: the contracts hold them as strings, so topics
/// written before the enums existed stay readable.
#[test]
fn every_protocol_value_round_trips_through_its_avsc() -> anyhow::Result<()> {
    let step = |kind: StepKind| PlanStep {
        kind,
        description: "d".into(),
        sql: None,
        field: None,
        column: None,
        patch: None,
        cost: None,
    };
    for kind in ChangeKind::ALL {
        let changes = vec![FieldChange::new(*kind, "f")];
        round_trip(Detection {
            envelope: envelope(),
            source: DetectionSource::SchemaId,
            topic: "t".into(),
            partition: 0,
            offset: 0,
            subject: "t-value".into(),
            writer_schema_id: None,
            contract_schema_id: None,
            changes: changes.clone(),
            evidence: BTreeMap::new(),
        })?;
        round_trip(Diagnosis {
            envelope: envelope(),
            writer_schema_id: None,
            contract_schema_id: None,
            changes,
            evidence: BTreeMap::new(),
        })?;
    }
    for source in DetectionSource::ALL {
        round_trip(Detection {
            envelope: envelope(),
            source: *source,
            topic: "t".into(),
            partition: 0,
            offset: 0,
            subject: "t-value".into(),
            writer_schema_id: None,
            contract_schema_id: None,
            changes: vec![],
            evidence: BTreeMap::new(),
        })?;
    }
    for kind in QuarantineKind::ALL {
        round_trip(Quarantined {
            envelope: envelope(),
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            value: None,
            writer_schema_id: None,
            reason_kind: *kind,
            reason: "r".into(),
        })?;
    }
    for policy in Policy::ALL {
        let steps: Vec<PlanStep> = StepKind::ALL.iter().map(|k| step(*k)).collect();
        round_trip(Proposal {
            envelope: envelope(),
            proposal_id: "p".into(),
            writer_schema_id: None,
            changes: ChangeKind::ALL.iter().map(|k| FieldChange::new(*k, "f")).collect(),
            plan_hash: Proposal::hash_steps(&steps),
            steps,
            policy: *policy,
            rules: vec![],
            origin: None,
            refused: Vec::new(),
            blast_radius: None,
        })?;
    }
    for outcome in Verdict::ALL {
        for channel in Channel::ALL {
            round_trip(Decision {
                envelope: envelope(),
                proposal_id: "p".into(),
                plan_hash: "h".into(),
                writer_schema_id: None,
                steps: StepKind::ALL.iter().map(|k| step(*k)).collect(),
                outcome: *outcome,
                by: "b".into(),
                channel: *channel,
                reason: None,
            })?;
        }
    }
    for outcome in AgentOutcome::ALL {
        round_trip(AgentRun {
            envelope: envelope(),
            model: "claude".into(),
            outcome: *outcome,
            reason: Some("r".into()),
            proposal_id: None,
            plan: Some("{}".into()),
            tool_calls: vec![ToolCall::new("describe_table", "{}".into(), "é".repeat(3000).as_str(), false, 3)],
            text: vec!["thinking".into()],
            stop_reason: Some("end_turn".into()),
            input_tokens: 1,
            output_tokens: 2,
            duration_ms: 3,
        })?;
    }
    for outcome in ApplicationOutcome::ALL {
        round_trip(Application {
            envelope: envelope(),
            proposal_id: "p".into(),
            decision_id: "d".into(),
            outcome: *outcome,
            contract_schema_id: None,
            statements: 0,
            replayed: 0,
            loaded: 0,
            still_quarantined: 0,
            held: Vec::new(),
            applied_at: None,
            error: None,
            lock_waits: Vec::new(),
            contract_before: None,
        })?;
    }
    Ok(())
}

/// A decision written before the enums existed (outcome and channel as
/// plain strings, hashed as such) still verifies: the enums hash as the
/// same JSON strings.
#[test]
fn hashes_are_the_same_as_with_plain_strings() -> anyhow::Result<()> {
    let mut typed = Decision {
        envelope: envelope(),
        proposal_id: "p".into(),
        plan_hash: "h".into(),
        writer_schema_id: None,
        steps: vec![],
        outcome: Verdict::Rejected,
        by: "alice".into(),
        channel: Channel::Slack,
        reason: None,
    };
    typed.seal();
    let json = serde_json::to_value(&typed)?;
    assert_eq!(json["outcome"], "rejected");
    assert_eq!(json["channel"], "slack");
    Ok(())
}

/// Fields added to an event later must not change the hash of events
/// written before them: a detection without evidence hashes as it did
/// before `evidence` existed (the audit log would call it edited).
#[test]
fn a_detection_without_evidence_hashes_as_before_the_field_existed() -> anyhow::Result<()> {
    let mut detection = Detection {
        envelope: envelope(),
        source: DetectionSource::SchemaId,
        topic: "t".into(),
        partition: 0,
        offset: 1,
        subject: "t-value".into(),
        writer_schema_id: Some(2),
        contract_schema_id: Some(1),
        changes: vec![],
        evidence: BTreeMap::new(),
    };
    detection.seal();
    let json = serde_json::to_value(&detection)?;
    assert!(json.get("evidence").is_none(), "{json}");
    // As an older mend wrote it: the same JSON without the field.
    let older: Detection = serde_json::from_value(json)?;
    assert!(older.verify_hash());
    round_trip(detection)
}

#[test]
fn a_digest_round_trips_through_its_avsc_and_keeps_its_hash() -> anyhow::Result<()> {
    use crate::digest::{AuditDigest, SealedRange};
    let mut digest = AuditDigest {
        digest_id: "01".into(),
        chain: "mend".into(),
        sequence: 3,
        time: 1_700_000_000_000,
        service_version: "0.1.0".into(),
        prev_hash: Some("ab".repeat(32)),
        ranges: vec![SealedRange {
            topic: "mend.decisions".into(),
            partition: 0,
            first_offset: 4,
            last_offset: 9,
            count: 6,
            hash: SealedRange::hash_events([(4, "x"), (5, "y")]),
            covers_from: Some(2),
        }],
        key_id: Some("cd".repeat(32)),
        hash: String::new(),
        signature: Some("ef".repeat(64)),
    };
    digest.hash = digest.compute_hash();
    let schema = Schema::parse_str(AuditDigest::SCHEMA)?;
    let value = apache_avro::to_value(&digest)?.resolve(&schema)?;
    #[allow(deprecated)]
    let bytes = apache_avro::to_avro_datum(&schema, value)?;
    #[allow(deprecated)]
    let decoded = apache_avro::from_avro_datum(&schema, &mut bytes.as_slice(), None)?;
    let back: AuditDigest = apache_avro::from_value(&decoded)?;
    assert_eq!(back, digest);
    assert_eq!(back.compute_hash(), digest.hash, "the signature is not part of what is hashed");
    assert_ne!(SealedRange::hash_events([(4, "x"), (5, "y")]), SealedRange::hash_events([(5, "y"), (4, "x")]));
    Ok(())
}

/// The hash as first defined: over a copy of the event with its hash blanked.
fn hash_of_blanked_copy<E: Event>(event: &E) -> String {
    let mut unsealed = event.clone();
    unsealed.envelope_mut().hash.clear();
    let mut digest = Sha256::new();
    digest.update(event.envelope().prev_hash.as_deref().unwrap_or("").as_bytes());
    digest.update(b"\n");
    digest.update(canonical_json(&unsealed));
    hex::encode(digest.finalize())
}

#[test]
fn the_hash_is_the_hash_of_the_event_with_its_hash_blanked() {
    // Strings that look like the hash's key, before and after it.
    let mut envelope = Envelope::new("svc \"hash\":\"x", "d\",\"hash\":\"", IncidentId::for_drift("d", 1));
    envelope.prev_hash = Some("\"hash\":\"abc\"".into());
    let mut decision =
        Decision { proposal_id: "\"hash\":\"".into(), reason: Some(",\"hash\":\"\"}".into()), ..decision(envelope) };
    assert_eq!(decision.compute_hash(), hash_of_blanked_copy(&decision), "unsealed");
    decision.seal();
    assert_eq!(decision.compute_hash(), hash_of_blanked_copy(&decision), "sealed");
    assert!(decision.verify_hash());
    // Forged hashes (one holding a quote takes the copying path) hash as the copy does.
    for forged in ["ab\"cd", "0123", ""] {
        decision.envelope.hash = forged.into();
        assert_eq!(decision.compute_hash(), hash_of_blanked_copy(&decision), "hash {forged:?}");
        assert!(!decision.verify_hash());
    }
}

/// `schema` as it was before `added` fields existed: each removed wherever
/// a record lists it.
fn without_fields(schema: &str, added: &[&str]) -> anyhow::Result<Schema> {
    fn strip(value: &mut serde_json::Value, added: &[&str]) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(fields)) = map.get_mut("fields") {
                    fields.retain(|f| !f["name"].as_str().is_some_and(|n| added.contains(&n)));
                }
                map.values_mut().for_each(|v| strip(v, added));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip(v, added)),
            _ => {}
        }
    }
    let mut json: serde_json::Value = serde_json::from_str(schema)?;
    strip(&mut json, added);
    Ok(Schema::parse(&json)?)
}

/// A proposal written before a proposal said where it came from, and before
/// the evidence was typed, is read by today's contract: the new fields take
/// their defaults, the hash it was sealed with still verifies, and the id
/// still tells a draft from the rules' plan.
#[test]
fn a_proposal_written_before_origin_and_typed_evidence_reads_with_its_hash() -> anyhow::Result<()> {
    let added = ["origin", "refused", "doc", "rename_proof", "cast", "all_symbols", "avro_error"];
    let writer = without_fields(Proposal::SCHEMA, &added)?;
    let reader = Schema::parse_str(Proposal::SCHEMA)?;
    let envelope = envelope();
    let mut older = Proposal {
        proposal_id: Uuid::now_v7().to_string(),
        writer_schema_id: Some(7),
        changes: vec![FieldChange {
            evidence: BTreeMap::from([("alias".into(), "email".into())]),
            ..FieldChange::new(ChangeKind::FieldRenamed, "customer_email")
        }],
        steps: vec![],
        plan_hash: Proposal::hash_steps(&[]),
        policy: Policy::Approve,
        rules: vec!["drafted by alice: it is a rename".into()],
        origin: None,
        refused: vec![],
        blast_radius: None,
        envelope,
    };
    older.seal();
    let value = apache_avro::to_value(&older)?.resolve(&writer)?;
    #[allow(deprecated)]
    let bytes = apache_avro::to_avro_datum(&writer, value)?;
    #[allow(deprecated)]
    let decoded = apache_avro::from_avro_datum(&writer, &mut bytes.as_slice(), Some(&reader))?;
    let back: Proposal = apache_avro::from_value(&decoded)?;
    assert_eq!(back, older);
    assert!(back.verify_hash(), "an old proposal's hash must still verify");
    assert!(back.is_draft(), "an id other than the rules' one is a draft");
    let mut rules = back.clone();
    rules.proposal_id = Proposal::rules_id(&rules.envelope.incident_id);
    assert!(!rules.is_draft());
    Ok(())
}
