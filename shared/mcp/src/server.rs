//! The MCP server: mend's tools with their input and output schemas and
//! annotations, for any MCP client (Claude Desktop, Claude Code, the MCP
//! Inspector, an agent). Read tools are marked read-only; deciding needs the
//! approver role when the API has tokens (hints are not trusted: the role is
//! checked here).

use std::sync::Arc;
use std::time::Instant;

use mend_config::{Caller, Role};
use mend_model::Verdict;
use mend_model::api::DraftOutcome;
use mend_runtime::Context;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{tool, tool_router};
use serde::Serialize;
use serde_json::Value;

use crate::args::*;
use mend_model::api::PlanReport;

use crate::read::{self, History, Quarantine, Samples, TableDescription};
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

/// MCP tool calls by tool and outcome (`ok`, `error`), for metrics.
#[derive(Debug, Default)]
pub struct ToolCounts(std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>);

impl ToolCounts {
    fn count(&self, tool: &str, ok: bool) {
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry((tool.to_owned(), if ok { "ok" } else { "error" })).or_default() += 1;
    }

    /// Every count so far.
    pub fn snapshot(&self) -> Vec<((String, &'static str), u64)> {
        let counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// mend's MCP server.
#[derive(Clone)]
pub struct McpServer {
    pub(crate) context: Arc<Context>,
    pub(crate) control: Arc<dyn Control>,
    auth: Auth,
    pub(crate) tool_router: ToolRouter<Self>,
    counts: Arc<ToolCounts>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer").field("auth", &self.auth).finish_non_exhaustive()
    }
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
        Self { context, control, auth, tool_router: Self::tool_router(), counts: Arc::default() }
    }

    /// Counts its tool calls in `counts` (shared by the servers of a process).
    pub fn counting(mut self, counts: Arc<ToolCounts>) -> Self {
        self.counts = counts;
        self
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
        self.counts.count(tool, result.is_ok());
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
        name = "blast_radius",
        description = "What an incident's plan does downstream in the dataset's dbt project, read from its \
                       compiled manifest: a verdict per model, snapshot, test, exposure and metric (breaking, \
                       partial, none, or unknown where mend cannot read it, such as a Python model), each with its \
                       reasons, including columns read in joins, filters, grouping and windows.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn blast_radius(
        &self,
        Parameters(args): Parameters<IncidentArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<Downstream>, String> {
        self.blast_radius_as(caller(&context), args).await
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
    ) -> Result<Json<DraftOutcome>, String> {
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
    ) -> Result<Json<Decided>, String> {
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
    ) -> Result<Json<Decided>, String> {
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
                args.status.is_none_or(|s| i.status == s) && args.dataset.as_deref().is_none_or(|d| i.dataset == d)
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
            Ok(IncidentDetail { time_to_heal_seconds: incident.time_to_heal_seconds, incident })
        })
        .await
    }
    pub async fn blast_radius_as(
        &self,
        caller: Option<Caller>,
        args: IncidentArgs,
    ) -> Result<Json<Downstream>, String> {
        self.run("blast_radius", caller.clone(), Role::Viewer, async {
            let incident = self.control.incident(&args.incident_id).await?;
            let Some(proposal_id) = incident.proposal_id.clone() else {
                return Err(format!("incident {} has no plan yet", args.incident_id));
            };
            let Some(blast_radius) = incident.blast_radius else {
                return Err(format!(
                    "the dataset {} names no dbt_manifest in mend.toml, so mend knows no dbt project downstream",
                    incident.dataset
                ));
            };
            Ok(Downstream { incident_id: args.incident_id, proposal_id, summary: blast_radius.summary(), blast_radius })
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
                    (incident.dataset, incident.writer_schema_id.and_then(|w| u32::try_from(w).ok()))
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
    ) -> Result<Json<DraftOutcome>, String> {
        let who = caller.clone();
        let by = who.clone();
        self.run("propose_plan", who, Role::Approver, async {
            self.control.propose(by.as_ref(), &args.incident_id, args.steps, args.rationale).await
        })
        .await
    }
    pub async fn approve_proposal_as(&self, caller: Option<Caller>, args: DecideArgs) -> Result<Json<Decided>, String> {
        self.decide("approve_proposal", caller.clone(), args, Verdict::Approved).await
    }
    pub async fn reject_proposal_as(&self, caller: Option<Caller>, args: DecideArgs) -> Result<Json<Decided>, String> {
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
            "blast_radius" => call!(blast_radius_as),
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
    ) -> Result<Json<Decided>, String> {
        let who = caller.clone();
        self.run(tool, caller, Role::Approver, async {
            let decision = self.control.decide(who.as_ref(), &args.proposal_id, verdict, args.reason).await?;
            Ok(Decided { decision })
        })
        .await
    }
}
