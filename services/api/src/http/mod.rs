//! The HTTP surface. Every data-returning route authenticates the bearer token, looks up the
//! principal's entitlements in the catalog (changes apply on the next request, no restart),
//! applies them to the scan (rows filtered, columns hidden or hashed), and writes an audit event
//! before the first byte, completed with the SHA-256 of the exact body sent.
//!
//! - [`rows`]: `/v1/datasets` and `/v1/datasets/{name}/rows` (streamed extraction).
//! - [`admin`]: `/v1/admin/grants` (role `admin`): grants changed without a restart, audited.
//! - [`stream`]: `/v1/stream/{name}`, Server-Sent Events of new rows, resumable.
//! - [`sharing`]: the open Delta Sharing protocol under `/delta-sharing/`, entitled.
//! - [`search`]: `/v1/search/news` (tantivy, entitlement as a structured clause).
//! - [`openapi`]: the route table the router and `/openapi.json` are both built from.
//! - [`ops`]: request metrics, per-principal rate limits, timeouts, CORS, `/metrics`.

mod admin;
mod openapi;
mod ops;
mod predicate_hints;
mod rows;
mod search;
pub mod sharing;
mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use marketlake_lake::{LakeConfig, TableSpec};
use sha2::{Digest, Sha256};

use crate::auth::{Principal, Verifier};
use crate::catalog::{new_id, AuditEvent, Catalog, Entitlement};
use crate::config::ApiConfig;
use crate::error::ApiError;
pub use ops::Metrics;

pub struct AppState {
    pub config: ApiConfig,
    pub lake: LakeConfig,
    pub catalog: Catalog,
    /// Every dataset the lake defines (`l2.trades`, ...).
    pub tables: Vec<TableSpec>,
    pub metrics: Metrics,
    /// Hashes masked column values under `api.mask_key`.
    pub masker: KeyedHasher,
    /// Each table's latest version, refreshed per request from the new log entries only.
    pub snapshots: Arc<marketlake_lake::read::LatestTables>,
    /// Parsed footers of data files read before (`api.footer_cache_mb`).
    pub footers: Arc<marketlake_lake::footers::FooterCache>,
    verifier: Verifier,
    /// The news index, when search is enabled.
    search: Option<marketlake_search::NewsReader>,
    /// Scans served at once (`api.max_concurrent_scans`).
    scans: Arc<tokio::sync::Semaphore>,
    /// Live streams open at once (`api.max_streams`): they last long, so they do not take
    /// extraction slots.
    streams: Arc<tokio::sync::Semaphore>,
    limiter: ops::RateLimiter,
    /// Refused tokens per client address (`api.auth_failures_per_minute`).
    failures: ops::RateLimiter,
}

impl AppState {
    pub fn new(
        config: ApiConfig,
        lake: LakeConfig,
        catalog: Catalog,
        tables: Vec<TableSpec>,
        verifier: Verifier,
        search: Option<marketlake_search::NewsReader>,
    ) -> AppState {
        AppState {
            masker: KeyedHasher::new(config.mask_key.as_bytes()),
            snapshots: Arc::default(),
            footers: Arc::new(marketlake_lake::footers::FooterCache::new(
                config.footer_cache_mb.saturating_mul(1024 * 1024),
            )),
            verifier,
            search,
            scans: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_scans)),
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
            limiter: ops::RateLimiter::new(config.rate_limit_per_minute, config.rate_limit_burst),
            failures: ops::RateLimiter::new(
                config.auth_failures_per_minute,
                config.auth_failures_per_minute,
            ),
            metrics: Metrics::default(),
            config,
            lake,
            catalog,
            tables,
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    let routes = routes(&state);
    let document = Arc::new(openapi::document(&routes));
    for route in routes {
        router = router.route(route.path, route.handler);
    }
    router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json((*document).clone()) }
            }),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::around_request,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .with_state(state)
}

/// Every route, its handler and its documentation (the router and `/openapi.json` are both
/// built from this table).
fn routes(state: &AppState) -> Vec<openapi::Route> {
    use openapi::{In, Operation, Param, Route};
    const AUTH: &[u16] = &[401, 429];
    const DATA: &[u16] = &[400, 401, 404, 429, 503, 504];
    const ADMIN: &[u16] = &[400, 401, 403, 404, 413, 429];
    const SHARING: &[u16] = &[400, 401, 404, 429];
    let op = |method, summary, bearer, params, produces, errors| Operation {
        method,
        summary,
        bearer,
        params,
        body: None,
        produces,
        response: None,
        errors,
    };
    // A JSON success body described by the named schema.
    let answers = |response: &'static str, operation: Operation| Operation {
        response: Some(response),
        ..operation
    };
    let dataset = || Param("name", In::Path, "string", "dataset, e.g. l2.trades");
    let mut routes = vec![
        Route {
            path: "/health",
            operations: vec![answers("Status", op("get", "Liveness", false, vec![], &["application/json"], &[]))],
            handler: get(health),
        },
        Route {
            path: "/ready",
            operations: vec![answers("Status", op("get", "Readiness (the catalog answers)", false, vec![], &["application/json"], &[503]))],
            handler: get(ready),
        },
        Route {
            path: "/metrics",
            operations: vec![op("get", "Prometheus metrics (counts, never data)", false, vec![], &["text/plain"], &[])],
            handler: get(ops::metrics),
        },
        Route {
            path: "/v1/datasets",
            operations: vec![answers("DatasetList", op("get", "Datasets this principal may read: layer, columns (masks marked), row filter, row count, latest version", true, vec![], &["application/json"], AUTH))],
            handler: get(rows::datasets),
        },
        Route {
            path: "/v1/datasets/{name}/rows",
            operations: vec![answers("RowsPage", op(
                "get",
                "Entitled rows, streamed; JSON pages carry next_cursor",
                true,
                vec![
                    dataset(),
                    Param("symbols", In::Query, "string", "comma-separated symbols (narrows the grant)"),
                    Param("from", In::Query, "integer", "event time from, UTC ns (inclusive); l2.news: published time, else received time"),
                    Param("to", In::Query, "integer", "event time to, UTC ns (exclusive)"),
                    Param("columns", In::Query, "string", "comma-separated columns"),
                    Param("limit", In::Query, "integer", "most rows (JSON: at most api.max_rows)"),
                    Param("cursor", In::Query, "string", "next_cursor of the previous JSON page"),
                    Param("as_of_version", In::Query, "integer", "Delta version to read"),
                    Param("as_of_time", In::Query, "string", "RFC 3339 instant or UTC ns: the version current then"),
                    Param("format", In::Query, "string", "json (default), ndjson, csv, arrow, parquet"),
                    Param("dictionary", In::Query, "boolean", "arrow and parquet: low-cardinality text columns (symbol, venue, account, ...) as dictionaries, as stored; fewer bytes, same values"),
                ],
                &["application/json", "application/x-ndjson", "text/csv", "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet"],
                DATA,
            ))],
            handler: get(rows::rows),
        },
        Route {
            path: "/v1/search/news",
            operations: vec![answers("SearchResults", op(
                "get",
                "Full-text news search, ranked, with snippets; entitled by the grants on l2.news",
                true,
                vec![
                    Param("q", In::Query, "string", "words, \"phrases\", AND/OR/NOT, -word"),
                    Param("symbols", In::Query, "string", "comma-separated tickers"),
                    Param("from", In::Query, "integer", "published time from, UTC ns"),
                    Param("to", In::Query, "integer", "published time to, UTC ns"),
                    Param("limit", In::Query, "integer", "hits per page (at most 1000)"),
                    Param("offset", In::Query, "integer", "hits to skip"),
                    Param("fuzzy", In::Query, "boolean", "allow one typo per word"),
                ],
                &["application/json"],
                &[400, 401, 403, 404, 429, 503],
            ))],
            handler: get(search::search_news),
        },
        Route {
            path: "/v1/stream/{name}",
            operations: vec![op(
                "get",
                "Server-Sent Events of new rows as commits land; resumable with Last-Event-ID",
                true,
                vec![
                    dataset(),
                    Param("symbols", In::Query, "string", "comma-separated symbols"),
                    Param("columns", In::Query, "string", "comma-separated columns"),
                    Param("from_version", In::Query, "integer", "start after this version (default: the latest)"),
                    Param("Last-Event-ID", In::Header, "string", "resume after this event id (<version>.<chunk>)"),
                ],
                &["text/event-stream"],
                DATA,
            )],
            handler: get(stream::stream),
        },
        Route {
            path: "/v1/admin/grants",
            operations: vec![
                answers("GrantList", op("get", "Every grant (role admin)", true, vec![], &["application/json"], ADMIN)),
                Operation {
                    body: Some(serde_json::json!({
                        "type": "object",
                        "required": ["dataset", "principal_kind", "principal"],
                        "properties": {
                            "dataset": { "type": "string" },
                            "principal_kind": { "type": "string", "enum": ["user", "group"] },
                            "principal": { "type": "string" },
                            "symbols": { "type": "array", "items": { "type": "string" } },
                            "venues": { "type": "array", "items": { "type": "string" } },
                            "column_masks": { "type": "object", "additionalProperties": { "type": "string", "enum": ["hide", "hash"] } },
                        },
                    })),
                    ..answers("GrantCreated", op("post", "Grant a dataset to a user or group (role admin); effective at the next request", true, vec![], &["application/json"], ADMIN))
                },
            ],
            handler: get(admin::list_grants).post(admin::create_grant),
        },
        Route {
            path: "/v1/admin/grants/{id}",
            operations: vec![answers("GrantRevoked", op("delete", "Revoke a grant (role admin)", true, vec![Param("id", In::Path, "string", "grant id")], &["application/json"], ADMIN))],
            handler: delete(admin::revoke_grant),
        },
        Route {
            path: "/v1/admin/grant-changes",
            operations: vec![answers("GrantChanges", op("get", "Who granted or revoked what, when (role admin)", true, vec![], &["application/json"], ADMIN))],
            handler: get(admin::grant_changes),
        },
    ];
    if state.config.sharing.enabled {
        let share = || Param("share", In::Path, "string", "share (marketlake)");
        let schema = || Param("schema", In::Path, "string", "schema (a layer: l1, l2, l3)");
        let table = || Param("table", In::Path, "string", "table, e.g. trades");
        routes.extend([
            Route {
                path: "/delta-sharing/shares",
                operations: vec![answers("SharingShareList", op("get", "Delta Sharing: list shares", true, vec![], &["application/json"], SHARING))],
                handler: get(sharing::list_shares),
            },
            Route {
                path: "/delta-sharing/shares/{share}",
                operations: vec![answers("SharingShare", op("get", "Delta Sharing: get a share", true, vec![share()], &["application/json"], SHARING))],
                handler: get(sharing::get_share),
            },
            Route {
                path: "/delta-sharing/shares/{share}/schemas",
                operations: vec![answers("SharingSchemaList", op("get", "Delta Sharing: schemas with a shared table", true, vec![share()], &["application/json"], SHARING))],
                handler: get(sharing::list_schemas),
            },
            Route {
                path: "/delta-sharing/shares/{share}/schemas/{schema}/tables",
                operations: vec![answers("SharingTableList", op("get", "Delta Sharing: tables of a schema", true, vec![share(), schema()], &["application/json"], SHARING))],
                handler: get(sharing::list_tables),
            },
            Route {
                path: "/delta-sharing/shares/{share}/all-tables",
                operations: vec![answers("SharingTableList", op("get", "Delta Sharing: every table shared with the principal", true, vec![share()], &["application/json"], SHARING))],
                handler: get(sharing::all_tables),
            },
            Route {
                path: "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/version",
                operations: vec![op("get", "Delta Sharing: table version (delta-table-version header): the latest, or the first committed at or after startingTimestamp", true, vec![share(), schema(), table(), Param("startingTimestamp", In::Query, "string", "RFC 3339: the first version committed at or after it")], &["text/plain"], SHARING)],
                handler: get(sharing::table_version),
            },
            Route {
                path: "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/metadata",
                operations: vec![op("get", "Delta Sharing: protocol and metadata (entitled schema)", true, vec![share(), schema(), table()], &["application/x-ndjson"], SHARING)],
                handler: get(sharing::table_metadata),
            },
            Route {
                path: "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query",
                operations: vec![Operation {
                    body: Some(serde_json::json!({
                        "type": "object",
                        "properties": {
                            "version": { "type": "integer" },
                            "timestamp": { "type": "string" },
                            "limitHint": { "type": "integer" },
                            "predicateHints": { "type": "array", "items": { "type": "string" } },
                            "jsonPredicateHints": { "type": "string" },
                            "startingVersion": { "type": "integer", "description": "streaming: the data change files since this version, as /changes lists them, with historical metadata" },
                            "endingVersion": { "type": "integer", "description": "with startingVersion: the last version (default the latest)" },
                        },
                    })),
                    ..op("post", "Delta Sharing: files of a version, signed URLs (entitled files for filtered or masked grants); with startingVersion, the data change files since it", true, vec![share(), schema(), table()], &["application/x-ndjson"], SHARING)
                }],
                handler: axum::routing::post(sharing::table_query),
            },
            Route {
                path: "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/changes",
                operations: vec![op(
                    "get",
                    "Delta Sharing: change data feed; the tables are append-only, so every change is an insert (appended files with their commit version and timestamp; compactions list nothing)",
                    true,
                    vec![
                        share(),
                        schema(),
                        table(),
                        Param("startingVersion", In::Query, "integer", "first version (inclusive); or startingTimestamp"),
                        Param("startingTimestamp", In::Query, "string", "RFC 3339: from the first version committed at or after it"),
                        Param("endingVersion", In::Query, "integer", "last version (inclusive; default the latest)"),
                        Param("endingTimestamp", In::Query, "string", "RFC 3339: up to the version current then"),
                        Param("includeHistoricalMetadata", In::Query, "boolean", "also a metaData line (with its version) for each version in the range that changed the table's metadata"),
                    ],
                    &["application/x-ndjson"],
                    SHARING,
                )],
                handler: get(sharing::table_changes),
            },
            Route {
                path: "/delta-sharing/files/{token}",
                operations: vec![op("get", "A signed, expiring file URL (HEAD and byte ranges)", false, vec![Param("token", In::Path, "string", "signed grant"), Param("Range", In::Header, "string", "bytes=a-b")], &["application/octet-stream"], &[403, 404, 416])],
                handler: get(sharing::file),
            },
        ]);
    }
    routes
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route; see /openapi.json",
    )
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

/// The principal of a request; a refused token (or a principal over its rate limit) is audited
/// (as `-` or the principal, with the reason code) before the error goes out, so probing leaves
/// a trace.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<Principal, ApiError> {
    let refused = match principal(state, headers).await {
        Ok(principal) => match state.limiter.check(&principal.sub) {
            Ok(()) => return Ok(principal),
            Err(retry_after) => (principal, ApiError::rate_limited(retry_after)),
        },
        Err(refused) => (
            Principal {
                sub: "-".into(),
                roles: Vec::new(),
                groups: Vec::new(),
                expires_at: None,
            },
            refused,
        ),
    };
    let (who, error) = refused;
    // A refusal sends no data: if its audit cannot be stored, the refusal still stands (a 401
    // or 429, never a 500 that would tell a prober something else).
    if let Err(e) = audit(
        state,
        &who,
        endpoint,
        format!("refused: {}", error.code),
        Vec::new(),
        None,
        (error.status.as_u16(), 0),
        b"",
    )
    .await
    {
        tracing::error!(code = error.code, error = %e.message, "a refusal could not be audited");
    }
    Err(error)
}

async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    state.verifier.verify(bearer(headers)?).await
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
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
    Ok(token.trim())
}

/// HMAC-SHA256 (RFC 2104) of `value` under `key`, hex: masked values stay joinable, not readable.
pub fn keyed_hash(key: &[u8], value: &str) -> String {
    KeyedHasher::new(key).hash(value)
}

/// HMAC-SHA256 under one key, with the key's padded blocks absorbed once: masking a column
/// hashes every row, and re-deriving the pads per value cost more than the hash itself.
#[derive(Clone)]
pub struct KeyedHasher {
    inner: Sha256,
    outer: Sha256,
}

impl KeyedHasher {
    pub fn new(key: &[u8]) -> KeyedHasher {
        const BLOCK: usize = 64;
        let mut k = if key.len() > BLOCK {
            Sha256::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(BLOCK, 0);
        let pad = |byte: u8| {
            let block: Vec<u8> = k.iter().map(|b| b ^ byte).collect();
            let mut h = Sha256::new();
            h.update(&block);
            h
        };
        KeyedHasher {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// The hex HMAC of `value`.
    pub fn hash(&self, value: &str) -> String {
        let mut h = self.inner.clone();
        h.update(value.as_bytes());
        let inner_digest = h.finalize();
        let mut h = self.outer.clone();
        h.update(inner_digest);
        hex(&h.finalize())
    }
}

/// Lower-case hex, without a formatter call per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Record an audit event for a response sent in one piece; returns its request id.
#[allow(clippy::too_many_arguments)]
async fn audit(
    state: &AppState,
    principal: &Principal,
    endpoint: &str,
    query: String,
    entitlements: Vec<String>,
    as_of: Option<String>,
    status_rows: (u16, usize),
    body: &[u8],
) -> Result<String, ApiError> {
    let request = AuditedRequest {
        request_id: new_id(),
        endpoint,
        query,
        entitlements,
        as_of,
    };
    audit_as(state, principal, request, status_rows, body).await
}

/// What an audit event says about the request itself.
struct AuditedRequest<'a> {
    request_id: String,
    endpoint: &'a str,
    query: String,
    entitlements: Vec<String>,
    as_of: Option<String>,
}

/// The audit event of a request answered with `body`.
fn audit_event(
    principal: &Principal,
    request: AuditedRequest<'_>,
    (status, rows): (u16, usize),
    body: &[u8],
) -> AuditEvent {
    let AuditedRequest {
        request_id,
        endpoint,
        query,
        entitlements,
        as_of,
    } = request;
    AuditEvent {
        event_id: new_id(),
        at_ns: marketlake_schemas::now_utc_ns(),
        request_id,
        principal: principal.sub.clone(),
        groups: principal.groups.clone(),
        endpoint: endpoint.to_string(),
        query,
        entitlements,
        as_of,
        status,
        rows_returned: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes_returned: i64::try_from(body.len()).unwrap_or(i64::MAX),
        body_sha256: hex(&Sha256::digest(body)),
        outcome: "complete".into(),
    }
}

/// Record an audit event under a request id chosen by the caller (one that other records,
/// such as a grant change, refer to).
async fn audit_as(
    state: &AppState,
    principal: &Principal,
    request: AuditedRequest<'_>,
    status_rows: (u16, usize),
    body: &[u8],
) -> Result<String, ApiError> {
    let event = audit_event(principal, request, status_rows, body);
    record_audit(state, &event).await?;
    Ok(event.request_id)
}

/// Store an audit event. No audit, no data: a response is only sent once its event is stored.
async fn record_audit(state: &AppState, event: &AuditEvent) -> Result<(), ApiError> {
    state
        .catalog
        .record(event)
        .await
        .map_err(ApiError::internal)
}

/// A slot of `slots`, waited for a little: a burst queues, a flood is told to come back (503).
async fn slot(
    state: &AppState,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    tokio::time::timeout(
        std::time::Duration::from_millis(state.config.queue_wait_ms),
        slots.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ApiError::busy())?
    .map_err(|_| ApiError::busy())
}

/// Store the audit event of a streamed response before its first byte (no audit, no data);
/// it is completed with [`Catalog::complete`] when the stream ends.
async fn open_streamed_audit(
    state: &AppState,
    principal: &Principal,
    request: AuditedRequest<'_>,
) -> Result<AuditEvent, ApiError> {
    let event = AuditEvent {
        body_sha256: String::new(),
        outcome: "streaming".into(),
        ..audit_event(principal, request, (200, 0), &[])
    };
    record_audit(state, &event).await?;
    Ok(event)
}

/// The dataset `name` and this principal's entitlement to it — or the 404 a principal without a
/// grant gets, identical to the one for a dataset that does not exist, and audited (probing for
/// datasets leaves a trace).
async fn granted_dataset<'a>(
    state: &'a AppState,
    principal: &Principal,
    endpoint: &str,
    name: &str,
) -> Result<(&'a TableSpec, Entitlement), ApiError> {
    let granted = entitlements(state, principal).await?;
    let spec = state.tables.iter().find(|s| s.name.to_string() == name);
    match (spec, granted.get(name)) {
        (Some(spec), Some(entitlement)) => Ok((spec, entitlement.clone())),
        _ => {
            audit(
                state,
                principal,
                endpoint,
                "denied: no such dataset or no grant".into(),
                Vec::new(),
                None,
                (404, 0),
                b"",
            )
            .await?;
            Err(ApiError::not_found(name))
        }
    }
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

/// A JSON response with its request id.
fn json_response(body: Vec<u8>, request_id: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::HeaderName::from_static("x-request-id"), request_id),
        ],
        body,
    )
        .into_response()
}

/// Why the API could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Keys(#[from] crate::auth::KeysError),
    #[error("setting `api.search.index_dir`: {0}")]
    Search(#[from] marketlake_search::SearchError),
}

/// The API, ready to serve: its state and, in the process that writes the news index, the
/// indexer.
pub struct Api {
    state: Arc<AppState>,
    indexer: Option<marketlake_search::NewsIndex>,
}

impl Api {
    /// Connect (and migrate, and seed) the catalog, load the token keys, open the news index.
    pub async fn start(
        config: ApiConfig,
        lake: LakeConfig,
        tables: Vec<TableSpec>,
    ) -> Result<Api, StartError> {
        let catalog = Catalog::connect(&config.catalog_url).await?;
        if let Some(seed) = &config.seed_grants_file {
            let loaded = catalog.seed(seed).await?;
            if loaded > 0 {
                tracing::info!(grants = loaded, file = %seed.display(), "catalog seeded with grants");
            }
        }
        let verifier = Verifier::new(&config.auth).await?;
        let (reader, indexer) = if config.search.enabled {
            let dir = config.search.dir(&lake);
            let opened = crate::indexer::open(&dir)?;
            (Some(opened.reader), opened.writer)
        } else {
            (None, None)
        };
        Ok(Api {
            state: Arc::new(AppState::new(
                config, lake, catalog, tables, verifier, reader,
            )),
            indexer,
        })
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serve (and index news) until `shutdown`.
    pub async fn serve(self, shutdown: tokio_util::sync::CancellationToken) -> std::io::Result<()> {
        let state = self.state;
        let indexer_stop = shutdown.child_token();
        let indexer = self.indexer.map(|index| {
            tokio::spawn(crate::indexer::run(
                index,
                state.lake.clone(),
                std::time::Duration::from_millis(state.config.search.poll_ms),
                indexer_stop.clone(),
            ))
        });
        // No Nagle: a streamed response ends with a small chunk, which would otherwise wait
        // for the client's delayed ACK of the one before (about 40 ms on every small answer).
        let listener = axum::serve::ListenerExt::tap_io(
            tokio::net::TcpListener::bind(&state.config.listen).await?,
            |stream: &mut tokio::net::TcpStream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
                }
            },
        );
        tracing::info!(listen = %state.config.listen, "API listening");
        let served = axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown({
            let shutdown = shutdown.clone();
            async move { shutdown.cancelled().await }
        })
        .await;
        indexer_stop.cancel();
        if let Some(indexer) = indexer {
            let _ = indexer.await;
        }
        served
    }
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
        // RFC 4231, test case 6: a key longer than the block is hashed first.
        assert_eq!(
            keyed_hash(
                &[0xaa; 131],
                "Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
