//! Commands that talk to a running `mend up` through the control API.

use serde_json::{Value, json};

/// A client of the control API.
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Bearer token (empty: none sent).
    token: String,
}

impl Client {
    pub fn new(api_addr: &str, token: &str) -> Self {
        let base = if api_addr.starts_with("http") { api_addr.to_owned() } else { format!("http://{api_addr}") };
        Self { base: base.trim_end_matches('/').to_owned(), http: reqwest::Client::new(), token: token.to_owned() }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let request = if self.token.is_empty() { request } else { request.bearer_auth(&self.token) };
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the control API at {} ({e}); is `mend up` running? (MEND_API_ADDR)",
                self.base
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"].as_str().map_or_else(|| body.to_string(), str::to_owned);
            anyhow::bail!("{status}: {message}");
        }
        Ok(body)
    }

    pub async fn incidents(&self) -> anyhow::Result<Value> {
        self.call(self.http.get(format!("{}/incidents", self.base))).await
    }

    pub async fn incident(&self, id: &str) -> anyhow::Result<Value> {
        self.call(self.http.get(format!("{}/incidents/{id}", self.base))).await
    }

    pub async fn decide(
        &self,
        proposal: &str,
        verb: &str,
        by: &str,
        reason: Option<&str>,
        channel: mend_model::Channel,
    ) -> anyhow::Result<Value> {
        let body = json!({"by": by, "reason": reason, "channel": channel});
        self.call(self.http.post(format!("{}/proposals/{proposal}/{verb}", self.base)).json(&body)).await
    }
}

impl Client {
    /// Hands over a drafted plan for `incident` (see the control API's drafts).
    pub async fn propose(
        &self,
        incident: &str,
        steps: &[mend_model::events::PlanStep],
        rationale: &str,
        by: &str,
    ) -> anyhow::Result<Value> {
        let body = json!({"steps": steps, "rationale": rationale, "by": by});
        self.call(self.http.post(format!("{}/incidents/{incident}/proposals", self.base)).json(&body)).await
    }
}

/// One change as a line: `kind field (details)`.
pub fn describe_change(change: &mend_model::events::FieldChange) -> String {
    describe_changes(&Value::Array(vec![serde_json::to_value(change).unwrap_or_default()]))
}

/// One line per change: `kind field (details)`.
pub fn describe_changes(changes: &Value) -> String {
    changes
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .map(|c| {
                    let kind = c["kind"].as_str().unwrap_or("?");
                    let field = c["field"].as_str().unwrap_or("?");
                    match (c["from"].as_str(), c["old_type"].as_str(), c["new_type"].as_str()) {
                        (Some(from), _, _) => format!("{kind} {from}->{field}"),
                        (None, Some(old), Some(new)) if kind != "field_added" => format!("{kind} {field} {old}->{new}"),
                        _ => format!("{kind} {field}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
