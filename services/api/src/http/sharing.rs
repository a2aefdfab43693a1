//! Delta Sharing (open protocol, "parquet" response format) under `/delta-sharing/`, so the
//! `delta-sharing` Python client, pandas and Spark read entitled data with a bearer-token
//! profile file (`{"shareCredentialsVersion": 1, "endpoint": "<api>/delta-sharing",
//! "bearerToken": "<JWT>"}`).
//!
//! One share, `marketlake`; its schemas are the layers (`l1`, `l2`, `l3`) and its tables the
//! datasets the principal holds a grant on (`l2.trades` is `marketlake.l2.trades`). A principal
//! whose grant neither filters rows nor masks columns gets the table's own data files; anyone
//! else gets files written for their entitlement (rows filtered, columns hidden or hashed, the
//! schema to match), generated on first fetch into `<lake>/_sharing/` — never the unfiltered
//! files. File URLs are signed (HMAC under `api.mask_key`), expire after
//! `api.sharing.url_ttl_secs`, and re-check the principal's grants at every fetch; they answer
//! HEAD and byte ranges, as the client's Parquet reader needs. Files that cannot hold an
//! entitled row are skipped using the log's statistics. `jsonPredicateHints` prune further, but
//! only where the table's own files are served: there the statistics are sent anyway, while for
//! entitled files a pruning decision made on the whole table's statistics would tell a principal
//! something about rows it may not see. `predicateHints` (SQL text, deprecated) are not used.
//! Every call is audited, file fetches included.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use marketlake_lake::extract::{self, Encoder, Format, Mask};
use marketlake_lake::read::{
    appended_files, commit_timestamp_ms, delta_schema, earliest_readable_version, evolved_schema,
    file_bytes, file_paths, load_table_as_of, read_file_as, table_id, AsOf, DataFile, DeltaTable,
    VersionCursor,
};
use marketlake_lake::scan::{self, ScanRequest};
use marketlake_lake::{RecordBatch, TableSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{audit, authenticate, entitlements, hex, keyed_hash, AppState};
use crate::auth::Principal;
use crate::catalog::Entitlement;
use crate::error::ApiError;

pub const SHARE: &str = "marketlake";

/// `[api.sharing]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharingConfig {
    pub enabled: bool,
    /// The API's address as clients reach it, for file URLs (default: `http://<api.listen>`).
    pub public_url: Option<String>,
    /// Lifetime of a signed file URL, seconds.
    pub url_ttl_secs: u64,
    /// Where files written for an entitlement are kept, relative to the lake root.
    pub cache_dir: std::path::PathBuf,
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            enabled: true,
            public_url: None,
            url_ttl_secs: 900,
            cache_dir: std::path::PathBuf::from("_sharing"),
        }
    }
}

impl SharingConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.url_ttl_secs == 0 {
            return Err("setting `api.sharing.url_ttl_secs`: at least 1".into());
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "setting `api.sharing.public_url`: `{url}` is not an http(s) URL"
                ));
            }
        }
        Ok(())
    }
}

/// A Delta Sharing error: `{"errorCode", "message"}` with the API's stable code.
pub(super) struct SharingError(ApiError);

impl From<ApiError> for SharingError {
    fn from(e: ApiError) -> Self {
        SharingError(e)
    }
}

impl IntoResponse for SharingError {
    fn into_response(self) -> Response {
        let mut response = (
            self.0.status,
            Json(serde_json::json!({ "errorCode": self.0.code, "message": self.0.message })),
        )
            .into_response();
        if self.0.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

type Reply = Result<Response, SharingError>;

/// A shared table's latest version; `what` names it in the protocol's "does not exist".
async fn latest_shared(
    state: &AppState,
    spec: &TableSpec,
    what: &str,
) -> Result<DeltaTable, SharingError> {
    state
        .snapshots
        .latest(&state.lake, spec.name)
        .await
        .map_err(|_| no_such(what))
}

fn no_such(what: &str) -> SharingError {
    SharingError(ApiError::new(
        StatusCode::NOT_FOUND,
        "RESOURCE_DOES_NOT_EXIST",
        format!("{what} does not exist or is not shared with you"),
    ))
}

/// The datasets shared with `principal`: (schema, table, spec, entitlement).
fn shared<'a>(
    state: &'a AppState,
    granted: &'a BTreeMap<String, Entitlement>,
) -> Vec<(String, String, &'a TableSpec, &'a Entitlement)> {
    state
        .tables
        .iter()
        .filter_map(|spec| {
            let name = spec.name.to_string();
            let entitlement = granted.get(&name)?;
            let (schema, table) = name.split_once('.')?;
            Some((schema.to_string(), table.to_string(), spec, entitlement))
        })
        .collect()
}

async fn principal_and_grants(
    state: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
) -> Result<(Principal, BTreeMap<String, Entitlement>), SharingError> {
    let principal = authenticate(state, headers, endpoint).await?;
    let granted = entitlements(state, &principal).await?;
    Ok((principal, granted))
}

/// A one-line JSON body, audited.
async fn json_reply(
    state: &AppState,
    principal: &Principal,
    endpoint: &str,
    value: serde_json::Value,
    rows: usize,
) -> Reply {
    let body = serde_json::to_vec(&value).map_err(ApiError::internal)?;
    let request_id = audit(
        state,
        principal,
        endpoint,
        String::new(),
        Vec::new(),
        None,
        (200, rows),
        &body,
    )
    .await?;
    Ok(super::json_response(body, request_id))
}

pub(super) async fn list_shares(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    let endpoint = "/delta-sharing/shares";
    let (principal, _) = principal_and_grants(&state, &headers, endpoint).await?;
    json_reply(
        &state,
        &principal,
        endpoint,
        serde_json::json!({ "items": [{ "name": SHARE, "id": SHARE }] }),
        1,
    )
    .await
}

pub(super) async fn get_share(
    State(state): State<Arc<AppState>>,
    Path(share): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}";
    let (principal, _) = principal_and_grants(&state, &headers, endpoint).await?;
    if share != SHARE {
        return Err(no_such(&format!("share {share}")));
    }
    json_reply(
        &state,
        &principal,
        endpoint,
        serde_json::json!({ "share": { "name": SHARE, "id": SHARE } }),
        1,
    )
    .await
}

pub(super) async fn list_schemas(
    State(state): State<Arc<AppState>>,
    Path(share): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    if share != SHARE {
        return Err(no_such(&format!("share {share}")));
    }
    let mut schemas: Vec<String> = shared(&state, &granted)
        .into_iter()
        .map(|(schema, ..)| schema)
        .collect();
    schemas.dedup();
    let items: Vec<_> = schemas
        .iter()
        .map(|s| serde_json::json!({ "name": s, "share": SHARE }))
        .collect();
    let rows = items.len();
    json_reply(
        &state,
        &principal,
        endpoint,
        serde_json::json!({ "items": items }),
        rows,
    )
    .await
}

fn table_item(schema: &str, table: &str) -> serde_json::Value {
    serde_json::json!({
        "name": table, "schema": schema, "share": SHARE, "shareId": SHARE,
        "id": format!("{SHARE}.{schema}.{table}"),
    })
}

pub(super) async fn list_tables(
    State(state): State<Arc<AppState>>,
    Path((share, schema)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas/{schema}/tables";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    if share != SHARE {
        return Err(no_such(&format!("share {share}")));
    }
    let items: Vec<_> = shared(&state, &granted)
        .into_iter()
        .filter(|(s, ..)| *s == schema)
        .map(|(s, t, ..)| table_item(&s, &t))
        .collect();
    if items.is_empty() {
        return Err(no_such(&format!("schema {share}.{schema}")));
    }
    let rows = items.len();
    json_reply(
        &state,
        &principal,
        endpoint,
        serde_json::json!({ "items": items }),
        rows,
    )
    .await
}

pub(super) async fn all_tables(
    State(state): State<Arc<AppState>>,
    Path(share): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/all-tables";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    if share != SHARE {
        return Err(no_such(&format!("share {share}")));
    }
    let items: Vec<_> = shared(&state, &granted)
        .into_iter()
        .map(|(s, t, ..)| table_item(&s, &t))
        .collect();
    let rows = items.len();
    json_reply(
        &state,
        &principal,
        endpoint,
        serde_json::json!({ "items": items }),
        rows,
    )
    .await
}

/// The spec and entitlement of `share.schema.table` for this principal, or 404.
fn find<'a>(
    state: &'a AppState,
    granted: &'a BTreeMap<String, Entitlement>,
    (share, schema, table): (&str, &str, &str),
) -> Result<(&'a TableSpec, &'a Entitlement), SharingError> {
    if share != SHARE {
        return Err(no_such(&format!("table {share}.{schema}.{table}")));
    }
    shared(state, granted)
        .into_iter()
        .find(|(s, t, ..)| s == schema && t == table)
        .map(|(_, _, spec, entitlement)| (spec, entitlement))
        .ok_or_else(|| no_such(&format!("table {share}.{schema}.{table}")))
}

/// Whether the principal may have the table's own files: no row filter, no mask.
fn unrestricted(entitlement: &Entitlement) -> bool {
    entitlement.masks.is_empty()
        && entitlement
            .filter
            .any_of
            .iter()
            .any(|g| g.symbols.is_none() && g.venues.is_none())
}

/// The `metaData` action for this principal: the table's schema minus hidden columns, hashed
/// columns as strings.
/// The first two lines of every table answer: `protocol`, then `metaData`.
fn listing_head(
    table: &DeltaTable,
    spec: &TableSpec,
    entitlement: &Entitlement,
) -> Result<Vec<serde_json::Value>, SharingError> {
    Ok(vec![
        serde_json::json!({ "protocol": { "minReaderVersion": 1 } }),
        metadata_line(table, spec, entitlement)?,
    ])
}

fn metadata_line(
    table: &marketlake_lake::read::DeltaTable,
    spec: &TableSpec,
    entitlement: &Entitlement,
) -> Result<serde_json::Value, ApiError> {
    let mut schema = delta_schema(table).map_err(ApiError::internal)?;
    if let Some(fields) = schema.get_mut("fields").and_then(|f| f.as_array_mut()) {
        fields.retain(|f| {
            f["name"]
                .as_str()
                .is_none_or(|n| entitlement.masks.get(n) != Some(&Mask::Hide))
        });
        for field in fields.iter_mut() {
            let hashed = field["name"]
                .as_str()
                .is_some_and(|n| entitlement.masks.get(n) == Some(&Mask::Hash));
            if hashed {
                field["type"] = serde_json::Value::from("string");
                field["nullable"] = serde_json::Value::from(true);
            }
        }
    }
    let id = table_id(table).unwrap_or_else(|_| spec.name.to_string());
    Ok(serde_json::json!({ "metaData": {
        "id": id,
        "name": spec.name.to_string(),
        "description": spec.description,
        "format": { "provider": "parquet" },
        "schemaString": schema.to_string(),
        "partitionColumns": spec.partition_columns,
        // Append-only: the change data feed (`/changes`) is every table's insert history.
        "configuration": { "enableChangeDataFeed": "true" },
    }}))
}

fn version_of(table: &marketlake_lake::read::DeltaTable) -> i64 {
    table
        .version()
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0)
}

fn ndjson_response(lines: Vec<serde_json::Value>, version: i64, request_id: String) -> Response {
    let mut body = Vec::new();
    for line in &lines {
        body.extend(line.to_string().into_bytes());
        body.push(b'\n');
    }
    (
        [
            (
                header::CONTENT_TYPE,
                "application/x-ndjson; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("delta-table-version"),
                version.to_string(),
            ),
            (header::HeaderName::from_static("x-request-id"), request_id),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn table_version(
    State(state): State<Arc<AppState>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/version";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    let (spec, _) = find(&state, &granted, (&share, &schema, &table))?;
    let axum::extract::Query(query) = query.map_err(|e| invalid(e.body_text()))?;
    let loaded = latest_shared(&state, spec, &format!("table {share}.{schema}.{table}")).await?;
    // With `startingTimestamp`: the earliest version committed at or after it (a streaming
    // reader starts there); without: the latest.
    let version = match &query.starting_timestamp {
        None => version_of(&loaded),
        Some(t) => {
            // A timestamp is a log read: it shares the extraction slots.
            let _permit = super::slot(&state, &state.scans).await?;
            first_version_from(&state, spec, &loaded, instant_ns(t)?)
                .await?
                .ok_or_else(|| invalid("startingTimestamp is after the table's latest version"))?
        }
    };
    audit(
        &state,
        &principal,
        endpoint,
        serde_json::json!({ "startingTimestamp": query.starting_timestamp }).to_string(),
        Vec::new(),
        Some(format!("version {version}")),
        (200, 0),
        b"",
    )
    .await?;
    Ok((
        [(
            header::HeaderName::from_static("delta-table-version"),
            version.to_string(),
        )],
        "",
    )
        .into_response())
}

pub(super) async fn table_metadata(
    State(state): State<Arc<AppState>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/metadata";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    let (spec, entitlement) = find(&state, &granted, (&share, &schema, &table))?;
    let loaded = latest_shared(&state, spec, &format!("table {share}.{schema}.{table}")).await?;
    let version = version_of(&loaded);
    let lines = listing_head(&loaded, spec, entitlement)?;
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let request_id = audit(
        &state,
        &principal,
        endpoint,
        String::new(),
        entitlement.grant_ids.clone(),
        Some(format!("version {version}")),
        (200, 0),
        body.as_bytes(),
    )
    .await?;
    Ok(ndjson_response(lines, version, request_id))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueryBody {
    version: Option<i64>,
    timestamp: Option<String>,
    /// Streaming readers: the data change files of versions `startingVersion..=endingVersion`
    /// (default: the latest), as `changes` lists them, with the historical metadata.
    starting_version: Option<i64>,
    ending_version: Option<i64>,
    limit_hint: Option<i64>,
    #[serde(default)]
    predicate_hints: Option<serde_json::Value>,
    #[serde(default)]
    json_predicate_hints: Option<serde_json::Value>,
}

/// What a signed file URL carries.
#[derive(Debug, Serialize, Deserialize)]
struct FileGrant {
    /// Dataset (`l2.trades`), table version, file path.
    d: String,
    v: i64,
    f: String,
    /// The principal (its grants are re-read at fetch time).
    s: String,
    g: Vec<String>,
    /// Expiry, UTC ms.
    e: i64,
}

fn sign(state: &AppState, grant: &FileGrant) -> String {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(grant).unwrap_or_default());
    let mac = keyed_hash(
        state.config.mask_key.as_bytes(),
        &format!("delta-sharing-file\0{payload}"),
    );
    format!("{payload}.{mac}")
}

fn verify_signed(state: &AppState, token: &str) -> Result<FileGrant, ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_file_url",
            "this file URL is not valid",
        )
    };
    let (payload, mac) = token.split_once('.').ok_or_else(refused)?;
    let expected = keyed_hash(
        state.config.mask_key.as_bytes(),
        &format!("delta-sharing-file\0{payload}"),
    );
    // Compared in full whatever the first difference (no early exit on the secret's bytes).
    let same = expected.len() == mac.len()
        && expected
            .bytes()
            .zip(mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(refused());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| refused())?;
    let grant: FileGrant = serde_json::from_slice(&bytes).map_err(|_| refused())?;
    if grant.e < marketlake_schemas::now_utc_ns() / 1_000_000 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "file_url_expired",
            "this file URL has expired; query the table again",
        ));
    }
    Ok(grant)
}

pub(super) async fn table_query(
    State(state): State<Arc<AppState>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<QueryBody>, JsonRejection>,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    let (spec, entitlement) = find(&state, &granted, (&share, &schema, &table))?;
    let Json(query) =
        body.map_err(|e| ApiError::bad_request("INVALID_PARAMETER_VALUE", e.body_text()))?;
    if let Some(start) = query.starting_version {
        return query_changes(&state, (spec, entitlement, &principal), &query, start).await;
    }
    if query.ending_version.is_some() {
        return Err(invalid("endingVersion needs startingVersion"));
    }
    let as_of = match (query.version, &query.timestamp) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "INVALID_PARAMETER_VALUE",
                "give version or timestamp, not both",
            )
            .into())
        }
        (Some(v), None) => AsOf::Version(v),
        (None, Some(t)) => AsOf::Time(instant_ns(t)?),
        (None, None) => AsOf::Latest,
    };
    let loaded = state
        .snapshots
        .as_of(&state.lake, spec.name, as_of)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "sharing query: version not readable");
            ApiError::bad_request(
                "INVALID_PARAMETER_VALUE",
                "that version of the table cannot be read",
            )
        })?;
    let version = version_of(&loaded);
    // Files that cannot hold an entitled row are skipped (symbol statistics); the hints are
    // best-effort in the protocol and are not needed for correctness.
    let plan = scan::plan(
        &loaded,
        &spec.schema,
        ScanRequest {
            symbols: super::rows::pruning_symbols(&entitlement.filter),
            ..ScanRequest::default()
        },
    )
    .await
    .map_err(ApiError::internal)?;
    let mut lines = listing_head(&loaded, spec, entitlement)?;
    let own_files = unrestricted(entitlement);
    let hints = query
        .json_predicate_hints
        .as_ref()
        .map(super::predicate_hints::parse);
    let applied_hint = hints.iter().flatten().find(|_| own_files);
    let mut pruned_by_hints = 0usize;
    let mut rows_hint = 0i64;
    for file in &plan.files {
        let facts = super::predicate_hints::FileFacts::of(file);
        if applied_hint.is_some_and(|hint| !hint.may_match(&facts)) {
            pruned_by_hints += 1;
            continue;
        }
        if query.limit_hint.is_some_and(|limit| rows_hint >= limit) {
            break;
        }
        rows_hint += facts.records().unwrap_or(i64::MAX / 2);
        let entry = file_entry(&state, (spec, version, file), &principal, own_files);
        lines.push(serde_json::json!({ "file": entry }));
    }
    let files = lines.len() - 2;
    let query_text = serde_json::json!({
        "version": query.version, "timestamp": query.timestamp, "limitHint": query.limit_hint,
        "predicateHints": query.predicate_hints.is_some(),
        "jsonPredicateHints": match &hints {
            None => "none",
            Some(None) => "ignored: not a valid expression",
            Some(Some(_)) if !own_files => "ignored: entitled files are served",
            Some(Some(_)) => "applied",
        },
        "files_pruned_by_hints": pruned_by_hints,
        "files": files, "files_in_version": plan.files_in_version,
        "served": if own_files { "table files" } else { "entitled files" },
    })
    .to_string();
    answer_files(
        &state,
        (&principal, entitlement, endpoint),
        (query_text, format!("version {version}")),
        lines,
        version,
    )
    .await
}

/// `query` with `startingVersion`: what a streaming reader asks for, the data change files
/// since that version (and the metadata changes among them), as `changes` lists them.
async fn query_changes(
    state: &AppState,
    (spec, entitlement, principal): (&TableSpec, &Entitlement, &Principal),
    query: &QueryBody,
    start: i64,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query";
    if query.version.is_some() || query.timestamp.is_some() {
        return Err(invalid(
            "give version or timestamp (a snapshot) or startingVersion (changes), not both",
        ));
    }
    let latest = latest_shared(state, spec, &format!("table {}", spec.name)).await?;
    let latest_version = version_of(&latest);
    let end = query.ending_version.unwrap_or(latest_version);
    let range = ChangeRange {
        head_at_start: true,
        ..ChangeRange::checked(start, end, latest_version, true)?
    };
    let (lines, files) =
        change_lines(state, (spec, entitlement, principal), (&latest, &range)).await?;
    let query_text = serde_json::json!({
        "startingVersion": start, "endingVersion": query.ending_version,
        "versions": [start, end], "files": files,
        "served": if unrestricted(entitlement) { "table files" } else { "entitled files" },
    })
    .to_string();
    answer_files(
        state,
        (principal, entitlement, endpoint),
        (query_text, format!("versions {start}..={end}")),
        lines,
        start,
    )
    .await
}

/// A file of table `version` as the protocol lists it: a signed, expiring URL for this
/// principal, and the log's statistics when the table's own files are served.
fn file_entry(
    state: &AppState,
    (spec, version, file): (&TableSpec, i64, &DataFile),
    principal: &Principal,
    own_files: bool,
) -> serde_json::Value {
    let public = state
        .config
        .sharing
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", state.config.listen));
    let expires = marketlake_schemas::now_utc_ns() / 1_000_000
        + i64::try_from(state.config.sharing.url_ttl_secs).unwrap_or(900) * 1_000;
    let token = sign(
        state,
        &FileGrant {
            d: spec.name.to_string(),
            v: version,
            f: file.path.clone(),
            s: principal.sub.clone(),
            g: principal.groups.clone(),
            e: expires,
        },
    );
    let partition_values: BTreeMap<&str, &Option<String>> = file
        .partition_values
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let mut entry = serde_json::json!({
        "url": format!("{}/delta-sharing/files/{token}", public.trim_end_matches('/')),
        "id": hex(&Sha256::digest(format!("{}:{}", spec.name, file.path).as_bytes())),
        "partitionValues": partition_values,
        "size": file.size,
        "expirationTimestamp": expires,
    });
    // Statistics describe the table's own file: only sent when that is what is served.
    if own_files {
        if let Some(stats) = &file.stats {
            entry["stats"] = serde_json::Value::from(stats.as_str());
        }
    }
    entry
}

/// `version`'s query: `startingTimestamp` asks for the first version committed at or after it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct VersionQuery {
    starting_timestamp: Option<String>,
}

/// The change data feed's range: `startingVersion` or `startingTimestamp`, and optionally
/// `endingVersion` or `endingTimestamp` (default: the latest version), inclusive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChangesQuery {
    starting_version: Option<i64>,
    ending_version: Option<i64>,
    starting_timestamp: Option<String>,
    ending_timestamp: Option<String>,
    #[serde(default)]
    include_historical_metadata: Option<bool>,
}

/// Most versions one change request may span: each is a log read.
const MAX_CHANGE_VERSIONS: i64 = 1_000;

fn invalid(message: impl Into<String>) -> SharingError {
    ApiError::bad_request("INVALID_PARAMETER_VALUE", message).into()
}

/// An RFC 3339 instant, UTC ns.
fn instant_ns(text: &str) -> Result<i64, SharingError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| invalid("timestamp must be RFC 3339"))
}

/// The version current at `ns` (`None` before the first commit) and its commit time, ms.
async fn version_at(
    state: &AppState,
    spec: &TableSpec,
    latest: &DeltaTable,
    ns: i64,
) -> Result<Option<(i64, i64)>, SharingError> {
    match load_table_as_of(&state.lake, spec.name, AsOf::Time(ns)).await {
        Ok(table) => {
            let version = version_of(&table);
            let committed_ms = commit_timestamp_ms(&table, version)
                .await
                .map_err(ApiError::internal)?;
            Ok(Some((version, committed_ms)))
        }
        Err(e) => {
            // An instant before the first commit has no version; one before the oldest version
            // the log can still rebuild (older commits were cleaned up past the log retention)
            // cannot be answered, which is the caller's range, not the server's failure.
            // Anything else (an unreadable log, a store error) is the server's.
            let earliest = earliest_readable_version(latest)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::internal(&e))?;
            let earliest_ms = commit_timestamp_ms(latest, earliest)
                .await
                .map_err(ApiError::internal)?;
            match (ns < earliest_ms.saturating_mul(1_000_000), earliest) {
                (true, 0) => Ok(None),
                (true, _) => Err(invalid(format!(
                    "that instant is before version {earliest}, the oldest the table's log can \
                     still rebuild (older commits are past the log retention)"
                ))),
                (false, _) => Err(ApiError::internal(e).into()),
            }
        }
    }
}

/// The first version committed at or after `ns` (0 when `ns` is before the first commit);
/// `None` when every version was committed before it.
async fn first_version_from(
    state: &AppState,
    spec: &TableSpec,
    latest: &DeltaTable,
    ns: i64,
) -> Result<Option<i64>, SharingError> {
    let candidate = match version_at(state, spec, latest, ns).await? {
        None => 0,
        Some((v, committed_ms)) if committed_ms.saturating_mul(1_000_000) >= ns => v,
        Some((v, _)) => v + 1,
    };
    Ok((candidate <= version_of(latest)).then_some(candidate))
}

/// A range of versions whose appended files are listed as data change files.
struct ChangeRange {
    start: i64,
    end: i64,
    /// List a `metaData` line (with its `version`) for every version in the range whose
    /// metadata differs from the version before: a schema change the table went through.
    historical_metadata: bool,
    /// Describe the listing by the metadata of `start` (a streaming `query`: the reader
    /// starts with that schema and follows the historical lines), rather than of `end`.
    head_at_start: bool,
}

impl ChangeRange {
    /// `start..=end` checked against the table's versions and the per-request bound.
    fn checked(
        start: i64,
        end: i64,
        latest: i64,
        historical_metadata: bool,
    ) -> Result<ChangeRange, SharingError> {
        if start < 0 || start > latest {
            return Err(invalid(format!(
                "startingVersion {start} is not a version of the table (latest {latest})"
            )));
        }
        if end < start || end > latest {
            return Err(invalid(format!(
                "the range {start}..={end} is not within the table's versions 0..={latest}"
            )));
        }
        if end - start >= MAX_CHANGE_VERSIONS {
            return Err(invalid(format!(
                "at most {MAX_CHANGE_VERSIONS} versions per request: narrow the range"
            )));
        }
        Ok(ChangeRange {
            start,
            end,
            historical_metadata,
            head_at_start: false,
        })
    }
}

/// The listing of a change range: `protocol` and `metaData` (of the range's last version),
/// then each version's appended files as `add` lines with their commit `version` and
/// `timestamp`, and, when asked, the historical `metaData` lines; with the number of files.
async fn change_lines(
    state: &AppState,
    (spec, entitlement, principal): (&TableSpec, &Entitlement, &Principal),
    (latest, range): (&DeltaTable, &ChangeRange),
) -> Result<(Vec<serde_json::Value>, usize), SharingError> {
    // A version the log can no longer rebuild is the caller's range, not the server's failure.
    let unreadable = |e: marketlake_lake::LakeError| async move {
        match earliest_readable_version(latest).await {
            Ok(Some(earliest)) if earliest > 0 && range.start <= earliest => invalid(format!(
                "changes can be listed from version {} on: older commits are past the log \
                 retention",
                earliest + 1
            )),
            _ => ApiError::internal(e).into(),
        }
    };
    let own_files = unrestricted(entitlement);
    // Each version is a log read: these requests share the extraction slots.
    let _permit = super::slot(state, &state.scans).await?;
    // Files that cannot hold an entitled row are not listed, as in `query`.
    let entitled = ScanRequest {
        symbols: super::rows::pruning_symbols(&entitlement.filter),
        ..ScanRequest::default()
    };
    // One log replay for the whole range: each version applies its commit to the last.
    let mut cursor = VersionCursor::new(&state.lake, spec.name);
    let mut before = match cursor.files_at(range.start - 1).await {
        Ok(files) => file_paths(&files),
        Err(e) => return Err(unreadable(e).await),
    };
    // The metadata the first historical line is compared with (a listing headed at its
    // start takes the start's own instead).
    let compare_before = range.historical_metadata && !range.head_at_start && range.start > 0;
    let mut metadata_before = match cursor.table() {
        Some(table) if compare_before => Some(metadata_line(table, spec, entitlement)?),
        _ => None,
    };
    let mut changes = Vec::new();
    let mut head = None;
    let mut files = 0usize;
    for version in range.start..=range.end {
        let listed = match cursor.files_at(version).await {
            Ok(files) => files,
            Err(e) => return Err(unreadable(e).await),
        };
        let table = cursor.table().ok_or_else(|| invalid("no such version"))?;
        let committed_ms = commit_timestamp_ms(table, version)
            .await
            .map_err(ApiError::internal)?;
        if range.head_at_start && version == range.start {
            let mut lines = listing_head(table, spec, entitlement)?;
            if let Some(metadata) = lines.get_mut(1) {
                // The start's own metadata heads the listing; only later changes follow.
                metadata_before = Some(metadata.clone());
                metadata["metaData"]["version"] = version.into();
            }
            head = Some(lines);
        } else if range.historical_metadata {
            let metadata = metadata_line(table, spec, entitlement)?;
            if metadata_before.as_ref() != Some(&metadata) {
                let mut historical = metadata.clone();
                historical["metaData"]["version"] = version.into();
                changes.push(historical);
            }
            metadata_before = Some(metadata);
        }
        let appended = appended_files(&before, &listed).unwrap_or_default();
        for file in appended
            .into_iter()
            .filter(|f| entitled.file_may_match(f.stats.as_deref(), None))
        {
            let mut entry = file_entry(state, (spec, version, file), principal, own_files);
            entry["version"] = version.into();
            entry["timestamp"] = committed_ms.into();
            changes.push(serde_json::json!({ "add": entry }));
            files += 1;
        }
        before = file_paths(&listed);
    }
    // Otherwise the last version read (`end`) describes the listing.
    let mut lines = match head {
        Some(lines) => lines,
        None => {
            let last_table = cursor.table().ok_or_else(|| invalid("no such version"))?;
            listing_head(last_table, spec, entitlement)?
        }
    };
    lines.extend(changes);
    Ok((lines, files))
}

/// Delta Sharing change data feed. The tables are append-only, so every change is an insert:
/// each version's appended files are listed as `add` actions with their commit `version` and
/// `timestamp`, and the client adds `_change_type = insert`. Compactions (versions that remove
/// files) change no data and list nothing. Entitlements apply exactly as to `query`.
pub(super) async fn table_changes(
    State(state): State<Arc<AppState>>,
    Path((share, schema, table)): Path<(String, String, String)>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply {
    let endpoint = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/changes";
    let (principal, granted) = principal_and_grants(&state, &headers, endpoint).await?;
    let (spec, entitlement) = find(&state, &granted, (&share, &schema, &table))?;
    let axum::extract::Query(query) = query.map_err(|e| invalid(e.body_text()))?;
    let latest = latest_shared(&state, spec, &format!("table {share}.{schema}.{table}")).await?;
    let latest_version = version_of(&latest);
    let start = match (query.starting_version, &query.starting_timestamp) {
        (Some(v), None) => v,
        (None, Some(t)) => first_version_from(&state, spec, &latest, instant_ns(t)?)
            .await?
            .ok_or_else(|| invalid("startingTimestamp is after the table's latest version"))?,
        _ => {
            return Err(invalid(
                "give startingVersion or startingTimestamp (one of them)",
            ))
        }
    };
    let end = match (query.ending_version, &query.ending_timestamp) {
        (Some(v), None) => v,
        (None, Some(t)) => match version_at(&state, spec, &latest, instant_ns(t)?).await? {
            Some((v, _)) => v,
            None => {
                return Err(invalid(
                    "endingTimestamp is before the table's first version",
                ))
            }
        },
        (None, None) => latest_version,
        _ => return Err(invalid("give endingVersion or endingTimestamp, not both")),
    };
    let range = ChangeRange::checked(
        start,
        end,
        latest_version,
        query.include_historical_metadata == Some(true),
    )?;
    let (lines, files) =
        change_lines(&state, (spec, entitlement, &principal), (&latest, &range)).await?;
    let query_text = serde_json::json!({
        "startingVersion": query.starting_version, "startingTimestamp": query.starting_timestamp,
        "endingVersion": query.ending_version, "endingTimestamp": query.ending_timestamp,
        "includeHistoricalMetadata": query.include_historical_metadata,
        "versions": [start, end], "files": files,
        "served": if unrestricted(entitlement) { "table files" } else { "entitled files" },
    })
    .to_string();
    answer_files(
        &state,
        (&principal, entitlement, endpoint),
        (query_text, format!("versions {start}..={end}")),
        lines,
        start,
    )
    .await
}

/// Audit a file listing (`protocol`, `metaData`, then one line per file) and answer it.
async fn answer_files(
    state: &AppState,
    (principal, entitlement, endpoint): (&Principal, &Entitlement, &str),
    (query_text, as_of): (String, String),
    lines: Vec<serde_json::Value>,
    header_version: i64,
) -> Reply {
    let files = lines
        .iter()
        .filter(|l| l.get("file").is_some() || l.get("add").is_some())
        .count();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let request_id = audit(
        state,
        principal,
        endpoint,
        query_text,
        entitlement.grant_ids.clone(),
        Some(as_of),
        (200, files),
        body.as_bytes(),
    )
    .await?;
    Ok(ndjson_response(lines, header_version, request_id))
}

/// A single `bytes=` range of a body of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<std::ops::Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = if start.is_empty() {
        let suffix: u64 = end.parse().ok()?;
        (size.saturating_sub(suffix), size - 1)
    } else {
        let start: u64 = start.parse().ok()?;
        let end: u64 = if end.is_empty() {
            size - 1
        } else {
            end.parse::<u64>().ok()?.min(size - 1)
        };
        (start, end)
    };
    (start <= end && start < size).then_some(start..end + 1)
}

/// `GET`/`HEAD /delta-sharing/files/{token}`: a signed file URL.
pub(super) async fn file(
    State(state): State<Arc<AppState>>,
    method: Method,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let endpoint = "/delta-sharing/files";
    let grant = verify_signed(&state, &token)?;
    let principal = Principal {
        sub: grant.s.clone(),
        roles: Vec::new(),
        groups: grant.g.clone(),
        expires_at: None,
    };
    // The grants as they are now: a revoke since the query stops the download.
    let granted = entitlements(&state, &principal).await?;
    let spec = state.tables.iter().find(|s| s.name.to_string() == grant.d);
    let (Some(spec), Some(entitlement)) = (spec, granted.get(&grant.d)) else {
        return Err(no_such(&format!("table {}", grant.d)));
    };
    let loaded = load_table_as_of(&state.lake, spec.name, AsOf::Version(grant.v))
        .await
        .map_err(ApiError::internal)?;
    let _slot = super::slot(&state, &state.scans).await?;
    let (bytes, label): (Bytes, &str) = if unrestricted(entitlement) {
        let whole = file_bytes(&loaded, &grant.f, None)
            .await
            .map_err(|_| no_such("file"))?;
        (whole, "table file")
    } else {
        (
            entitled_file(&state, &loaded, spec, entitlement, &grant).await?,
            "entitled file",
        )
    };
    let size = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (status, body) = match range {
        None => (StatusCode::OK, bytes),
        Some(Some(r)) => (
            StatusCode::PARTIAL_CONTENT,
            bytes.slice(r.start as usize..r.end as usize),
        ),
        Some(None) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response())
        }
    };
    let head = method == Method::HEAD;
    let sent: &[u8] = if head { b"" } else { &body };
    let request_id = audit(
        &state,
        &principal,
        endpoint,
        serde_json::json!({
            "dataset": grant.d, "version": grant.v, "file": grant.f, "served": label,
            "range": headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            "method": method.as_str(),
        })
        .to_string(),
        entitlement.grant_ids.clone(),
        Some(format!("version {}", grant.v)),
        (status.as_u16(), 0),
        sent,
    )
    .await?;
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, body.len())
        .header("x-request-id", request_id);
    if status == StatusCode::PARTIAL_CONTENT {
        if let Some(Some(r)) = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| parse_range(v, size))
        {
            response = response.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            );
        }
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(body)
    };
    response
        .body(body)
        .map_err(|e| SharingError(ApiError::internal(e)))
}

/// The file written for `entitlement` from one of the table's files: rows filtered, columns
/// hidden or hashed. Kept under `api.sharing.cache_dir`, named by the source file and the
/// entitlement, so the client's repeated range reads see one stable file.
async fn entitled_file(
    state: &AppState,
    table: &marketlake_lake::read::DeltaTable,
    spec: &TableSpec,
    entitlement: &Entitlement,
    grant: &FileGrant,
) -> Result<Bytes, ApiError> {
    // The mask key is part of the name: hashed values change with it.
    let fingerprint = hex(&Sha256::digest(
        format!(
            "{}\0{}\0{:?}\0{:?}\0{}",
            grant.d, grant.f, entitlement.filter, entitlement.masks, state.config.mask_key
        )
        .as_bytes(),
    ));
    let dir = if state.config.sharing.cache_dir.is_absolute() {
        state.config.sharing.cache_dir.clone()
    } else {
        state.lake.root.join(&state.config.sharing.cache_dir)
    };
    let path = dir.join(format!("{fingerprint}.parquet"));
    if let Ok(bytes) = tokio::fs::read(&path).await {
        return Ok(Bytes::from(bytes));
    }
    forget_old_files(&dir, state.config.sharing.url_ttl_secs).await;
    let files = marketlake_lake::read::data_files(table)
        .await
        .map_err(ApiError::internal)?;
    let file: &DataFile = files
        .iter()
        .find(|f| f.path == grant.f)
        .ok_or_else(|| ApiError::not_found("file"))?;
    // The version's columns, including any the table gained; older files read as null there.
    let schema = evolved_schema(table, &spec.schema).map_err(ApiError::internal)?;
    let template = RecordBatch::new_empty(scan::output_schema(&schema, &spec.partition_columns));
    let batches = read_file_as(&table.object_store(), file, &template.schema())
        .await
        .map_err(ApiError::internal)?;
    let columns: Vec<String> = template
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let hash = |v: &str| state.masker.hash(v);
    let output = extract::project(&template, Some(&columns), &entitlement.masks, &hash)
        .map_err(ApiError::internal)?;
    let mut encoder = Encoder::new(Format::Parquet, output.schema()).map_err(ApiError::internal)?;
    let mut body = encoder.begin().map_err(ApiError::internal)?;
    for batch in &batches {
        let kept = extract::apply(
            batch,
            &entitlement.filter,
            Some(&columns),
            &entitlement.masks,
            &hash,
        )
        .map_err(ApiError::internal)?;
        body.extend(encoder.batch(&kept).map_err(ApiError::internal)?);
    }
    body.extend(encoder.finish().map_err(ApiError::internal)?);
    // Written aside and renamed: a concurrent fetch never reads half a file.
    let written = async {
        tokio::fs::create_dir_all(&dir).await?;
        let partial = dir.join(format!("{fingerprint}.{}.partial", super::new_id()));
        tokio::fs::write(&partial, &body).await?;
        tokio::fs::rename(&partial, &path).await
    };
    if let Err(e) = written.await {
        tracing::warn!(error = %e, "could not keep an entitled sharing file; serving it uncached");
    }
    Ok(Bytes::from(body))
}

/// Files written for entitlements outlive the URLs that point at them by one URL lifetime at
/// most; older ones are deleted when a new one is written.
async fn forget_old_files(dir: &std::path::Path, ttl_secs: u64) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let horizon = std::time::Duration::from_secs(ttl_secs.saturating_mul(2));
    while let Ok(Some(entry)) = entries.next_entry().await {
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > horizon);
        if old {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Some(90..100));
        assert_eq!(parse_range("bytes=95-200", 100), Some(95..100));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=-0", 0), None);
    }
}
