//! The control API as an OpenAPI 3.1 document (`GET /api/v1/openapi.json`).
//! Its schemas are generated from the API model's types (`mend_model::api`,
//! through schemars: JSON Schema 2020-12, which OpenAPI 3.1 takes as it
//! is), so the document cannot drift from what the API serves; the paths
//! name each route with its answers.

use mend_model::api::{
    ApiError, DecisionRecorded, DecisionRequest, DraftOutcome, DraftRequest, Health, Incident, RevertRequest,
};
use mend_model::events::Proposal;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};

/// The document.
pub fn document() -> Value {
    let mut s = Schemas(
        SchemaSettings::draft2020_12().with(|s| s.definitions_path = "/components/schemas".into()).into_generator(),
    );
    let unauthorized = "no valid token (when tokens are configured)";
    let not_warm = "the read model is still reading the audit topics (after a start): try again";
    let paths = json!({
        "/health": {"get": {
            "summary": "whether every stage consumes and the read model has caught up",
            "responses": {"200": s.answer::<Health>("healthy"), "503": s.answer::<Health>("not yet, or no longer")}
        }},
        "/incidents": {"get": {
            "summary": "every incident, oldest first",
            "responses": {
                "200": s.answer::<Vec<Incident>>("the incidents"),
                "401": s.error(unauthorized),
                "503": s.error(not_warm),
            }
        }},
        "/incidents/{id}": {"get": {
            "summary": "one incident",
            "parameters": [path_id("the incident's id")],
            "responses": {
                "200": s.answer::<Incident>("the incident"),
                "401": s.error(unauthorized),
                "404": s.error("no such incident"),
                "503": s.error(not_warm),
            }
        }},
        "/incidents/{id}/proposals": {"post": {
            "summary": "hand over a drafted plan: checked against the guardrails, recorded accepted (it waits for \
                        a person) or refused with every reason",
            "parameters": [path_id("the incident's id")],
            "requestBody": s.body::<DraftRequest>(true),
            "responses": {
                "202": s.answer::<DraftOutcome>("recorded, accepted or refused"),
                "400": s.error("no one named who drafts, or the body is not a draft"),
                "401": s.error(unauthorized),
                "403": s.error("the token's role may not draft"),
                "404": s.error("no such incident"),
                "503": s.error("the warehouse or the broker did not answer: nothing recorded"),
            }
        }},
        "/incidents/{id}/revert": {"post": {
            "summary": "undo what the incident's applied plan did to the contract: opens an incident of its own \
                        whose plan (a draft by the caller, waiting for approval) moves the contract back to the one \
                        the plan replaced; columns are kept, and records of the reverted schema are held in \
                        quarantine until a later plan takes them",
            "parameters": [path_id("the incident whose applied plan is reverted")],
            "requestBody": s.body::<RevertRequest>(true),
            "responses": {
                "202": s.answer::<DraftOutcome>("the revert's incident and its plan, recorded"),
                "400": s.error("no one named who asks, or no reason"),
                "401": s.error(unauthorized),
                "403": s.error("the token's role may not draft"),
                "404": s.error("no such incident"),
                "409": s.error("nothing to revert: no applied plan, or the contract has moved on since"),
                "503": s.error("the warehouse, the registry or the broker did not answer: nothing recorded"),
            }
        }},
        "/proposals/{id}": {"get": {
            "summary": "one proposal, as on mend.proposals",
            "parameters": [path_id("the proposal's id")],
            "responses": {
                "200": s.answer::<Proposal>("the proposal"),
                "401": s.error(unauthorized),
                "404": s.error("no such proposal"),
            }
        }},
        "/proposals/{id}/approve": {"post": s.decide("approve")},
        "/proposals/{id}/reject": {"post": s.decide("reject")},
        "/api/v1/openapi.json": {"get": {
            "summary": "this document",
            "responses": {"200": {
                "description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}}
            }}
        }},
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mend control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Incidents, proposals and decisions of a running `mend up`. With tokens configured, every \
                            route but /health needs `Authorization: Bearer <token>`."
        },
        "paths": paths,
        "components": {
            "schemas": s.0.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
    })
}

/// A path parameter `id`.
fn path_id(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": what, "schema": {"type": "string"}})
}

/// The schemas of the paths, each defined once under `components`.
struct Schemas(SchemaGenerator);

impl Schemas {
    fn of<T: JsonSchema>(&mut self) -> Value {
        self.0.subschema_for::<T>().to_value()
    }

    fn answer<T: JsonSchema>(&mut self, what: &str) -> Value {
        json!({"description": what, "content": {"application/json": {"schema": self.of::<T>()}}})
    }

    fn body<T: JsonSchema>(&mut self, required: bool) -> Value {
        json!({"required": required, "content": {"application/json": {"schema": self.of::<T>()}}})
    }

    fn error(&mut self, why: &str) -> Value {
        self.answer::<ApiError>(why)
    }

    fn decide(&mut self, verb: &str) -> Value {
        json!({
            "summary": format!("{verb} a proposal (recorded on mend.decisions with who and why)"),
            "parameters": [path_id("the proposal's id")],
            "requestBody": self.body::<DecisionRequest>(false),
            "responses": {
                "202": self.answer::<DecisionRecorded>("recorded: the broker has it"),
                "400": self.error("no one named who decides, or the body is not a decision"),
                "401": self.error("no valid token (when tokens are configured)"),
                "403": self.error("the token's role may not decide"),
                "404": self.error("no such proposal"),
                "409": self.error("already decided, blocked by policy, or a draft the guardrails refused"),
                "503": self.error("the broker did not take the decision: nothing recorded"),
            }
        })
    }
}
