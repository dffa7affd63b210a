//! The MCP server: mend's tools with their input and output schemas and
//! annotations, for any MCP client (Claude Desktop, Claude Code, the MCP
//! Inspector, an agent). Read tools are marked read-only; deciding needs the
//! approver role when the API has tokens (hints are not trusted: the role is
//! checked here).

use std::sync::Arc;
use std::time::Instant;

use mend_config::{Caller, Role};
use mend_model::events::PlanStep;
use mend_model::{IncidentStatus, Verdict};
use mend_runtime::Context;
use rmcp::ErrorData;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, ListPromptsResult, ListResourceTemplatesResult,
    PaginatedRequestParams, Prompt, PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, ResourceContents, ResourceTemplate, Role as PromptRole, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::read::{self, History, PlanReport, Quarantine, Samples, TableDescription};
use crate::{Control, MAX_OUTPUT, ToolFailure};

/// Whether callers are authenticated (HTTP with API tokens) or trusted
/// (stdio, or HTTP on loopback without tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Every call carries an authenticated caller; roles are enforced.
    Tokens,
    /// No tokens are configured: loopback only, every tool allowed.
    Open,
}

/// mend's MCP server.
#[derive(Clone)]
pub struct McpServer {
    context: Arc<Context>,
    control: Arc<dyn Control>,
    auth: Auth,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer").field("auth", &self.auth).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListIncidentsArgs {
    /// Only incidents in this status.
    pub status: Option<IncidentStatus>,
    /// Only this dataset's incidents.
    pub dataset: Option<String>,
    /// At most this many, newest first (default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Incidents {
    /// As `mend incidents --json` prints them: id, dataset, status, writer
    /// and contract schema ids, changes, evidence, proposal, steps,
    /// decision, application, quarantined count, detected_at, healed_at.
    pub incidents: Vec<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct IncidentArgs {
    /// The incident's id (from `list_incidents`).
    pub incident_id: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct IncidentDetail {
    /// Changes with their evidence, the plan's steps and rules, the
    /// decision and the application, with their times.
    pub incident: Value,
    /// From detection to the healed table, when it is healed.
    pub time_to_heal_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DatasetArgs {
    /// The dataset's name (a `[[dataset]]` of mend.toml).
    pub dataset: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SampleArgs {
    pub dataset: String,
    /// How many records (default 50, at most 200).
    pub limit: Option<i64>,
    /// Only this partition of the source topic.
    pub partition: Option<i32>,
    /// Only records before this offset (to page back).
    pub before_offset: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct QuarantineArgs {
    /// The incident whose records to show...
    pub incident_id: Option<String>,
    /// ...or every quarantined record of a dataset.
    pub dataset: Option<String>,
    /// How many records (default 50, at most 200).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct HistoryArgs {
    /// The dataset whose subject to read...
    pub dataset: Option<String>,
    /// ...or a registry subject by name.
    pub subject: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompareArgs {
    pub dataset: String,
    /// The Avro schema (JSON text) about to be deployed.
    pub schema: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProposeArgs {
    /// The incident the plan fixes.
    pub incident_id: String,
    /// The plan, in order: mend's plan steps.
    pub steps: Vec<PlanStep>,
    /// Why this plan fixes the incident; recorded with it for the person
    /// who approves.
    pub rationale: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DraftResult {
    /// True: the plan passed the guardrails and waits for a person's
    /// approval as `proposal_id` (it is never applied on its own).
    pub accepted: bool,
    pub proposal_id: String,
    pub incident_id: String,
    /// Every reason the plan was refused (empty when accepted).
    pub refused: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DecideArgs {
    /// The proposal (from `get_incident`).
    pub proposal_id: String,
    /// Why; recorded in the audit log.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct DecisionRecorded {
    /// The decision event written to `mend.decisions`: its id, the
    /// proposal, the outcome, who decided and the plan hash.
    pub decision: Value,
}

/// The authenticated caller of an HTTP request, put there by the control
/// API's authentication.
fn caller(context: &RequestContext<RoleServer>) -> Option<Caller> {
    context.extensions.get::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Caller>().cloned())
}

#[tool_router]
impl McpServer {
    /// A server over `context`, reading incidents and recording decisions
    /// through `control`.
    pub fn new(context: Arc<Context>, control: Arc<dyn Control>, auth: Auth) -> Self {
        Self { context, control, auth, tool_router: Self::tool_router() }
    }

    /// Checks `caller` may use a tool needing `role`, logs the call and
    /// bounds its output.
    async fn run<T: Serialize>(
        &self,
        tool: &'static str,
        caller: Option<Caller>,
        role: Role,
        call: impl Future<Output = Result<T, ToolFailure>>,
    ) -> Result<Json<T>, ToolFailure> {
        let started = Instant::now();
        let who = caller.as_ref().map_or("-", |c| c.name.as_str()).to_owned();
        if self.auth == Auth::Tokens {
            match &caller {
                Some(caller) if caller.role >= role => {}
                Some(caller) => {
                    tracing::warn!(tool, caller = %who, "MCP tool refused: role");
                    return Err(format!(
                        "{} is a {:?} and {tool} needs the {role:?} role; ask an approver",
                        caller.name, caller.role
                    )
                    .to_lowercase());
                }
                None => return Err("authentication required: send Authorization: Bearer <token>".into()),
            }
        }
        let result = call.await.and_then(|value| {
            let size = serde_json::to_vec(&value).map_or(0, |v| v.len());
            if size > MAX_OUTPUT {
                Err(format!(
                    "the answer is {} KiB, more than the {} KiB a tool returns: narrow the call (a smaller limit, one \
                     partition, one dataset)",
                    size >> 10,
                    MAX_OUTPUT >> 10
                ))
            } else {
                Ok(value)
            }
        });
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => tracing::info!(tool, caller = %who, millis, "MCP tool call"),
            Err(error) => tracing::info!(tool, caller = %who, millis, %error, "MCP tool call failed"),
        }
        result.map(Json)
    }

    #[tool(
        name = "list_incidents",
        description = "Incidents mend knows of (schema drift on a dataset), newest first, with their status, \
                       changes, proposal and outcome. Filter by status or dataset.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_incidents(
        &self,
        Parameters(args): Parameters<ListIncidentsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Incidents>, String> {
        self.list_incidents_as(caller(&context), args).await
    }

    #[tool(
        name = "get_incident",
        description = "One incident in full: each change with its evidence, the plan's steps and rules, the \
                       decision and who made it, the application (replayed, loaded, still quarantined) and the \
                       time to heal.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_incident(
        &self,
        Parameters(args): Parameters<IncidentArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<IncidentDetail>, String> {
        self.get_incident_as(caller(&context), args).await
    }

    #[tool(
        name = "describe_table",
        description = "A dataset's destination table: its columns (name, SQL type, nullable) from the database \
                       catalog, its row count, and the contract (registry schema id and version, field to column \
                       mapping) the table is known to match.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn describe_table(
        &self,
        Parameters(args): Parameters<DatasetArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<TableDescription>, String> {
        self.describe_table_as(caller(&context), args).await
    }

    #[tool(
        name = "sample_records",
        description = "The latest records of a dataset's source topic, decoded to JSON with their writer schema, \
                       each with its partition and offset (default 50, at most 200; page back with before_offset).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn sample_records(
        &self,
        Parameters(args): Parameters<SampleArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Samples>, String> {
        self.sample_records_as(caller(&context), args).await
    }

    #[tool(
        name = "quarantined_records",
        description = "Records the loader could not load, for an incident (its dataset and writer schema) or a \
                       whole dataset: decoded where possible, each with its partition, offset, writer schema, and \
                       why it does not load under the contract in force (reason kind and reason).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn quarantined_records(
        &self,
        Parameters(args): Parameters<QuarantineArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Quarantine>, String> {
        self.quarantined_records_as(caller(&context), args).await
    }

    #[tool(
        name = "registry_history",
        description = "Every version of a dataset's registry subject (or a subject by name) with its schema id and \
                       the field-level changes from the version before.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn registry_history(
        &self,
        Parameters(args): Parameters<HistoryArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<History>, String> {
        self.registry_history_as(caller(&context), args).await
    }

    #[tool(
        name = "compare_schema",
        description = "What mend would do if this Avro schema arrived on the dataset now, changing nothing: every \
                       change classified with its evidence and the rule that decided it, the plan's steps and the \
                       decision (auto, approve or block). The same as `mend plan --json`.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn compare_schema(
        &self,
        Parameters(args): Parameters<CompareArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<PlanReport>, String> {
        self.compare_schema_as(caller(&context), args).await
    }

    #[tool(
        name = "propose_plan",
        description = "Hand mend a drafted fix for an incident: ordered steps (ddl with sql on the dataset's own \
                       table, mapping of a field onto a column, dbt_patch, replay) and the rationale. It passes the \
                       same guardrails as any plan (each statement parsed; only adding a column, widening a type, \
                       dropping NOT NULL or renaming a column of that table; a dry run rolled back) and is never \
                       applied on its own: an accepted draft waits for a person's approval. Refused drafts come \
                       back with every reason. Both are recorded in the audit log. Needs the approver role.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn propose_plan(
        &self,
        Parameters(args): Parameters<ProposeArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DraftResult>, String> {
        self.propose_plan_as(caller(&context), args).await
    }

    #[tool(
        name = "approve_proposal",
        description = "Approve a proposal: its plan is applied (through the guardrails) and the incident's \
                       quarantined records are replayed. Needs the approver role; recorded with who approved.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn approve_proposal(
        &self,
        Parameters(args): Parameters<DecideArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DecisionRecorded>, String> {
        self.approve_proposal_as(caller(&context), args).await
    }

    #[tool(
        name = "reject_proposal",
        description = "Reject a proposal: nothing is applied and its records stay quarantined. Needs the approver \
                       role; recorded with who rejected and why.",
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    async fn reject_proposal(
        &self,
        Parameters(args): Parameters<DecideArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DecisionRecorded>, String> {
        self.reject_proposal_as(caller(&context), args).await
    }
}

/// The same tools, called in process (the supervisor's tool-use loop):
/// `name` and `arguments` as a model sends them.
impl McpServer {
    pub async fn list_incidents_as(
        &self,
        caller: Option<Caller>,
        args: ListIncidentsArgs,
    ) -> Result<Json<Incidents>, String> {
        self.run("list_incidents", caller.clone(), Role::Viewer, async {
            let mut incidents = self.control.incidents().await?;
            incidents.retain(|i| {
                args.status.is_none_or(|s| i["status"] == s.as_str())
                    && args.dataset.as_deref().is_none_or(|d| i["dataset"] == d)
            });
            incidents.reverse();
            incidents.truncate(usize::try_from(args.limit.unwrap_or(50)).unwrap_or(0));
            Ok(Incidents { incidents })
        })
        .await
    }
    pub async fn get_incident_as(
        &self,
        caller: Option<Caller>,
        args: IncidentArgs,
    ) -> Result<Json<IncidentDetail>, String> {
        self.run("get_incident", caller.clone(), Role::Viewer, async {
            let incident = self.control.incident(&args.incident_id).await?;
            let time_to_heal_seconds = match (incident["detected_at"].as_i64(), incident["healed_at"].as_i64()) {
                (Some(detected), Some(healed)) => Some((healed - detected) as f64 / 1000.0),
                _ => None,
            };
            Ok(IncidentDetail { incident, time_to_heal_seconds })
        })
        .await
    }
    pub async fn describe_table_as(
        &self,
        caller: Option<Caller>,
        args: DatasetArgs,
    ) -> Result<Json<TableDescription>, String> {
        self.run("describe_table", caller.clone(), Role::Viewer, read::describe_table(&self.context, &args.dataset))
            .await
    }
    pub async fn sample_records_as(&self, caller: Option<Caller>, args: SampleArgs) -> Result<Json<Samples>, String> {
        let call = read::sample_records(&self.context, &args.dataset, args.limit, args.partition, args.before_offset);
        self.run("sample_records", caller.clone(), Role::Viewer, call).await
    }
    pub async fn quarantined_records_as(
        &self,
        caller: Option<Caller>,
        args: QuarantineArgs,
    ) -> Result<Json<Quarantine>, String> {
        self.run("quarantined_records", caller.clone(), Role::Viewer, async {
            let (dataset, writer) = match (&args.incident_id, &args.dataset) {
                (Some(id), _) => {
                    let incident = self.control.incident(id).await?;
                    let dataset = incident["dataset"].as_str().unwrap_or_default().to_owned();
                    let writer = incident["writer_schema_id"].as_u64().and_then(|w| u32::try_from(w).ok());
                    (dataset, writer)
                }
                (None, Some(dataset)) => (dataset.clone(), None),
                (None, None) => return Err("name an `incident_id` or a `dataset`".to_owned()),
            };
            read::quarantined_records(&self.context, &dataset, writer, args.limit).await
        })
        .await
    }
    pub async fn registry_history_as(
        &self,
        caller: Option<Caller>,
        args: HistoryArgs,
    ) -> Result<Json<History>, String> {
        let call = read::registry_history(&self.context, args.dataset.as_deref(), args.subject.as_deref());
        self.run("registry_history", caller.clone(), Role::Viewer, call).await
    }
    pub async fn compare_schema_as(
        &self,
        caller: Option<Caller>,
        args: CompareArgs,
    ) -> Result<Json<PlanReport>, String> {
        let call = read::compare_schema(&self.context, &args.dataset, &args.schema);
        self.run("compare_schema", caller.clone(), Role::Viewer, call).await
    }
    pub async fn propose_plan_as(
        &self,
        caller: Option<Caller>,
        args: ProposeArgs,
    ) -> Result<Json<DraftResult>, String> {
        let who = caller.clone();
        let by = who.clone();
        self.run("propose_plan", who, Role::Approver, async {
            let outcome = self.control.propose(by.as_ref(), &args.incident_id, args.steps, args.rationale).await?;
            serde_json::from_value(outcome).map_err(|e| format!("unexpected answer from the control API: {e}"))
        })
        .await
    }
    pub async fn approve_proposal_as(
        &self,
        caller: Option<Caller>,
        args: DecideArgs,
    ) -> Result<Json<DecisionRecorded>, String> {
        self.decide("approve_proposal", caller.clone(), args, Verdict::Approved).await
    }
    pub async fn reject_proposal_as(
        &self,
        caller: Option<Caller>,
        args: DecideArgs,
    ) -> Result<Json<DecisionRecorded>, String> {
        self.decide("reject_proposal", caller.clone(), args, Verdict::Rejected).await
    }

    /// The tools as MCP lists them: name, description, input and output
    /// schemas, annotations.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }

    /// Calls tool `name` with `arguments` as `caller`; Err is what the
    /// tool says went wrong (an unknown tool, invalid input, a refusal).
    pub async fn invoke(&self, name: &str, arguments: Value, caller: Option<Caller>) -> Result<Value, String> {
        fn parse<A: serde::de::DeserializeOwned>(tool: &str, arguments: Value) -> Result<A, String> {
            serde_json::from_value(arguments).map_err(|e| format!("invalid input for {tool}: {e}"))
        }
        macro_rules! call {
            ($method:ident) => {
                self.$method(caller, parse(name, arguments)?)
                    .await
                    .map(|Json(value)| serde_json::to_value(value).unwrap_or_default())
            };
        }
        match name {
            "list_incidents" => call!(list_incidents_as),
            "get_incident" => call!(get_incident_as),
            "describe_table" => call!(describe_table_as),
            "sample_records" => call!(sample_records_as),
            "quarantined_records" => call!(quarantined_records_as),
            "registry_history" => call!(registry_history_as),
            "compare_schema" => call!(compare_schema_as),
            "propose_plan" => call!(propose_plan_as),
            "approve_proposal" => call!(approve_proposal_as),
            "reject_proposal" => call!(reject_proposal_as),
            other => {
                let known: Vec<String> = self.tools().into_iter().map(|t| t.name.to_string()).collect();
                Err(format!("no tool {other}; the tools are: {}", known.join(", ")))
            }
        }
    }
}

impl McpServer {
    async fn decide(
        &self,
        tool: &'static str,
        caller: Option<Caller>,
        args: DecideArgs,
        verdict: Verdict,
    ) -> Result<Json<DecisionRecorded>, String> {
        let who = caller.clone();
        self.run(tool, caller, Role::Approver, async {
            let decision = self.control.decide(who.as_ref(), &args.proposal_id, verdict, args.reason).await?;
            Ok(DecisionRecorded { decision })
        })
        .await
    }
}

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
