//! `GET /v1/stream/{name}`: Server-Sent Events of a dataset's new rows as they are committed,
//! entitled like its rows and resumable.
//!
//! The stream follows the table's versions. Each commit that appends rows becomes one or more
//! `rows` events (at most [`ROWS_PER_EVENT`] rows each) whose id is `<version>.<chunk>`; a
//! client reconnecting with `Last-Event-ID` resumes right after the last event it received,
//! with nothing skipped or repeated. Compaction commits (the only ones that remove files from an
//! append-only table) rewrite rows already sent and are skipped. Without `Last-Event-ID` the
//! stream starts after the latest version (`from_version=V` starts after version V). A comment
//! line every 15 s keeps proxies from closing a quiet stream.
//!
//! Audited like extraction: the event is stored before the first byte and completed, with rows,
//! bytes and the SHA-256 of everything sent, when the stream ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use marketlake_lake::extract::{self, Mask, RowFilter};
use marketlake_lake::read::{
    appended_files, evolved_schema, file_paths, read_file_as, table_layout, VersionCursor,
};
use marketlake_lake::{LakeConfig, TableSpec};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{
    authenticate, granted_dataset, hex, open_streamed_audit, slot, AppState, AuditedRequest,
};
use crate::catalog::{new_id, Completion};
use crate::error::ApiError;

/// Rows per event.
pub const ROWS_PER_EVENT: usize = 500;
/// How often the table is checked for new versions.
const POLL: Duration = Duration::from_millis(250);
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    symbols: Option<String>,
    columns: Option<String>,
    /// Start after this version (default: the latest).
    from_version: Option<i64>,
}

/// Where a stream resumes: after chunk `chunk` of `version` (`None`: after the whole version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    version: i64,
    chunk: Option<usize>,
}

fn parse_event_id(text: &str) -> Result<Resume, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_last_event_id",
            "Last-Event-ID must be an id this stream sent (<version>.<chunk>)",
        )
    };
    let (version, chunk) = match text.split_once('.') {
        Some((v, c)) => (v, Some(c.parse::<usize>().map_err(|_| bad())?)),
        None => (text, None),
    };
    Ok(Resume {
        version: version.parse::<i64>().map_err(|_| bad())?,
        chunk,
    })
}

pub(super) async fn stream(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = format!("/v1/stream/{name}");
    let principal = authenticate(&state, &headers, &endpoint).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let (spec, entitlement) = granted_dataset(&state, &principal, &endpoint, &name).await?;
    let entitlement = &entitlement;
    if query.symbols.is_some() && entitlement.masks.contains_key("symbol") {
        return Err(ApiError::bad_request(
            "filter_on_masked_column",
            "`symbols` filters a column this principal may not read",
        ));
    }
    let columns: Option<Vec<String>> = query.columns.as_ref().map(|c| {
        c.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let table = state.snapshots.latest(&state.lake, spec.name).await.ok();
    // The table's columns now, including any it gained (configured extra columns).
    let schema = table
        .as_ref()
        .and_then(|t| evolved_schema(t, &spec.schema).ok())
        .unwrap_or_else(|| spec.schema.clone());
    if let Some(wanted) = &columns {
        for column in wanted {
            if schema.field_with_name(column).is_err()
                || entitlement.masks.get(column) == Some(&Mask::Hide)
            {
                return Err(ApiError::bad_request(
                    "unknown_column",
                    format!("{name} has no column `{column}` this principal may read"),
                ));
            }
        }
    }
    let latest = table
        .and_then(|t| t.version())
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(-1);
    let resume = match (
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty()),
        query.from_version,
    ) {
        (Some(id), _) => parse_event_id(id)?,
        (None, Some(version)) => Resume {
            version,
            chunk: None,
        },
        (None, None) => Resume {
            version: latest,
            chunk: None,
        },
    };
    if resume.version < -1 || resume.version > latest {
        return Err(ApiError::bad_request(
            "bad_last_event_id",
            format!(
                "no version {} to resume after (the latest is {latest})",
                resume.version
            ),
        ));
    }
    let mut filter = entitlement.filter.clone();
    filter.symbols = query.symbols.as_ref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
    });
    let permit = slot(&state, &state.streams).await?;
    let event = open_streamed_audit(
        &state,
        &principal,
        AuditedRequest {
            request_id: new_id(),
            endpoint: &endpoint,
            query: serde_json::json!({
                "symbols": filter.symbols, "columns": columns,
                "resume_after": format!("{}.{}", resume.version, resume.chunk.map_or("*".into(), |c| c.to_string())),
            })
            .to_string(),
            entitlements: entitlement.grant_ids.clone(),
            as_of: Some(format!("versions after {}", resume.version)),
        },
    )
    .await?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let follower = Follower {
        state: state.clone(),
        principal: principal.clone(),
        granted: entitlement.clone(),
        lake: state.lake.clone(),
        spec: spec.clone(),
        filter,
        columns,
        masks: entitlement.masks.clone(),
        deadline: Instant::now() + Duration::from_secs(state.config.stream_timeout_secs),
    };
    let producer_state = state.clone();
    let event_id = event.event_id.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut sent = Sent {
            tx: &tx,
            hasher: Sha256::new(),
            bytes: 0,
            rows: 0,
            deadline: follower.deadline,
        };
        let outcome = follower.run(resume, &mut sent).await;
        producer_state
            .metrics
            .served(&follower.spec.name.to_string(), sent.rows, sent.bytes);
        let completion = Completion {
            rows_returned: i64::try_from(sent.rows).unwrap_or(i64::MAX),
            bytes_returned: i64::try_from(sent.bytes).unwrap_or(i64::MAX),
            body_sha256: hex(&sent.hasher.finalize()),
            outcome,
        };
        if let Err(e) = producer_state
            .catalog
            .complete(&event_id, &completion)
            .await
        {
            tracing::error!(error = %e, event_id, "could not complete an audit event");
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream".to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (
                header::HeaderName::from_static("x-request-id"),
                event.request_id,
            ),
        ],
        body,
    )
        .into_response())
}

/// What has been sent, hashed on the way.
struct Sent<'a> {
    tx: &'a mpsc::Sender<Result<Bytes, std::io::Error>>,
    hasher: Sha256,
    bytes: usize,
    rows: usize,
    /// A client that stops reading cannot hold the stream past it.
    deadline: Instant,
}

impl Sent<'_> {
    /// `false` when the client has gone.
    async fn send(&mut self, text: String, rows: usize) -> bool {
        let bytes = Bytes::from(text);
        match tokio::time::timeout_at(self.deadline.into(), self.tx.send(Ok(bytes.clone()))).await {
            Ok(Ok(())) => {
                self.hasher.update(&bytes);
                self.bytes += bytes.len();
                self.rows += rows;
                true
            }
            _ => false,
        }
    }
}

/// Follows one table for one subscriber.
struct Follower {
    state: Arc<AppState>,
    principal: crate::auth::Principal,
    /// The entitlement the stream started under: a change (a revoke, a narrower grant) ends it.
    granted: crate::catalog::Entitlement,
    lake: LakeConfig,
    spec: TableSpec,
    filter: RowFilter,
    columns: Option<Vec<String>>,
    masks: BTreeMap<String, Mask>,
    deadline: Instant,
}

impl Follower {
    /// Send events until the client goes or the deadline; returns the audit outcome.
    async fn run(&self, resume: Resume, sent: &mut Sent<'_>) -> String {
        let mut after = resume;
        // Walks the versions forward (one commit applied per version, not a log replay each),
        // with the file paths of the last version listed.
        let mut cursor = VersionCursor::new(&self.lake, self.spec.name);
        let mut previous: Option<(i64, BTreeSet<String>)> = None;
        let mut last_sent = Instant::now();
        loop {
            if let Some(ended) = self.should_end(sent).await {
                return ended;
            }
            let latest = match self
                .state
                .snapshots
                .latest(&self.lake, self.spec.name)
                .await
            {
                Ok(table) => table.version().and_then(|v| i64::try_from(v).ok()),
                Err(_) => None,
            };
            let first = if after.chunk.is_some() {
                after.version
            } else {
                after.version.saturating_add(1)
            };
            for version in first.max(0)..=latest.unwrap_or(-1) {
                if let Some(ended) = self.should_end(sent).await {
                    return ended;
                }
                match self
                    .version_events(version, (&mut cursor, &mut previous), after, sent)
                    .await
                {
                    Ok(true) => {
                        after = Resume {
                            version,
                            chunk: None,
                        };
                        last_sent = Instant::now();
                    }
                    Ok(false) => return "complete: client disconnected".into(),
                    Err(e) => {
                        tracing::warn!(error = %e, version, "stream stopped");
                        return format!("failed: {e}");
                    }
                }
            }
            if last_sent.elapsed() >= KEEPALIVE {
                if !sent.send(": keepalive\n\n".into(), 0).await {
                    return "complete: client disconnected".into();
                }
                last_sent = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Why the stream must end now, if it must: deadline, client gone, token expired, or the
    /// principal's entitlement changed (re-read from the catalog).
    async fn should_end(&self, sent: &Sent<'_>) -> Option<String> {
        if Instant::now() >= self.deadline {
            return Some("aborted: api.stream_timeout_secs reached".into());
        }
        if sent.tx.is_closed() {
            return Some("complete: client disconnected".into());
        }
        let now = marketlake_schemas::now_utc_ns() / 1_000_000_000;
        if self.principal.expires_at.is_some_and(|exp| exp <= now) {
            return Some("ended: the token expired".into());
        }
        match self.state.catalog.entitlements(&self.principal).await {
            Ok(current) if current.get(&self.spec.name.to_string()) == Some(&self.granted) => None,
            Ok(_) => Some("ended: the principal's entitlement changed".into()),
            Err(e) => Some(format!("failed: catalog: {e}")),
        }
    }

    /// Send the rows `version` appended (after `resume`'s chunk when it is that version);
    /// `Ok(false)` when the client has gone.
    async fn version_events(
        &self,
        version: i64,
        (cursor, previous): (&mut VersionCursor, &mut Option<(i64, BTreeSet<String>)>),
        resume: Resume,
        sent: &mut Sent<'_>,
    ) -> Result<bool, String> {
        let before = match previous.take() {
            Some((v, paths)) if v == version - 1 => paths,
            _ => file_paths(
                &cursor
                    .files_at(version - 1)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let files = cursor.files_at(version).await.map_err(|e| e.to_string())?;
        let table = cursor.table();
        *previous = Some((version, file_paths(&files)));
        // A compaction's rows were sent already.
        let (Some(table), Some(appended)) = (table, appended_files(&before, &files)) else {
            return Ok(true);
        };
        let store = table.object_store();
        // Rows of files older than a column carry it as null, like the rows API.
        let layout = table_layout(table).map_err(|e| e.to_string())?;
        let skip_through = (resume.version == version)
            .then_some(resume.chunk)
            .flatten();
        let hash = |value: &str| self.state.masker.hash(value);
        let mut pending: Vec<String> = Vec::new();
        let mut chunk = 0usize;
        for file in appended {
            for batch in read_file_as(&store, file, &layout)
                .await
                .map_err(|e| e.to_string())?
            {
                let kept = extract::apply(
                    &batch,
                    &self.filter,
                    self.columns.as_deref(),
                    &self.masks,
                    &hash,
                )
                .map_err(|e| e.to_string())?;
                if kept.num_rows() == 0 {
                    continue;
                }
                pending.extend(extract::json_rows(&kept).map_err(|e| e.to_string())?);
                while pending.len() >= ROWS_PER_EVENT {
                    let rest = pending.split_off(ROWS_PER_EVENT);
                    let rows = std::mem::replace(&mut pending, rest);
                    if !self.emit(version, chunk, skip_through, rows, sent).await {
                        return Ok(false);
                    }
                    chunk += 1;
                }
            }
        }
        if !pending.is_empty() && !self.emit(version, chunk, skip_through, pending, sent).await {
            return Ok(false);
        }
        Ok(true)
    }

    async fn emit(
        &self,
        version: i64,
        chunk: usize,
        skip_through: Option<usize>,
        rows: Vec<String>,
        sent: &mut Sent<'_>,
    ) -> bool {
        if skip_through.is_some_and(|k| chunk <= k) {
            return true;
        }
        let count = rows.len();
        let text = format!(
            "id: {version}.{chunk}\nevent: rows\ndata: [{}]\n\n",
            rows.join(",")
        );
        sent.send(text, count).await
    }
}
