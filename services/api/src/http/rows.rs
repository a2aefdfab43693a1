//! Extraction: the datasets a principal may read, and their rows — streamed.
//!
//! A rows request is planned before anything is sent (table version, files pruned by the log's
//! statistics, output schema), so every refusal is a JSON error. Then a producer task reads the
//! planned files row group by row group, filters and masks each batch, encodes it and hands it
//! to the response through a small bounded channel: memory holds a few batches whatever the
//! size of the result, and a slow client slows the scan instead of filling memory. The audit
//! event is stored before the first byte and completed (rows, bytes, SHA-256 of the body,
//! outcome) before the last one, so a client that has the whole body can find its audit.
//!
//! JSON answers a page (`limit`, at most `api.max_rows`) in an envelope with `next_cursor`;
//! the cursor pins the table version and the position after the last row sent. The other
//! formats stream every matching row unless a `limit` is given.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use marketlake_lake::extract::{self, Encoder, Format, Mask, RowFilter};
use marketlake_lake::read::{data_files, evolved_schema, AsOf};
use marketlake_lake::scan::{self, Position, ScanPlan, ScanRequest};
use marketlake_lake::{RecordBatch, Schema, TableSpec};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    audit, authenticate, entitlements, granted_dataset, hex, json_response, open_streamed_audit,
    slot, AppState, AuditedRequest, KeyedHasher,
};
use crate::catalog::{new_id, Completion, Entitlement};
use crate::error::ApiError;

/// `GET /v1/datasets`: what this principal may read, with schema, layer, rows and version.
pub(super) async fn datasets(
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
        let mut schema = spec.schema.clone();
        let (version, rows) = match state.snapshots.latest(&state.lake, spec.name).await {
            Ok(table) => {
                // Columns the table gained (configured extra columns) are listed too.
                if let Ok(evolved) = evolved_schema(&table, &spec.schema) {
                    schema = evolved;
                }
                // Rows in the latest version, from the log's statistics (no file is opened).
                let rows = match data_files(&table).await {
                    Ok(files) => files
                        .iter()
                        .map(|f| {
                            f.stats
                                .as_deref()
                                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                                .and_then(|s| s.get("numRecords").and_then(|n| n.as_i64()))
                        })
                        .sum::<Option<i64>>(),
                    Err(_) => None,
                };
                (table.version(), rows)
            }
            Err(_) => (None, Some(0)),
        };
        let columns: Vec<serde_json::Value> = schema
            .fields()
            .iter()
            .filter(|f| entitlement.masks.get(f.name().as_str()) != Some(&Mask::Hide))
            .map(|f| {
                let masked = entitlement.masks.contains_key(f.name().as_str());
                serde_json::json!({
                    "name": f.name(),
                    "type": if masked { "Utf8 (keyed hash)".to_string() } else { f.data_type().to_string() },
                    "nullable": f.is_nullable() || masked,
                })
            })
            .collect();
        // Row counts are of the whole table: a row-filtered principal is told it is filtered.
        let filtered = entitlement
            .filter
            .any_of
            .iter()
            .any(|g| g.symbols.is_some() || g.venues.is_some());
        list.push(serde_json::json!({
            "name": name,
            "layer": spec.name.layer,
            "description": spec.description,
            "latest_version": version,
            "row_count": if filtered { None } else { rows },
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
    Ok(json_response(body, request_id))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RowsQuery {
    /// Comma-separated symbols.
    symbols: Option<String>,
    /// Event time range `[from, to)`, UTC nanoseconds.
    from: Option<i64>,
    to: Option<i64>,
    /// Comma-separated columns.
    columns: Option<String>,
    limit: Option<usize>,
    as_of_version: Option<i64>,
    /// RFC 3339 instant or UTC nanoseconds: the version current then.
    as_of_time: Option<String>,
    /// `next_cursor` of the previous JSON page.
    cursor: Option<String>,
    /// json (default), ndjson, csv, arrow, parquet.
    format: Option<String>,
    /// Arrow and Parquet only: serve the low-cardinality text columns
    /// (`schemas::CATEGORICAL_COLUMNS`) as dictionaries, as they are stored.
    dictionary: Option<bool>,
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

/// What a cursor holds: the version read and where the next row lies. Sealed (ChaCha20-Poly1305
/// under a key derived from `api.mask_key`, bound to the dataset and the principal): the
/// client sees an opaque token, so physical row positions — which would tell how many rows lie
/// outside its grant between two pages — and file names stay on the server, and a cursor made
/// up or taken from someone else is refused.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    v: i64,
    p: Position,
}

/// What a cursor is sealed under.
#[derive(Clone)]
pub(super) struct CursorSeal {
    key: [u8; 32],
    /// Dataset and principal: the associated data of the seal.
    bound_to: String,
}

impl CursorSeal {
    pub(super) fn new(mask_key: &str, dataset: &str, principal: &str) -> CursorSeal {
        let key: [u8; 32] =
            Sha256::digest(format!("marketlake-cursor\0{mask_key}").as_bytes()).into();
        CursorSeal {
            key,
            bound_to: format!("{dataset}\0{principal}"),
        }
    }
}

impl Cursor {
    fn seal(&self, seal: &CursorSeal) -> String {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&seal.key.into());
        let nonce: [u8; 12] = rand::random();
        let plain = serde_json::to_vec(self).unwrap_or_default();
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: &plain,
                    aad: seal.bound_to.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut token = nonce.to_vec();
        token.extend(sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    }

    fn open(text: &str, seal: &CursorSeal) -> Result<Cursor, ApiError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let bad = || {
            ApiError::bad_request(
                "bad_cursor",
                "the cursor is not one this API issued to this principal for this dataset",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        if bytes.len() < 12 + 16 {
            return Err(bad());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| bad())?;
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&seal.key.into());
        let plain = cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: sealed,
                    aad: seal.bound_to.as_bytes(),
                },
            )
            .map_err(|_| bad())?;
        serde_json::from_slice(&plain).map_err(|_| bad())
    }
}

fn parse_instant(text: &str) -> Result<i64, ApiError> {
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_as_of_time",
                format!(
                    "as_of_time `{text}`: use RFC 3339 (2026-11-23T17:00:00Z) or UTC nanoseconds"
                ),
            )
        })
}

/// The symbols no row outside of which can pass: the request's, narrowed by the grants' when
/// every grant restricts symbols. Only used to skip files; rows are still filtered one by one.
pub(super) fn pruning_symbols(filter: &RowFilter) -> Option<BTreeSet<String>> {
    let granted: Option<BTreeSet<String>> = filter
        .any_of
        .iter()
        .map(|g| g.symbols.clone())
        .collect::<Option<Vec<_>>>()
        .map(|sets| sets.into_iter().flatten().collect());
    match (&filter.symbols, granted) {
        (Some(asked), Some(granted)) => Some(asked.intersection(&granted).cloned().collect()),
        (Some(asked), None) => Some(asked.clone()),
        (None, granted) => granted,
    }
}

/// Everything a rows response needs once it has been planned.
struct Extraction {
    plan: ScanPlan,
    filter: RowFilter,
    columns: Option<Vec<String>>,
    masks: std::collections::BTreeMap<String, Mask>,
    masker: KeyedHasher,
    encoder: Encoder,
    limit: usize,
    /// For JSON: the envelope's dataset name.
    envelope: Option<String>,
    deadline: Instant,
    seal: CursorSeal,
}

/// `GET /v1/datasets/{name}/rows`.
pub(super) async fn rows(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: Result<Query<RowsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = format!("/v1/datasets/{name}/rows");
    let principal = authenticate(&state, &headers, &endpoint).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let (spec, entitlement) = granted_dataset(&state, &principal, &endpoint, &name).await?;
    let entitlement = &entitlement;
    let format_name = query.format.as_deref().unwrap_or("json");
    let format = Format::parse(format_name).ok_or_else(|| {
        ApiError::bad_request(
            "bad_format",
            format!("format `{format_name}`: use {}", Format::NAMES),
        )
    })?;
    // The slot first: planning reads the log, which is work a flood must not get for free.
    let permit = slot(&state, &state.scans).await?;
    let seal = CursorSeal::new(&state.config.mask_key, &name, &principal.sub);
    let (extraction, as_of) = match plan(&state, spec, entitlement, &query, format, seal).await {
        Ok(planned) => planned,
        Err(refused) => {
            // Refusals are audited too: probing masked columns or versions leaves a trace.
            audit(
                &state,
                &principal,
                &endpoint,
                format!("refused: {}", refused.code),
                entitlement.grant_ids.clone(),
                None,
                (refused.status.as_u16(), 0),
                b"",
            )
            .await?;
            return Err(refused);
        }
    };
    let version = extraction.plan.version;
    let scan_files = format!(
        "{}/{}",
        extraction.plan.files.len(),
        extraction.plan.files_in_version
    );
    let query_text = serde_json::json!({
        "symbols": extraction.filter.symbols, "from": query.from, "to": query.to,
        "columns": extraction.columns, "limit": query.limit, "format": format_name,
        "cursor": query.cursor, "as_of_time": query.as_of_time,
        "dictionary": query.dictionary,
        "files_planned": extraction.plan.files.len(),
        "files_in_version": extraction.plan.files_in_version,
    })
    .to_string();
    let event = open_streamed_audit(
        &state,
        &principal,
        AuditedRequest {
            request_id: new_id(),
            endpoint: &endpoint,
            query: query_text,
            entitlements: entitlement.grant_ids.clone(),
            as_of,
        },
    )
    .await?;
    let content_type = format.content_type();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let producer_state = state.clone();
    let event_id = event.event_id.clone();
    let dataset = name.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let completion = produce(extraction, &tx, &producer_state, &dataset).await;
        if let Err(e) = producer_state
            .catalog
            .complete(&event_id, &completion)
            .await
        {
            tracing::error!(error = %e, event_id, "could not complete an audit event");
            let _ = tx
                .send(Err(std::io::Error::other("audit could not be completed")))
                .await;
        }
        // Dropping `tx` ends the body: only now does the client see the last byte.
    });
    let body = Body::from_stream(tokio_stream_of(rx));
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::HeaderName::from_static("x-request-id"),
                event.request_id.clone(),
            ),
            (
                header::HeaderName::from_static("x-dataset-version"),
                version.map_or_else(String::new, |v| v.to_string()),
            ),
            // Data skipping, visible: files read / files in the version.
            (header::HeaderName::from_static("x-scan-files"), scan_files),
        ],
        body,
    )
        .into_response();
    if matches!(format, Format::Parquet | Format::Arrow) {
        let extension = if format == Format::Parquet {
            "parquet"
        } else {
            "arrows"
        };
        if let Ok(value) = format!("attachment; filename=\"{name}.{extension}\"").parse() {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}

fn tokio_stream_of(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Check the request against the entitlement and plan the scan; every refusal happens here,
/// before anything is sent.
async fn plan(
    state: &AppState,
    spec: &TableSpec,
    entitlement: &Entitlement,
    query: &RowsQuery,
    format: Format,
    seal: CursorSeal,
) -> Result<(Extraction, Option<String>), ApiError> {
    let name = spec.name.to_string();
    // Filtering on a column the principal may not read would reveal its values.
    let masked = |column: &str| entitlement.masks.contains_key(column);
    if query.symbols.is_some() && masked("symbol") {
        return Err(ApiError::bad_request(
            "filter_on_masked_column",
            "`symbols` filters a column this principal may not read",
        ));
    }
    if (query.from.is_some() || query.to.is_some()) && scan::TIME_COLUMNS.iter().any(|c| masked(c))
    {
        return Err(ApiError::bad_request(
            "filter_on_masked_column",
            "`from`/`to` filter a time column this principal may not read",
        ));
    }
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| Cursor::open(c, &seal))
        .transpose()?;
    if cursor.is_some() && format != Format::Json {
        return Err(ApiError::bad_request(
            "bad_cursor",
            "cursors page JSON responses; the other formats stream the whole result",
        ));
    }
    let as_of = match (&cursor, query.as_of_version, &query.as_of_time) {
        (Some(_), _, Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_cursor",
                "a cursor already pins the version; drop as_of_time",
            ))
        }
        (Some(c), Some(v), None) if c.v != v => {
            return Err(ApiError::bad_request(
                "bad_cursor",
                "the cursor belongs to another version than as_of_version",
            ))
        }
        (Some(c), _, None) => AsOf::Version(c.v),
        (None, Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_as_of",
                "give as_of_version or as_of_time, not both",
            ))
        }
        (None, Some(v), None) => AsOf::Version(v),
        (None, None, Some(t)) => AsOf::Time(parse_instant(t)?),
        (None, None, None) => AsOf::Latest,
    };
    let table = state
        .snapshots
        .as_of(&state.lake, spec.name, as_of)
        .await
        .map_err(|e| match as_of {
            AsOf::Latest => ApiError::not_found(&name),
            AsOf::Version(v) => {
                tracing::info!(dataset = %name, version = v, error = %e, "as_of_version not readable");
                ApiError::bad_request(
                    "bad_version",
                    format!("version {v} of {name} cannot be read"),
                )
            }
            AsOf::Time(t) => {
                tracing::info!(dataset = %name, at = t, error = %e, "as_of_time not readable");
                ApiError::bad_request(
                    "bad_as_of_time",
                    format!("{name} has no version at that time (before its creation, or beyond the retention period)"),
                )
            }
        })?;
    let mut filter = entitlement.filter.clone();
    filter.symbols = split(&query.symbols).map(|asked| asked.into_iter().collect());
    filter.from_ns = query.from;
    filter.to_ns = query.to;
    let columns = split(&query.columns);
    // The version's own columns: the spec's, plus any the table gained by then.
    let schema = evolved_schema(&table, &spec.schema).map_err(ApiError::internal)?;
    let dictionary =
        dictionary_columns(query.dictionary, format, &schema, &spec.partition_columns)?;
    let template = RecordBatch::new_empty(scan::dictionary_schema(
        &scan::output_schema(&schema, &spec.partition_columns),
        &dictionary,
    ));
    if let Some(wanted) = &columns {
        for column in wanted {
            // A hidden column is as unknown as one that does not exist.
            if template.schema().field_with_name(column).is_err()
                || entitlement.masks.get(column) == Some(&Mask::Hide)
            {
                return Err(ApiError::bad_request(
                    "unknown_column",
                    format!("{name} has no column `{column}` this principal may read"),
                ));
            }
        }
    }
    // Without `columns`, the table's own columns: a column some file has and the table does
    // not (an older layout read with as_of) is never sent, masked or not.
    let projection: Vec<String> = columns.clone().unwrap_or_else(|| {
        template
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    });
    let output = extract::project(&template, Some(&projection), &entitlement.masks, &|v| {
        state.masker.hash(v)
    })
    .map_err(ApiError::internal)?;
    let encoder = Encoder::new(format, output.schema()).map_err(ApiError::internal)?;
    let limit = match (format, query.limit) {
        (_, Some(0)) => {
            return Err(ApiError::bad_request(
                "bad_limit",
                "limit must be at least 1",
            ))
        }
        (Format::Json, asked) => asked
            .unwrap_or(state.config.max_rows)
            .min(state.config.max_rows),
        (_, asked) => asked.unwrap_or(usize::MAX),
    };
    let plan = scan::plan(
        &table,
        &schema,
        ScanRequest {
            symbols: pruning_symbols(&filter),
            from_ns: filter.from_ns,
            to_ns: filter.to_ns,
            columns: columns.clone(),
            resume: cursor.map(|c| c.p),
            dictionary,
        },
    )
    .await
    .map_err(ApiError::internal)?
    .with_footers(state.footers.clone());
    let as_of_text = plan.version.map(|v| format!("version {v}"));
    Ok((
        Extraction {
            plan,
            filter,
            columns: Some(projection),
            masks: entitlement.masks.clone(),
            masker: state.masker.clone(),
            encoder,
            limit,
            envelope: (format == Format::Json).then_some(name),
            deadline: Instant::now() + Duration::from_secs(state.config.stream_timeout_secs),
            seal,
        },
        as_of_text,
    ))
}

/// The columns served as dictionaries: with `dictionary=true`, the table's categorical text
/// columns (partition columns are not in the files, so they stay plain). The text formats
/// write values, never dictionaries, so they refuse the option rather than ignore it.
fn dictionary_columns(
    asked: Option<bool>,
    format: Format,
    schema: &Schema,
    partition_columns: &[String],
) -> Result<BTreeSet<String>, ApiError> {
    if asked != Some(true) {
        return Ok(BTreeSet::new());
    }
    if !matches!(format, Format::Arrow | Format::Parquet) {
        return Err(ApiError::bad_request(
            "bad_query",
            "dictionary=true applies to format=arrow and format=parquet",
        ));
    }
    Ok(schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|name| marketlake_schemas::CATEGORICAL_COLUMNS.contains(&name.as_str()))
        .filter(|name| !partition_columns.contains(name))
        .cloned()
        .collect())
}

/// Sends the body and hashes what was accepted.
struct Sender<'a> {
    tx: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
    digest: BodyDigest,
    bytes: usize,
    /// The stream's deadline: a client that stops reading cannot hold a scan slot past it.
    deadline: Instant,
}

impl Sender<'_> {
    /// `false` when the client has gone or stopped reading until the deadline.
    async fn send(&mut self, chunk: Vec<u8>) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let bytes = Bytes::from(chunk);
        match tokio::time::timeout_at(self.deadline.into(), self.tx.send(Ok(bytes.clone()))).await {
            Ok(Ok(())) => {
                self.bytes += bytes.len();
                self.digest.update(bytes).await;
                true
            }
            _ => false,
        }
    }
}

/// The SHA-256 of a body, computed on its own task: hashing every byte sent costs as much as
/// encoding them, and on its own task it overlaps the next batch's work.
struct BodyDigest {
    chunks: mpsc::Sender<Bytes>,
    hasher: tokio::task::JoinHandle<Sha256>,
}

impl BodyDigest {
    fn new() -> BodyDigest {
        let (chunks, mut rx) = mpsc::channel::<Bytes>(8);
        let hasher = tokio::spawn(async move {
            let mut hasher = Sha256::new();
            while let Some(chunk) = rx.recv().await {
                hasher.update(&chunk);
            }
            hasher
        });
        BodyDigest { chunks, hasher }
    }

    async fn update(&self, chunk: Bytes) {
        // The task only ends when `chunks` is dropped, so this send cannot fail before
        // `finish`; if it ever did, `finish` reports it.
        let _ = self.chunks.send(chunk).await;
    }

    /// The hex digest of everything given to `update`.
    async fn finish(self) -> String {
        drop(self.chunks);
        match self.hasher.await {
            Ok(hasher) => hex(&hasher.finalize()),
            Err(e) => {
                tracing::error!(error = %e, "the body digest task failed");
                "unavailable".to_string()
            }
        }
    }
}

/// Runs `stream` on its own task, up to `depth` items ahead of the consumer: reading, filtering
/// and masking the next batches overlap encoding and sending this one. The task stops when
/// the consumer is dropped.
fn read_ahead<T: Send + 'static>(
    stream: impl futures::Stream<Item = T> + Send + 'static,
    depth: usize,
) -> impl futures::Stream<Item = T> {
    let (tx, mut rx) = mpsc::channel(depth);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Batches prepared ahead of the encoder: enough to keep both stages busy, few enough that a
/// slow client holds little memory (a batch is 8,192 rows).
const READ_AHEAD_BATCHES: usize = 2;

/// One scanned batch after the entitlement: the rows kept (filtered, projected, masked), which
/// of the scanned rows they are, and where the scanned rows lie in the table.
struct Prepared {
    rows: RecordBatch,
    keep: extract::BooleanArray,
    source: scan::SourceRows,
}

/// Read, filter, mask, encode and send; returns how it ended, for the audit event.
async fn produce(
    extraction: Extraction,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    state: &AppState,
    dataset: &str,
) -> Completion {
    let mut sender = Sender {
        tx,
        digest: BodyDigest::new(),
        bytes: 0,
        deadline: extraction.deadline,
    };
    let (rows, outcome) = match stream_rows(extraction, &mut sender).await {
        Ok(rows) => (rows, "complete".to_string()),
        Err((rows, outcome)) => {
            tracing::warn!(dataset, rows, outcome, "extraction stopped early");
            // A body that stops early is cut (the connection aborts), never a short one
            // that looks whole.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                tx.send(Err(std::io::Error::other(outcome.clone()))),
            )
            .await;
            (rows, outcome)
        }
    };
    state.metrics.served(dataset, rows, sender.bytes);
    Completion {
        rows_returned: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes_returned: i64::try_from(sender.bytes).unwrap_or(i64::MAX),
        body_sha256: sender.digest.finish().await,
        outcome,
    }
}

/// The body, chunk by chunk: `Ok(rows)` when all of it was sent, else the rows sent and why it
/// stopped.
async fn stream_rows(
    extraction: Extraction,
    sender: &mut Sender<'_>,
) -> Result<usize, (usize, String)> {
    let Extraction {
        plan,
        filter,
        columns,
        masks,
        masker,
        mut encoder,
        limit,
        envelope,
        deadline,
        seal,
    } = extraction;
    let version = plan.version;
    let gone = |rows| {
        (
            rows,
            "aborted: client disconnected or stopped reading".to_string(),
        )
    };
    let failed = |rows, e: &dyn std::fmt::Display| (rows, format!("failed: {e}"));
    let mut rows = 0usize;
    if let Some(dataset) = &envelope {
        let head = format!(
            "{{\"dataset\":{},\"version\":{},\"rows\":",
            serde_json::Value::from(dataset.as_str()),
            version.map_or("null".to_string(), |v| v.to_string())
        );
        if !sender.send(head.into_bytes()).await {
            return Err(gone(rows));
        }
    }
    let begin = encoder.begin().map_err(|e| failed(rows, &e))?;
    if !sender.send(begin).await {
        return Err(gone(rows));
    }
    let mut next: Option<Position> = None;
    // Dictionaries read from Parquet hold every value of their row group: where the grant
    // keeps rows out, each batch's are cut to the values of the rows it sends.
    let compact = filter.restricts_rows();
    let prepared = plan.stream().map(move |scanned| {
        let scanned = scanned?;
        let keep = extract::row_mask(&scanned.batch, &filter)?;
        let kept = extract::filter_batch(&scanned.batch, &keep)?;
        let kept = if compact {
            extract::compact_dictionaries(&kept)?
        } else {
            kept
        };
        let rows = extract::project(&kept, columns.as_deref(), &masks, &|value: &str| {
            masker.hash(value)
        })?;
        Ok::<_, marketlake_lake::LakeError>(Prepared {
            rows,
            keep,
            source: scanned.rows,
        })
    });
    let stream = read_ahead(prepared, READ_AHEAD_BATCHES);
    futures::pin_mut!(stream);
    while rows < limit {
        let item = match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Err(_) => return Err((rows, "aborted: api.stream_timeout_secs reached".into())),
            Ok(None) => break,
            Ok(Some(item)) => item,
        };
        let Prepared {
            rows: mut batch,
            keep,
            source,
        } = item.map_err(|e| failed(rows, &e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        if batch.num_rows() > limit - rows {
            // Cut after the last row that fits; the cursor resumes right after its source row.
            let wanted = limit - rows;
            batch = batch.slice(0, wanted);
            let last = keep
                .iter()
                .enumerate()
                .filter(|(_, k)| k.unwrap_or(false))
                .nth(wanted - 1)
                .map_or(0, |(i, _)| i);
            next = Some(source.after(last));
        } else {
            next = Some(source.after_all());
        }
        let chunk = encoder.batch(&batch).map_err(|e| failed(rows, &e))?;
        if !sender.send(chunk).await {
            return Err(gone(rows));
        }
        rows += batch.num_rows();
    }
    let end = encoder.finish().map_err(|e| failed(rows, &e))?;
    if !sender.send(end).await {
        return Err(gone(rows));
    }
    if envelope.is_some() {
        let cursor = match (rows >= limit, version, next) {
            (true, Some(v), Some(p)) => serde_json::Value::from(Cursor { v, p }.seal(&seal)),
            _ => serde_json::Value::Null,
        };
        let tail = format!(",\"row_count\":{rows},\"next_cursor\":{cursor}}}");
        if !sender.send(tail.into_bytes()).await {
            return Err(gone(rows));
        }
    }
    Ok(rows)
}
