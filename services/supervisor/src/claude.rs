//! The Anthropic Messages API, as the supervisor uses it: one request per
//! turn, with bounded retries of the answers that mean "try again"
//! (429, 500, 529), honouring `retry-after`.

use std::time::Duration;

use mend_model::Secret;
use serde_json::Value;

/// How to reach Claude. With no key, the supervisor does nothing.
#[derive(Debug, Clone, clap::Args)]
pub struct AnthropicSettings {
    /// Anthropic API key: with it, incidents the rules blocked are handed
    /// to Claude, whose drafted fix waits for a person's approval.
    #[arg(long, env = "MEND_ANTHROPIC_API_KEY", hide_env_values = true)]
    pub anthropic_api_key: Option<mend_config::Secret>,

    /// Base URL of the Messages API.
    #[arg(long, env = "MEND_ANTHROPIC_BASE_URL", default_value = "https://api.anthropic.com")]
    pub anthropic_base_url: String,

    /// The model the supervisor asks.
    #[arg(long, env = "MEND_ANTHROPIC_MODEL", default_value = "claude-sonnet-4-5")]
    pub anthropic_model: String,

    /// The `anthropic-version` header.
    #[arg(long, env = "MEND_ANTHROPIC_VERSION", default_value = "2023-06-01")]
    pub anthropic_version: String,
}

/// Why a turn could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClaudeError {
    #[error("the Messages API is unreachable: {0}")]
    Unreachable(String),
    #[error("the Messages API answered {status}: {body}")]
    Refused { status: u16, body: String },
}

/// A client of the Messages API.
#[derive(Debug, Clone)]
pub struct Claude {
    http: reqwest::Client,
    url: String,
    key: Secret,
    pub model: String,
    version: String,
    /// Attempts of one turn while the API says "try again".
    attempts: usize,
}

impl Claude {
    /// The client `settings` describe; None without a key.
    pub fn new(settings: &AnthropicSettings) -> Option<Self> {
        let key = settings.anthropic_api_key.clone()?.given()?;
        Some(Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(300)).build().ok()?,
            url: format!("{}/v1/messages", settings.anthropic_base_url.trim_end_matches('/')),
            key,
            model: settings.anthropic_model.clone(),
            version: settings.anthropic_version.clone(),
            attempts: 3,
        })
    }

    /// One turn: the response body. 429, 500 and 529 are retried (at most
    /// [`Self::attempts`] tries in all), waiting `retry-after` seconds when
    /// the API says, else 1 s, 2 s, … (at most 30 s).
    pub async fn turn(&self, request: &Value) -> Result<Value, ClaudeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self
                .http
                .post(&self.url)
                .header("x-api-key", self.key.expose())
                .header("anthropic-version", &self.version)
                .json(request)
                .send()
                .await
                .map_err(|e| ClaudeError::Unreachable(e.to_string()))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = response.text().await.map_err(|e| ClaudeError::Unreachable(e.to_string()))?;
            if (200..300).contains(&status) {
                return serde_json::from_str(&body).map_err(|e| ClaudeError::Refused { status, body: e.to_string() });
            }
            if !matches!(status, 429 | 500 | 529) || attempt >= self.attempts {
                return Err(ClaudeError::Refused { status, body: body.chars().take(500).collect() });
            }
            let wait = Duration::from_secs(retry_after.unwrap_or(1 << (attempt - 1)).min(30));
            tracing::warn!(status, attempt, ?wait, "the Messages API asks to try again");
            tokio::time::sleep(wait).await;
        }
    }
}
