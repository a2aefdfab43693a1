//! The route table: every route is declared once, with its documentation, and both the router
//! and `/openapi.json` (OpenAPI 3.0) are built from it — the document cannot miss a route or
//! describe one that does not exist.

use std::sync::Arc;

use axum::routing::MethodRouter;

use super::AppState;

/// Where a parameter goes.
#[derive(Clone, Copy)]
pub enum In {
    Path,
    Query,
    Header,
}

/// One parameter: name, location, schema type, description.
pub struct Param(pub &'static str, pub In, pub &'static str, pub &'static str);

/// One operation of a route.
pub struct Operation {
    pub method: &'static str,
    pub summary: &'static str,
    /// Bearer token required (`false`: public, or authorised by a signed URL).
    pub bearer: bool,
    pub params: Vec<Param>,
    /// JSON request body schema, when the operation takes one.
    pub body: Option<serde_json::Value>,
    /// Content types of a success.
    pub produces: &'static [&'static str],
    /// Error statuses it can answer (all with the error shape).
    pub errors: &'static [u16],
}

pub struct Route {
    pub path: &'static str,
    pub operations: Vec<Operation>,
    pub handler: MethodRouter<Arc<AppState>>,
}

/// The stable error codes, documented in the error schema.
pub const ERROR_CODES: &[&str] = &[
    "token_missing",
    "token_malformed",
    "token_expired",
    "token_not_yet_valid",
    "bad_signature",
    "wrong_audience",
    "wrong_issuer",
    "missing_claim",
    "alg_not_allowed",
    "forbidden_header",
    "unknown_key",
    "missing_kid",
    "forbidden",
    "rate_limited",
    "too_many_failures",
    "busy",
    "timeout",
    "dataset_not_found",
    "route_not_found",
    "bad_query",
    "bad_format",
    "bad_limit",
    "bad_cursor",
    "bad_version",
    "bad_as_of",
    "bad_as_of_time",
    "unknown_column",
    "filter_on_masked_column",
    "bad_search_query",
    "search_not_entitled",
    "search_unavailable",
    "bad_last_event_id",
    "bad_grant",
    "unknown_dataset",
    "grant_not_found",
    "body_too_large",
    "cors_origin_not_allowed",
    "catalog_unavailable",
    "internal",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_PARAMETER_VALUE",
    "bad_file_url",
    "file_url_expired",
];

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad request (see `code`)",
        401 => "Missing or refused bearer token (see `code`)",
        403 => "Not allowed (see `code`)",
        404 => "No such dataset, or no grant on it (indistinguishable)",
        413 => "Body too large",
        416 => "Range not satisfiable",
        429 => "Rate limited (Retry-After)",
        503 => "Busy or unavailable (Retry-After)",
        504 => "Timeout",
        _ => "Error",
    }
}

/// The OpenAPI 3.0 document of `routes`.
pub fn document(routes: &[Route]) -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for route in routes {
        let mut item = serde_json::Map::new();
        for op in &route.operations {
            let parameters: Vec<serde_json::Value> = op
                .params
                .iter()
                .map(|Param(name, place, kind, description)| {
                    serde_json::json!({
                        "name": name,
                        "in": match place { In::Path => "path", In::Query => "query", In::Header => "header" },
                        "required": matches!(place, In::Path),
                        "description": description,
                        "schema": { "type": kind },
                    })
                })
                .collect();
            let mut responses = serde_json::Map::new();
            let content: serde_json::Map<String, serde_json::Value> = op
                .produces
                .iter()
                .map(|c| (c.to_string(), serde_json::json!({})))
                .collect();
            responses.insert(
                "200".into(),
                serde_json::json!({ "description": "Success", "content": content }),
            );
            for status in op.errors {
                responses.insert(
                    status.to_string(),
                    serde_json::json!({
                        "description": status_text(*status),
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                    }),
                );
            }
            let mut operation = serde_json::json!({
                "summary": op.summary,
                "parameters": parameters,
                "responses": responses,
            });
            if op.bearer {
                operation["security"] = serde_json::json!([{ "bearer": [] }]);
            }
            if let Some(body) = &op.body {
                operation["requestBody"] = serde_json::json!({
                    "required": true,
                    "content": { "application/json": { "schema": body } },
                });
            }
            item.insert(op.method.to_string(), operation);
        }
        paths.insert(route.path.to_string(), serde_json::Value::Object(item));
    }
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {
            "title": "marketlake API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Entitled, audited extraction, search, live streams and Delta Sharing over the marketlake Delta tables. Every data response is audited; a dataset without a grant answers 404 like one that does not exist.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Error": {
                    "description": "Every error of the /v1 routes: `{\"error\": {\"code\", \"message\"}}`. Delta Sharing routes answer `{\"errorCode\", \"message\"}` with the same codes, as the protocol asks.",
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": { "type": "string", "enum": ERROR_CODES },
                                "message": { "type": "string" },
                            },
                        },
                        "errorCode": { "type": "string", "enum": ERROR_CODES },
                        "message": { "type": "string" },
                    },
                },
            },
        },
    })
}
