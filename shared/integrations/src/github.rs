//! GitHub webhooks: each delivery is signed with HMAC-SHA256 over the exact
//! body using the webhook's secret, sent as `X-Hub-Signature-256:
//! sha256=<hex>`.

use hmac::{Hmac, Mac};
use mend_model::Secret;
use sha2::Sha256;

/// Whether `signature` (the header value) signs `body` with `secret`
/// (compared in constant time).
pub fn verify(secret: &Secret, signature: Option<&str>, body: &[u8]) -> bool {
    let Some(given) = signature.and_then(|s| s.strip_prefix("sha256=")).and_then(|hex| hex::decode(hex).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The `X-Hub-Signature-256` value GitHub would send (for tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // GitHub's documented example.
        let signature = sign("It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(signature, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        assert!(verify(&Secret::new("It's a Secret to Everybody"), Some(&signature), b"Hello, World!"));
        assert!(!verify(&Secret::new("It's a Secret to Everybody"), Some(&signature), b"Hello, World?"));
        assert!(!verify(&Secret::new("other"), Some(&signature), b"Hello, World!"));
        assert!(!verify(&Secret::new("It's a Secret to Everybody"), None, b"Hello, World!"));
    }
}
