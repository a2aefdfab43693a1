//! The HTTP surface. Every data-returning route authenticates the bearer token, looks up the
//! principal's entitlements in the catalog (changes apply on the next request, no restart),
//! applies them to the scan (rows filtered, columns hidden or hashed), and writes an audit event
//! with a SHA-256 of the exact body sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use marketlake_lake::extract::{self, Format};
use marketlake_lake::read::{load_table, read_rows};
use marketlake_lake::{LakeConfig, TableSpec};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{verify, Principal};
use crate::catalog::{new_id, AuditEvent, Catalog, Entitlement};
use crate::config::ApiConfig;
use crate::error::ApiError;

pub struct AppState {
    pub config: ApiConfig,
    pub lake: LakeConfig,
    pub catalog: Catalog,
    /// Every dataset the lake defines (`l2.trades`, ...).
    pub tables: Vec<TableSpec>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/datasets", get(datasets))
        .route("/v1/datasets/{name}/rows", get(rows))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.catalog.ready().await {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "catalog_unavailable",
            "the catalog does not answer",
        )
        .into_response()
    }
}

/// The principal of a request; a refused token is audited (as `-`, with its reason code) before
/// the 401 goes out, so probing with bad tokens leaves a trace.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Principal, ApiError> {
    match principal(state, headers) {
        Ok(principal) => Ok(principal),
        Err(refused) => {
            let anonymous = Principal {
                sub: "-".into(),
                roles: Vec::new(),
                groups: Vec::new(),
            };
            audit(
                state,
                &anonymous,
                endpoint,
                format!("refused: {}", refused.code),
                Vec::new(),
                None,
                (refused.status.as_u16(), 0),
                b"",
            )
            .await?;
            Err(refused)
        }
    }
}

fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("token_missing", "send Authorization: Bearer <JWT>")
    })?;
    let text = value.to_str().map_err(|_| {
        ApiError::unauthorized("token_malformed", "the Authorization header is not text")
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("token_malformed", "use the Bearer scheme"))?;
    verify(token.trim(), &state.config.auth)
}

/// HMAC-SHA256 (RFC 2104) of `value` under `key`, hex: masked values stay joinable, not readable.
pub fn keyed_hash(key: &[u8], value: &str) -> String {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut h = Sha256::new();
    h.update(&inner);
    h.update(value.as_bytes());
    let inner_digest = h.finalize();
    let mut h = Sha256::new();
    h.update(&outer);
    h.update(inner_digest);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    state: &AppState,
    principal: &Principal,
    endpoint: &str,
    query: String,
    entitlements: Vec<String>,
    as_of: Option<String>,
    (status, rows): (u16, usize),
    body: &[u8],
) -> Result<String, ApiError> {
    let event = AuditEvent {
        event_id: new_id(),
        at_ns: marketlake_schemas::now_utc_ns(),
        request_id: new_id(),
        principal: principal.sub.clone(),
        groups: principal.groups.clone(),
        endpoint: endpoint.to_string(),
        query,
        entitlements,
        as_of,
        status,
        rows_returned: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes_returned: i64::try_from(body.len()).unwrap_or(i64::MAX),
        body_sha256: Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    // No audit, no data: a response is only sent once its event is stored.
    state
        .catalog
        .record(&event)
        .await
        .map_err(ApiError::internal)?;
    Ok(event.request_id)
}

async fn entitlements(
    state: &AppState,
    principal: &Principal,
) -> Result<BTreeMap<String, Entitlement>, ApiError> {
    state
        .catalog
        .entitlements(principal)
        .await
        .map_err(ApiError::internal)
}

async fn datasets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, "/v1/datasets").await?;
    let granted = entitlements(&state, &principal).await?;
    let mut list = Vec::new();
    let mut applied = Vec::new();
    for spec in &state.tables {
        let name = spec.name.to_string();
        let Some(entitlement) = granted.get(&name) else {
            continue;
        };
        applied.extend(entitlement.grant_ids.iter().cloned());
        let version = match load_table(&state.lake, spec.name, None).await {
            Ok(table) => table.version(),
            Err(_) => None,
        };
        let columns: Vec<serde_json::Value> = spec
            .schema
            .fields()
            .iter()
            .filter(|f| entitlement.masks.get(f.name().as_str()) != Some(&extract::Mask::Hide))
            .map(|f| {
                let masked = entitlement.masks.contains_key(f.name().as_str());
                serde_json::json!({
                    "name": f.name(),
                    "type": if masked { "Utf8 (keyed hash)".to_string() } else { f.data_type().to_string() },
                    "nullable": f.is_nullable() || masked,
                })
            })
            .collect();
        list.push(serde_json::json!({
            "name": name,
            "layer": spec.name.layer,
            "description": spec.description,
            "latest_version": version,
            "columns": columns,
            "row_filter": entitlement.filter.any_of.iter().map(|g| serde_json::json!({
                "symbols": g.symbols,
                "venues": g.venues,
            })).collect::<Vec<_>>(),
        }));
    }
    let body =
        serde_json::to_vec(&serde_json::json!({ "datasets": list })).map_err(ApiError::internal)?;
    let request_id = audit(
        &state,
        &principal,
        "/v1/datasets",
        String::new(),
        applied,
        None,
        (200, list.len()),
        &body,
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::HeaderName::from_static("x-request-id"), request_id),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsQuery {
    /// Comma-separated symbols.
    pub symbols: Option<String>,
    /// Event time range `[from, to)`, UTC nanoseconds.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Comma-separated columns.
    pub columns: Option<String>,
    pub limit: Option<usize>,
    pub as_of_version: Option<i64>,
    /// json (default), ndjson, csv.
    pub format: Option<String>,
}

fn split(list: &Option<String>) -> Option<Vec<String>> {
    list.as_ref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

async fn rows(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: Result<Query<RowsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = authenticate(&state, &headers, &format!("/v1/datasets/{name}/rows")).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let granted = entitlements(&state, &principal).await?;
    let spec = state.tables.iter().find(|s| s.name.to_string() == name);
    let (Some(spec), Some(entitlement)) = (spec, granted.get(&name)) else {
        // Denials are audited too (probing for datasets leaves a trace), and look the same
        // whether the dataset does not exist or is not granted.
        audit(
            &state,
            &principal,
            &format!("/v1/datasets/{name}/rows"),
            "denied: no such dataset or no grant".into(),
            Vec::new(),
            None,
            (404, 0),
            b"",
        )
        .await?;
        return Err(ApiError::not_found(&name));
    };
    let (format, content_type) = match query.format.as_deref().unwrap_or("json") {
        "json" => (Format::Json, "application/json"),
        "ndjson" => (Format::Ndjson, "application/x-ndjson"),
        "csv" => (Format::Csv, "text/csv"),
        other => {
            return Err(ApiError::bad_request(
                "bad_format",
                format!("format `{other}`: use json, ndjson or csv"),
            ))
        }
    };
    // Filtering on a column the principal may not read would reveal its values.
    let masked = |column: &str| entitlement.masks.contains_key(column);
    if query.symbols.is_some() && masked("symbol") {
        return Err(ApiError::bad_request(
            "filter_on_masked_column",
            "`symbols` filters a column this principal may not read",
        ));
    }
    if (query.from.is_some() || query.to.is_some())
        && [
            "event_time_ns",
            "published_at_ns",
            "window_start_ns",
            "received_at_ns",
        ]
        .iter()
        .any(|c| masked(c))
    {
        return Err(ApiError::bad_request(
            "filter_on_masked_column",
            "`from`/`to` filter a time column this principal may not read",
        ));
    }
    let mut filter = entitlement.filter.clone();
    filter.symbols = split(&query.symbols).map(|asked| asked.into_iter().collect());
    filter.from_ns = query.from;
    filter.to_ns = query.to;
    let limit = query
        .limit
        .unwrap_or(state.config.max_rows)
        .min(state.config.max_rows);
    let columns = split(&query.columns);
    let table = load_table(&state.lake, spec.name, query.as_of_version)
        .await
        .map_err(|e| match query.as_of_version {
            Some(v) => {
                tracing::info!(dataset = %name, version = v, error = %e, "as_of_version not readable");
                ApiError::bad_request("bad_version", format!("version {v} of {name} cannot be read"))
            }
            None => ApiError::not_found(&name),
        })?;
    let key = state.config.mask_key.as_bytes().to_vec();
    let hash = move |value: &str| keyed_hash(&key, value);
    let mut out = Vec::new();
    let mut taken = 0usize;
    for batch in read_rows(&table).await.map_err(ApiError::internal)? {
        if taken >= limit {
            break;
        }
        let kept = extract::apply(
            &batch,
            &filter,
            columns.as_deref(),
            &entitlement.masks,
            &hash,
        )
        .map_err(ApiError::internal)?;
        let kept = kept.slice(0, kept.num_rows().min(limit - taken));
        taken += kept.num_rows();
        out.push(kept);
    }
    let (body, count) = extract::encode(&out, format).map_err(ApiError::internal)?;
    let query_text = serde_json::json!({
        "symbols": filter.symbols, "from": query.from, "to": query.to,
        "columns": columns, "limit": limit, "format": query.format,
    })
    .to_string();
    let request_id = audit(
        &state,
        &principal,
        &format!("/v1/datasets/{name}/rows"),
        query_text,
        entitlement.grant_ids.clone(),
        table.version().map(|v| format!("version {v}")),
        (200, count),
        &body,
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::HeaderName::from_static("x-request-id"), request_id),
        ],
        body,
    )
        .into_response())
}

/// Serve until `shutdown`.
pub async fn serve(
    state: Arc<AppState>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&state.config.listen).await?;
    tracing::info!(listen = %state.config.listen, "API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::keyed_hash;

    #[test]
    fn keyed_hash_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed_hash(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
