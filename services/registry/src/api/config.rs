//! Compatibility levels, global and per subject.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

pub(super) fn parse_level(body: &Bytes) -> Result<Level, ApiError> {
    let parsed: ConfigBody = serde_json::from_slice(body).map_err(|e| ApiError::invalid_level(&e.to_string()))?;
    let text = parsed.compatibility.or(parsed.compatibility_level).unwrap_or_default();
    Level::parse(&text).ok_or_else(|| ApiError::invalid_level(&text))
}

pub(super) async fn get_global(State(r): Shared) -> Result<Response, ApiError> {
    ok(json!({"compatibilityLevel": r.read().global_level().name()}))
}

pub(super) async fn put_global(State(r): Shared, Body(body): Body) -> Result<Response, ApiError> {
    let level = parse_level(&body)?;
    let _writer = r.write_lock.lock().await;
    r.log.append(&LogKey::config(None), Some(&ConfigValue { compatibility_level: level })).await?;
    ok(json!({"compatibility": level.name()}))
}

pub(super) async fn delete_global(State(r): Shared) -> Result<Response, ApiError> {
    let _writer = r.write_lock.lock().await;
    r.log.catch_up().await?;
    let previous = r.read().global_level();
    r.log.append::<ConfigValue>(&LogKey::config(None), None).await?;
    ok(json!({"compatibilityLevel": previous.name()}))
}

pub(super) async fn get_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let store = r.read();
    let level = match store.subject_level(&subject) {
        Some(level) => level,
        None if flag(&params, "defaultToGlobal") => store.global_level(),
        None => return Err(no_subject_config(&subject)),
    };
    ok(json!({"compatibilityLevel": level.name()}))
}

pub(super) fn no_subject_config(subject: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        40408,
        format!("Subject '{subject}' does not have subject-level compatibility configured"),
    )
}

pub(super) async fn put_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    valid_subject(&subject)?;
    let level = parse_level(&body)?;
    let _writer = r.write_lock.lock().await;
    r.log.append(&LogKey::config(Some(&subject)), Some(&ConfigValue { compatibility_level: level })).await?;
    ok(json!({"compatibility": level.name()}))
}

pub(super) async fn delete_subject_config(State(r): Shared, Path(subject): Path<String>) -> Result<Response, ApiError> {
    let _writer = r.write_lock.lock().await;
    r.log.catch_up().await?;
    let previous = {
        let store = r.read();
        match store.subject_level(&subject) {
            Some(level) => level,
            None if store.versions(&subject).is_none() => return Err(ApiError::subject_not_found(&subject)),
            None => return Err(no_subject_config(&subject)),
        }
    };
    r.log.append::<ConfigValue>(&LogKey::config(Some(&subject)), None).await?;
    ok(json!({"compatibilityLevel": previous.name()}))
}
