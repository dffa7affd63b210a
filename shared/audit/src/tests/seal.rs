//! The sealer: it goes on from its own chain and reads schema hashes from
//! envelopes alone.

use super::*;

#[test]
fn the_sealer_goes_on_from_its_own_chain_and_not_from_a_forged_digest() -> Result<(), keys::KeyError> {
    use crate::seal::Chain;
    use mend_model::digest::AuditDigest;
    let (key, forger, next_key) = (keys::generate()?, keys::generate()?, keys::generate()?);
    let id = |k: &SigningKey| keys::key_id(&k.verifying_key());
    let log = sealed_log(6, 7, Some(&key));
    let written: Vec<AuditDigest> = log
        .iter()
        .filter_map(|e| match &e.record {
            Record::Digest(d) => Some((**d).clone()),
            _ => None,
        })
        .collect();
    let mut chain = Chain::default();
    for digest in &written {
        assert_eq!(chain.refuses(digest, Some(&id(&key))), None);
        chain.follow(digest.clone());
    }
    // What someone who may write to the topic could put after it: a digest
    // that seals offsets far ahead, signed with another key, unsigned, or
    // naming the sealer's key without its signature; and a retried copy.
    let ahead = |signer: Option<&SigningKey>| {
        let mut pending = Pending::default();
        pending.push(topics::DECISIONS, 0, 1_000_000, b"x");
        next_digest(CHAIN, chain.last.as_ref(), &pending, signer)
    };
    let own = Some(id(&key));
    let refused = |digest: &AuditDigest| chain.refuses(digest, own.as_deref()).unwrap_or_default();
    assert!(refused(&ahead(Some(&forger))).contains("neither the chain's key nor this sealer's"));
    assert!(refused(&ahead(None)).contains("unsigned, after signed digests"));
    let mut claimed = ahead(Some(&forger));
    claimed.key_id = own.clone();
    claimed.hash = claimed.compute_hash();
    assert!(refused(&claimed).contains("signature does not hold"));
    assert!(written.last().is_some_and(|last| refused(last).contains("is not #5")));
    assert_eq!(chain.refuses(&ahead(Some(&key)), own.as_deref()), None);
    // A sealer given a new key goes on from the chain the old one signed.
    let mut rotated = Chain::default();
    for digest in &written {
        assert_eq!(rotated.refuses(digest, Some(&id(&next_key))), None);
        rotated.follow(digest.clone());
    }
    assert_eq!(rotated.refuses(&ahead(Some(&next_key)), Some(&id(&next_key))), None);
    Ok(())
}

/// The datum of `event` as its schema encodes it.
fn datum<E: Event + serde::Serialize>(event: &E) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let schema = apache_avro::Schema::parse_str(E::SCHEMA)?;
    #[allow(deprecated)]
    let datum = apache_avro::to_avro_datum(&schema, apache_avro::to_value(event)?.resolve(&schema)?)?;
    Ok(datum)
}

#[test]
fn the_sealer_reads_every_event_schemas_hash_from_its_envelope_alone() -> Result<(), Box<dyn std::error::Error>> {
    use crate::seal::envelope_hash_field;
    use mend_model::events::{AgentRun, Quarantined};
    for schema in [
        Quarantined::SCHEMA,
        Detection::SCHEMA,
        Diagnosis::SCHEMA,
        Proposal::SCHEMA,
        Decision::SCHEMA,
        Application::SCHEMA,
        AgentRun::SCHEMA,
    ] {
        let parsed = apache_avro::Schema::parse_str(schema)?;
        assert!(envelope_hash_field(&parsed).is_some(), "{schema}");
    }
    for event in incident("orders", 7) {
        let (schema, datum, hash) = match &event {
            AuditEvent::Detection(e) => (Detection::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Diagnosis(e) => (Diagnosis::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Proposal(e) => (Proposal::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Decision(e) => (Decision::SCHEMA, datum(e)?, &e.envelope.hash),
            AuditEvent::Application(e) => (Application::SCHEMA, datum(e)?, &e.envelope.hash),
            other => unreachable!("{other:?}"),
        };
        let field = envelope_hash_field(&apache_avro::Schema::parse_str(schema)?).ok_or("no envelope")?;
        assert!(!hash.is_empty());
        assert_eq!(field.read(&datum), Some(hash.as_str()));
    }
    Ok(())
}
