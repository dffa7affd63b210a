//! Pull requests for dbt patches (GitHub REST API, version 2022-11-28): a
//! branch `mend/<proposal id>` from the base branch, the patched
//! `schema.yml` committed on it, and a pull request whose description holds
//! the incident's evidence. Merging it approves the proposal (the control
//! API's `/github/webhook`).
//!
//! Every step is idempotent, so a re-delivered proposal finds the branch,
//! the commit or the pull request already there and goes on.

use base64::Engine as _;
use mend_config::GitHub;
use mend_model::Secret;
use mend_model::events::Proposal;
use serde_json::{Value, json};

/// The branch of a proposal.
pub fn branch(proposal_id: &str) -> String {
    format!("mend/{proposal_id}")
}

/// The proposal a branch name belongs to.
pub fn proposal_of_branch(branch: &str) -> Option<&str> {
    branch.strip_prefix("mend/")
}

/// A GitHub REST client for one repository.
pub struct Client<'a> {
    pub http: &'a reqwest::Client,
    /// `https://api.github.com` (or a test server).
    pub api: &'a str,
    pub token: &'a Secret,
    pub repo: &'a GitHub,
}

impl Client<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/repos/{}{path}", self.api.trim_end_matches('/'), self.repo.repo))
            .bearer_auth(self.token.expose())
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header("User-Agent", "mend")
            .timeout(std::time::Duration::from_secs(30))
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<(u16, Value), String> {
        let response = request.send().await.map_err(|e| format!("GitHub ({what}): {e}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Opens (or finds) the pull request carrying `patch` for `proposal`;
    /// returns its URL.
    pub async fn open(&self, proposal: &Proposal, path: &str, patch: &str) -> Result<String, String> {
        let branch = branch(&proposal.proposal_id);
        let base = &self.repo.base;
        let fail = |what: &str, status: u16, body: &Value| format!("GitHub {what}: {status} {}", body["message"]);
        // 1. The branch, from the base branch's head.
        let (status, head) =
            self.send(self.request(reqwest::Method::GET, &format!("/git/ref/heads/{base}")), "base branch").await?;
        if status != 200 {
            return Err(fail("base branch", status, &head));
        }
        let sha = head["object"]["sha"].as_str().ok_or("GitHub: the base branch has no sha")?;
        let create = json!({"ref": format!("refs/heads/{branch}"), "sha": sha});
        let (status, body) =
            self.send(self.request(reqwest::Method::POST, "/git/refs").json(&create), "create branch").await?;
        if status != 201 && status != 422 {
            return Err(fail("create branch", status, &body)); // 422: it exists (a re-delivery)
        }
        // 2. The patched file, committed on the branch (unless it already is).
        let (status, file) = self
            // The branch name is mend's own (`mend/<uuid>`): nothing to escape.
            .send(self.request(reqwest::Method::GET, &format!("/contents/{path}?ref={branch}")), "file")
            .await?;
        if status != 200 {
            return Err(fail(&format!("file {path}"), status, &file));
        }
        let encoded: String = file["content"].as_str().unwrap_or_default().split_whitespace().collect();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| format!("GitHub file: {e}"))?;
        let current = String::from_utf8(bytes).map_err(|e| format!("GitHub file: {e}"))?;
        match mend_planner::dbt::apply_patch(&current, patch) {
            Ok(patched) => {
                let update = json!({
                    "message": format!("mend: dbt model update for proposal {}", proposal.proposal_id),
                    "content": base64::engine::general_purpose::STANDARD.encode(patched),
                    "sha": file["sha"],
                    "branch": branch,
                });
                let (status, body) = self
                    .send(self.request(reqwest::Method::PUT, &format!("/contents/{path}")).json(&update), "commit")
                    .await?;
                if status != 200 && status != 201 {
                    return Err(fail("commit", status, &body));
                }
            }
            // Applied by an earlier delivery: the branch already has it.
            Err(_) if mend_planner::dbt::apply_patch_reverse(&current, patch).is_ok() => {}
            Err(reason) => return Err(format!("{path} on {base}: {reason}")),
        }
        // 3. The pull request.
        let pull = json!({
            "title": format!("mend: schema drift on {} ({})", proposal.envelope.dataset, changes_summary(proposal)),
            "head": branch,
            "base": base,
            "body": description(proposal),
        });
        let (status, body) =
            self.send(self.request(reqwest::Method::POST, "/pulls").json(&pull), "pull request").await?;
        match status {
            201 => Ok(body["html_url"].as_str().unwrap_or_default().to_owned()),
            422 => Ok(format!("(already open for {branch})")),
            _ => Err(fail("pull request", status, &body)),
        }
    }
}

fn changes_summary(proposal: &Proposal) -> String {
    proposal.changes.iter().map(|c| format!("{} {}", c.kind, c.field)).collect::<Vec<_>>().join(", ")
}

/// The pull request's description: the incident's evidence and the plan.
pub fn description(proposal: &Proposal) -> String {
    let mut text = format!(
        "mend detected schema drift on dataset **{}** (incident `{}`).\n\n\
         Merging this pull request **approves proposal `{}`** (plan hash `{}`): mend then applies the plan and \
         replays the quarantined records. Closing it without merging decides nothing.\n\n### Changes\n",
        proposal.envelope.dataset, proposal.envelope.incident_id, proposal.proposal_id, proposal.plan_hash
    );
    for change in &proposal.changes {
        text.push_str(&format!("- `{}` **{}**", change.kind, change.field));
        if let (Some(from), Some(to)) = (&change.from, &change.to) {
            text.push_str(&format!(" ({from} → {to})"));
        }
        if let Some(confidence) = change.confidence {
            text.push_str(&format!(", confidence {confidence:.2}"));
        }
        text.push('\n');
        for (key, value) in change.evidence.iter().filter(|(k, _)| !k.ends_with("_schema")) {
            text.push_str(&format!("  - {key}: {value}\n"));
        }
    }
    text.push_str("\n### Rules\n");
    for rule in &proposal.rules {
        text.push_str(&format!("- {rule}\n"));
    }
    text.push_str("\n### Plan\n");
    for (number, step) in proposal.steps.iter().enumerate() {
        text.push_str(&format!("{}. [{}] {}\n", number + 1, step.kind, step.description));
        if let Some(sql) = &step.sql {
            text.push_str(&format!("   ```sql\n   {sql}\n   ```\n"));
        }
        if let Some(cost) = &step.cost {
            text.push_str(&format!("   Cost: {cost}\n"));
        }
    }
    if let Some(radius) = &proposal.blast_radius {
        text.push_str(&format!("\n### Downstream in dbt\n{}\n\n", radius.summary()));
        for node in radius.affected() {
            text.push_str(&format!(
                "- **{}** {} `{}`: {}\n",
                node.impact,
                node.kind,
                node.name,
                node.reasons.join("; ")
            ));
        }
    }
    text
}
