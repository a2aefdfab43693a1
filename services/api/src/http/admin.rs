//! Grant administration (role `admin`): list, grant, revoke, and the history of changes.
//! Changes apply to the next request of the principals concerned (entitlements are read per
//! request), and each is recorded in `grant_changes` with the admin and the request id, besides
//! the request's own audit event.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;

use super::{
    audit, audit_event, authenticate, json_response, record_audit, AppState, AuditedRequest,
};
use crate::auth::Principal;
use crate::catalog::{new_id, validate_grant, AuditEvent, Grant};
use crate::error::ApiError;

pub const ADMIN_ROLE: &str = "admin";

/// Authenticate and require the admin role; a refusal is audited like any other.
async fn admin(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Principal, ApiError> {
    let principal = authenticate(state, headers, endpoint).await?;
    if !principal.has_role(ADMIN_ROLE) {
        audit(
            state,
            &principal,
            endpoint,
            "refused: forbidden (role admin required)".into(),
            Vec::new(),
            None,
            (403, 0),
            b"",
        )
        .await?;
        return Err(ApiError::forbidden("this route needs the `admin` role"));
    }
    Ok(principal)
}

async fn respond(
    state: &AppState,
    principal: &Principal,
    endpoint: &str,
    rows: usize,
    value: serde_json::Value,
) -> Result<Response, ApiError> {
    let (event, body) = admin_event(principal, endpoint, &new_id(), String::new(), rows, &value);
    record_audit(state, &event).await?;
    Ok(json_response(body, event.request_id))
}

/// `GET /v1/admin/grants`.
pub(super) async fn list_grants(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = "/v1/admin/grants";
    let principal = admin(&state, &headers, endpoint).await?;
    let grants = state
        .catalog
        .list_grants()
        .await
        .map_err(ApiError::internal)?;
    let rows = grants.len();
    respond(
        &state,
        &principal,
        endpoint,
        rows,
        serde_json::json!({ "grants": grants }),
    )
    .await
}

/// `POST /v1/admin/grants` with a grant as JSON.
pub(super) async fn create_grant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<Grant>, JsonRejection>,
) -> Result<Response, ApiError> {
    let endpoint = "/v1/admin/grants";
    let principal = admin(&state, &headers, endpoint).await?;
    let Json(grant) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body exceeds {} bytes (api.max_body_bytes)",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request("bad_grant", e.body_text())
        }
    })?;
    validate_grant(&grant).map_err(|m| ApiError::bad_request("bad_grant", m))?;
    let Some(spec) = state
        .tables
        .iter()
        .find(|s| s.name.to_string() == grant.dataset)
    else {
        return Err(ApiError::bad_request(
            "unknown_dataset",
            format!("no dataset `{}`", grant.dataset),
        ));
    };
    for column in grant.column_masks.keys() {
        if spec.schema.field_with_name(column).is_err() {
            return Err(ApiError::bad_request(
                "bad_grant",
                format!("{} has no column `{column}` to mask", grant.dataset),
            ));
        }
    }
    let request_id = new_id();
    // The grant, its change record and this request's audit event commit together.
    let (created, body) = state
        .catalog
        .grant_audited(&grant, &principal.sub, Some(&request_id), |created| {
            let query = serde_json::json!({ "action": "grant", "grant": created }).to_string();
            Some(admin_event(
                &principal,
                endpoint,
                &request_id,
                query,
                1,
                &serde_json::json!({ "grant": created }),
            ))
        })
        .await
        .map_err(|e| match e {
            crate::catalog::CatalogError::Seed { message, .. } => {
                ApiError::bad_request("bad_grant", message)
            }
            other => ApiError::internal(other),
        })?;
    tracing::info!(admin = %principal.sub, grant = %created.grant_id, dataset = %created.dataset, principal = %created.principal, "grant created");
    Ok(json_response(body, request_id))
}

/// The audit event of an admin request answered with `value` (`rows` items), and the body it
/// hashes.
fn admin_event(
    principal: &Principal,
    endpoint: &str,
    request_id: &str,
    query: String,
    rows: usize,
    value: &serde_json::Value,
) -> (AuditEvent, Vec<u8>) {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let request = AuditedRequest {
        request_id: request_id.to_string(),
        endpoint,
        query,
        entitlements: Vec::new(),
        as_of: None,
    };
    (audit_event(principal, request, (200, rows), &body), body)
}

/// `DELETE /v1/admin/grants/{id}`.
pub(super) async fn revoke_grant(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = "/v1/admin/grants/{id}";
    let principal = admin(&state, &headers, endpoint).await?;
    let request_id = new_id();
    let query = serde_json::json!({ "action": "revoke", "grant_id": id }).to_string();
    let (_, body) = state
        .catalog
        .revoke_audited(&id, &principal.sub, Some(&request_id), |revoked| {
            Some(admin_event(
                &principal,
                endpoint,
                &request_id,
                query,
                1,
                &serde_json::json!({ "revoked": revoked }),
            ))
        })
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "grant_not_found",
                format!("no grant `{id}`"),
            )
        })?;
    tracing::info!(admin = %principal.sub, grant = %id, "grant revoked");
    Ok(json_response(body, request_id))
}

/// `GET /v1/admin/grant-changes`: who granted or revoked what, when.
pub(super) async fn grant_changes(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = "/v1/admin/grant-changes";
    let principal = admin(&state, &headers, endpoint).await?;
    let changes = state
        .catalog
        .grant_changes()
        .await
        .map_err(ApiError::internal)?;
    let rows = changes.len();
    respond(
        &state,
        &principal,
        endpoint,
        rows,
        serde_json::json!({ "changes": changes }),
    )
    .await
}
