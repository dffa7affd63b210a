//! The sealer's Ed25519 key pair: made by `mend audit keygen`, the secret
//! given to the sealer (`MEND_AUDIT_SIGNING_KEY`), the public key to
//! whoever verifies. Both are 32 bytes written as hex; either setting may
//! instead name a file that holds the hex.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use mend_model::digest::AuditDigest;

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct KeyError {
    what: &'static str,
    reason: String,
}

/// 32 bytes from `text`: hex, or the path of a file holding hex.
fn key_bytes(what: &'static str, text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let owned;
    let hex_text = if text.len() != 64 && std::path::Path::new(text).is_file() {
        owned = std::fs::read_to_string(text).map_err(|e| KeyError { what, reason: format!("{text}: {e}") })?;
        owned.trim()
    } else {
        text
    };
    let bytes = hex::decode(hex_text).map_err(|_| KeyError {
        what,
        reason: "expected 64 hex digits (32 bytes), or the path of a file holding them".into(),
    })?;
    bytes.try_into().map_err(|b: Vec<u8>| KeyError { what, reason: format!("{} bytes, expected 32", b.len()) })
}

/// The sealer's secret key.
pub fn signing_key(text: &str) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&key_bytes("MEND_AUDIT_SIGNING_KEY", text)?))
}

/// A verifier's public key.
pub fn public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&key_bytes("public key", text)?)
        .map_err(|e| KeyError { what: "public key", reason: e.to_string() })
}

/// A new key pair from the operating system's randomness.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError { what: "randomness", reason: e.to_string() })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Hex of a key's public half (a digest's `key_id`).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// The public key a digest's `key_id` names (hex only, never a path: the
/// id comes from the log).
pub fn named(key_id: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(key_id).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Hashes `digest` and, with a key, signs it.
pub fn seal(digest: &mut AuditDigest, key: Option<&SigningKey>) {
    digest.key_id = key.map(|k| key_id(&k.verifying_key()));
    digest.hash = digest.compute_hash();
    digest.signature = key.and_then(|k| {
        let hash = hex::decode(&digest.hash).ok()?;
        Some(hex::encode(k.sign(&hash).to_bytes()))
    });
}

/// Whether `digest`'s signature is `key`'s over its hash.
pub fn signature_holds(digest: &AuditDigest, key: &VerifyingKey) -> bool {
    let (Some(signature), Ok(hash)) = (&digest.signature, hex::decode(&digest.hash)) else { return false };
    let Ok(bytes) = hex::decode(signature) else { return false };
    let Ok(signature) = Signature::from_slice(&bytes) else { return false };
    key.verify(&hash, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> AuditDigest {
        AuditDigest {
            digest_id: "d".into(),
            chain: "mend".into(),
            sequence: 0,
            time: 1,
            service_version: "0".into(),
            prev_hash: None,
            ranges: Vec::new(),
            key_id: None,
            hash: String::new(),
            signature: None,
        }
    }

    #[test]
    fn a_signature_holds_for_its_key_only_and_not_after_an_edit() -> Result<(), KeyError> {
        let (key, other) = (generate()?, generate()?);
        let mut sealed = digest();
        seal(&mut sealed, Some(&key));
        assert!(signature_holds(&sealed, &key.verifying_key()));
        assert!(!signature_holds(&sealed, &other.verifying_key()));
        // Edited and re-hashed without the key: the old signature no longer holds.
        sealed.sequence = 7;
        sealed.hash = sealed.compute_hash();
        assert!(!signature_holds(&sealed, &key.verifying_key()));
        let mut unsigned = digest();
        seal(&mut unsigned, None);
        assert!(unsigned.signature.is_none() && !signature_holds(&unsigned, &key.verifying_key()));
        Ok(())
    }

    #[test]
    fn keys_read_from_hex_or_a_file() -> Result<(), Box<dyn std::error::Error>> {
        let key = generate()?;
        let secret = hex::encode(key.to_bytes());
        assert_eq!(signing_key(&secret)?.to_bytes(), key.to_bytes());
        let path = std::env::temp_dir().join(format!("mend-key-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, format!("{}\n", key_id(&key.verifying_key())))?;
        assert_eq!(public_key(&path.to_string_lossy())?, key.verifying_key());
        std::fs::remove_file(&path)?;
        assert!(signing_key("abcd").is_err());
        assert!(public_key("not hex at all").is_err());
        Ok(())
    }
}
