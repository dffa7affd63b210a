//! The registry calls schema_registry_converter does not make (everything
//! else goes through [`crate::Codec`]): setting a subject's compatibility.

use crate::codec::CodecError;

/// Sets the compatibility level of `subject` (`NONE`, `BACKWARD`, …).
pub async fn set_compatibility(
    http: &reqwest::Client,
    registry_url: &str,
    subject: &str,
    level: &str,
) -> Result<(), CodecError> {
    let url = format!("{}/config/{subject}", registry_url.trim_end_matches('/'));
    let response = http
        .put(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({ "compatibility": level }).to_string())
        .send()
        .await
        .map_err(|e| CodecError::Unavailable(format!("{url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let message = format!("{url}: status {status}: {body}");
    if status.is_server_error() { Err(CodecError::Unavailable(message)) } else { Err(CodecError::Invalid(message)) }
}
