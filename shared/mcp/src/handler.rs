//! The MCP protocol side of the server beyond tools: its description,
//! resources (an incident, a dataset's contract) and the prompt that walks
//! a model through an incident.

use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, ListPromptsResult, ListResourceTemplatesResult,
    PaginatedRequestParams, Prompt, PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, ResourceContents, ResourceTemplate, Role as PromptRole, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, tool_handler};
use serde_json::Value;

use crate::read;
use crate::server::McpServer;

/// The prompt that walks a model through an incident.
const DIAGNOSE_PROMPT: &str = "Diagnose mend incident {id} and draft its fix.

1. get_incident: read each change, its evidence and the rules mend applied; note the dataset and the \
writer schema.
2. describe_table: the table's columns and types, and the contract (schema id, field to column mapping).
3. registry_history: what changed between the contract's version and the writer's.
4. sample_records and quarantined_records: what the new records actually carry, and why they do not load.
5. compare_schema with the writer schema if you want mend's own plan for it.

A good plan keeps every record and every existing column: add a nullable column for a new field, map a \
renamed field onto its old column (a mapping step with field and column) rather than renaming the column \
(downstream models read it), widen a type rather than narrow it, never drop a table or a column, touch no \
other table, and end with a replay step. Hand it over with propose_plan, with a rationale a reviewer can \
check against the evidence; it is never applied until a person approves it. If the guardrails refuse it, \
read every reason and try again, or explain why a person must decide.";

/// What a model should do with an incident: which tools to call and what
/// a good plan looks like (the `diagnose_incident` prompt).
pub fn diagnose_prompt(incident_id: &str) -> String {
    DIAGNOSE_PROMPT.replace("{id}", incident_id)
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("mend://incidents/{id}", "incident")
                .with_description("An incident as mend's audit log tells it: changes, evidence, plan, decision, application, drafts, times")
                .with_mime_type("application/json"),
            ResourceTemplate::new("mend://datasets/{name}/contract", "contract")
                .with_description("The Avro schema of a dataset's contract: what its table is known to match")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        let missing = |message: String| ErrorData::resource_not_found(message, None);
        let text = if let Some(id) = uri.strip_prefix("mend://incidents/") {
            let incident = self.control.incident(id).await.map_err(missing)?;
            serde_json::to_string_pretty(&incident).unwrap_or_default()
        } else if let Some(name) = uri.strip_prefix("mend://datasets/").and_then(|r| r.strip_suffix("/contract")) {
            let description = read::describe_table(&self.context, name).await.map_err(missing)?;
            let contract =
                description.contract.ok_or_else(|| missing(format!("dataset {name} has no contract yet")))?;
            let id = u32::try_from(contract.schema_id).unwrap_or_default();
            let schema = self.context.codec.schema(id).await.map_err(|e| missing(e.to_string()))?;
            schema.raw.clone()
        } else {
            return Err(missing(format!(
                "no resource {uri}: mend://incidents/{{id}} or mend://datasets/{{name}}/contract"
            )));
        };
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri)]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut argument = PromptArgument::new("incident_id");
        argument.description = Some("The incident to diagnose (from list_incidents)".into());
        argument.required = Some(true);
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "diagnose_incident",
            Some("Walk through an incident's evidence with mend's tools and draft a fix a person can approve"),
            Some(vec![argument]),
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "diagnose_incident" {
            return Err(ErrorData::invalid_params(format!("no prompt {}: diagnose_incident", request.name), None));
        }
        let id = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("incident_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| ErrorData::invalid_params("diagnose_incident needs incident_id", None))?;
        let text = diagnose_prompt(id);
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(PromptRole::User, text)]).into())
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().enable_prompts().build())
            .with_instructions(
                "mend heals streaming ingestion pipelines when an upstream Avro schema drifts. Start with \
             list_incidents, read one with get_incident, look at the evidence (describe_table, sample_records, \
             registry_history, compare_schema), then approve or reject its proposal.",
            )
    }
}
