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
    /// The schema (a name under `components/schemas`) of a JSON success body.
    pub response: Option<&'static str>,
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
                .map(|c| {
                    let media = match (op.response, *c == "application/json") {
                        (Some(name), true) => serde_json::json!({
                            "schema": { "$ref": format!("#/components/schemas/{name}") }
                        }),
                        _ => serde_json::json!({}),
                    };
                    (c.to_string(), media)
                })
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
    let mut schemas = response_schemas();
    schemas.insert("Error".into(), error_schema());
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
            "schemas": schemas,
        },
    })
}

fn error_schema() -> serde_json::Value {
    serde_json::json!({
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
    })
}

/// `{"type": "object", "required": [every property], "properties": ...}`.
fn record(properties: serde_json::Value) -> serde_json::Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    serde_json::json!({ "type": "object", "required": required, "properties": properties })
}

fn list_of(item: serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "type": "array", "items": item })
}

fn named(name: &str) -> serde_json::Value {
    serde_json::json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The JSON success bodies, by the names `Operation::response` uses.
fn response_schemas() -> serde_json::Map<String, serde_json::Value> {
    let text = || serde_json::json!({ "type": "string" });
    let nullable = |kind: &str| serde_json::json!({ "type": kind, "nullable": true });
    let texts =
        || serde_json::json!({ "type": "array", "items": { "type": "string" }, "nullable": true });
    let schemas = [
        ("Status", record(serde_json::json!({ "status": text() }))),
        (
            "Dataset",
            record(serde_json::json!({
                "name": text(),
                "layer": text(),
                "description": text(),
                "latest_version": nullable("integer"),
                "row_count": { "type": "integer", "nullable": true,
                               "description": "rows of the whole table; null when the grant filters rows" },
                "columns": list_of(record(serde_json::json!({
                    "name": text(), "type": text(), "nullable": { "type": "boolean" },
                }))),
                "row_filter": list_of(record(serde_json::json!({
                    "symbols": texts(), "venues": texts(),
                }))),
            })),
        ),
        (
            "DatasetList",
            record(serde_json::json!({ "datasets": list_of(named("Dataset")) })),
        ),
        (
            "RowsPage",
            record(serde_json::json!({
                "dataset": text(),
                "version": nullable("integer"),
                "rows": list_of(serde_json::json!({ "type": "object", "description": "one entitled row: its columns" })),
                "row_count": { "type": "integer" },
                "next_cursor": { "type": "string", "nullable": true,
                                 "description": "pass as `cursor` for the next page; null on the last" },
            })),
        ),
        (
            "SearchHit",
            record(serde_json::json!({
                "news_key": text(),
                "headline": text(),
                "body": nullable("string"),
                "link": nullable("string"),
                "publisher": nullable("string"),
                "published_at_ns": nullable("integer"),
                "received_at_ns": { "type": "integer" },
                "language": nullable("string"),
                "tickers": list_of(text()),
                "score": { "type": "number" },
                "headline_snippet": { "type": "string", "description": "HTML: matches in <b>, the rest escaped" },
                "body_snippet": { "type": "string", "description": "HTML: matches in <b>, the rest escaped" },
            })),
        ),
        (
            "SearchResults",
            record(serde_json::json!({
                "total_hits": { "type": "integer" },
                "indexed_version": nullable("integer"),
                "took_ms": { "type": "number" },
                "hits": list_of(named("SearchHit")),
            })),
        ),
        (
            "Grant",
            record(serde_json::json!({
                "grant_id": text(),
                "dataset": text(),
                "principal_kind": { "type": "string", "enum": ["user", "group"] },
                "principal": text(),
                "symbols": texts(),
                "venues": texts(),
                "column_masks": { "type": "object", "additionalProperties": { "type": "string", "enum": ["hide", "hash"] } },
            })),
        ),
        (
            "GrantList",
            record(serde_json::json!({ "grants": list_of(named("Grant")) })),
        ),
        (
            "GrantCreated",
            record(serde_json::json!({ "grant": named("Grant") })),
        ),
        (
            "GrantRevoked",
            record(serde_json::json!({ "revoked": named("Grant") })),
        ),
        (
            "GrantChanges",
            record(serde_json::json!({
                "changes": list_of(record(serde_json::json!({
                    "change_id": text(),
                    "at_ns": { "type": "integer" },
                    "actor": text(),
                    "action": { "type": "string", "enum": ["grant", "revoke"] },
                    "grant_id": text(),
                    "grant": named("Grant"),
                    "request_id": nullable("string"),
                }))),
            })),
        ),
        (
            "SharingShareList",
            record(
                serde_json::json!({ "items": list_of(record(serde_json::json!({ "name": text(), "id": text() }))) }),
            ),
        ),
        (
            "SharingShare",
            record(
                serde_json::json!({ "share": record(serde_json::json!({ "name": text(), "id": text() })) }),
            ),
        ),
        (
            "SharingSchemaList",
            record(
                serde_json::json!({ "items": list_of(record(serde_json::json!({ "name": text(), "share": text() }))) }),
            ),
        ),
        (
            "SharingTableList",
            record(serde_json::json!({
                "items": list_of(record(serde_json::json!({
                    "name": text(), "schema": text(), "share": text(), "shareId": text(), "id": text(),
                }))),
            })),
        ),
    ];
    schemas
        .into_iter()
        .map(|(name, schema)| (name.to_string(), schema))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `value` names a schema in `schemas`.
    fn refs_resolve(value: &serde_json::Value, schemas: &serde_json::Value) -> Vec<String> {
        let mut broken = Vec::new();
        match value {
            serde_json::Value::Object(map) => {
                if let Some(target) = map.get("$ref").and_then(|r| r.as_str()) {
                    let name = target.trim_start_matches("#/components/schemas/");
                    if schemas.get(name).is_none() {
                        broken.push(target.to_string());
                    }
                }
                for child in map.values() {
                    broken.extend(refs_resolve(child, schemas));
                }
            }
            serde_json::Value::Array(items) => {
                for child in items {
                    broken.extend(refs_resolve(child, schemas));
                }
            }
            _ => {}
        }
        broken
    }

    #[test]
    fn every_reference_resolves() {
        let document = document(&[]);
        let schemas = &document["components"]["schemas"];
        assert!(schemas.get("Error").is_some());
        assert_eq!(refs_resolve(schemas, schemas), Vec::<String>::new());
        assert_eq!(
            record(serde_json::json!({"a": {}, "b": {}}))["required"],
            serde_json::json!(["a", "b"])
        );
    }
}
