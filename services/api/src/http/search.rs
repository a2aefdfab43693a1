//! `GET /v1/search/news`: full-text search over `l2.news`, entitled like its rows.
//!
//! The principal's grants on `l2.news` become a required structured clause of the query (the
//! search crate never pastes anything into the user's text): a symbol-restricted grant shows
//! only news tagged with its symbols, a venue-restricted one shows nothing (news has no venue:
//! fail closed), no grant answers 404 like the rows route. Text search over a headline or body
//! the principal may not read in clear is refused (matching would reveal it); other masked
//! fields are hidden or hashed in the hits.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use marketlake_lake::extract::Mask;
use marketlake_schemas::names::L2_NEWS;
use marketlake_search::{Entitled, SearchError, SearchRequest};
use serde::Deserialize;

use super::{audit, authenticate, granted_dataset, json_response, keyed_hash, AppState};
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchQuery {
    /// The text: words, "phrases", AND/OR/NOT, `-word`; empty lists newest first.
    q: Option<String>,
    /// Comma-separated tickers.
    symbols: Option<String>,
    /// Published (else received) time range `[from, to)`, UTC ns.
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
    offset: Option<usize>,
    /// One typo per word allowed.
    fuzzy: Option<bool>,
}

pub(super) async fn search_news(
    State(state): State<Arc<AppState>>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let endpoint = "/v1/search/news";
    let principal = authenticate(&state, &headers, endpoint).await?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let dataset = L2_NEWS.to_string();
    let (_, entitlement) = granted_dataset(&state, &principal, endpoint, &dataset).await?;
    let entitlement = &entitlement;
    if ["headline", "body"]
        .iter()
        .any(|c| entitlement.masks.contains_key(*c))
    {
        audit(
            &state,
            &principal,
            endpoint,
            "refused: search_not_entitled (headline or body masked)".into(),
            entitlement.grant_ids.clone(),
            None,
            (403, 0),
            b"",
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "search_not_entitled",
            "searching text this principal may not read in clear would reveal it",
        ));
    }
    // Filters on masked fields would reveal them (which items carry a ticker, when a hidden
    // time falls); so would newest-first ordering of a blank query on a masked time.
    let masked = |c: &str| entitlement.masks.contains_key(c);
    let time_masked = masked("published_at_ns") || masked("received_at_ns");
    let refusal = if query.symbols.is_some() && masked("tickers") {
        Some("`symbols` filters tickers this principal may not read")
    } else if time_masked
        && (query.from.is_some()
            || query.to.is_some()
            || query.q.as_deref().is_none_or(|q| q.trim().is_empty()))
    {
        Some("time filters and newest-first listing use a time this principal may not read")
    } else {
        None
    };
    if let Some(message) = refusal {
        audit(
            &state,
            &principal,
            endpoint,
            "refused: filter_on_masked_column".into(),
            entitlement.grant_ids.clone(),
            None,
            (400, 0),
            b"",
        )
        .await?;
        return Err(ApiError::bad_request("filter_on_masked_column", message));
    }
    let Some(reader) = state.search.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_unavailable",
            "news search is not enabled on this server (api.search.enabled)",
        ));
    };
    let entitled = Entitled {
        any_of: entitlement
            .filter
            .any_of
            .iter()
            .filter(|g| g.venues.is_none())
            .map(|g| g.symbols.clone())
            .collect(),
    };
    let mut request = SearchRequest::new(query.q.clone().unwrap_or_default(), entitled);
    request.symbols = query.symbols.as_ref().map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    request.from_ns = query.from;
    request.to_ns = query.to;
    if let Some(limit) = query.limit {
        request.limit = limit;
    }
    request.offset = query.offset.unwrap_or(0);
    request.fuzzy = query.fuzzy.unwrap_or(false);
    let started = std::time::Instant::now();
    let searched = {
        let reader = reader.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || reader.search(&request))
            .await
            .map_err(ApiError::internal)?
    };
    let response = searched.map_err(|e| match e {
        SearchError::BadQuery(message) => ApiError::bad_request("bad_search_query", message),
        other => ApiError::internal(other),
    })?;
    let took_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let key = state.config.mask_key.as_bytes();
    let hits: Vec<serde_json::Value> = response
        .hits
        .iter()
        .map(|hit| {
            let mut value = serde_json::to_value(hit).unwrap_or(serde_json::Value::Null);
            if let Some(fields) = value.as_object_mut() {
                for (column, mask) in &entitlement.masks {
                    match mask {
                        Mask::Hide => {
                            fields.remove(column);
                        }
                        Mask::Hash => {
                            if let Some(v) = fields.get_mut(column) {
                                let text = match &*v {
                                    serde_json::Value::String(s) => Some(s.clone()),
                                    serde_json::Value::Null => None,
                                    other => Some(other.to_string()),
                                };
                                *v = text.map_or(serde_json::Value::Null, |t| {
                                    serde_json::Value::from(keyed_hash(key, &t))
                                });
                            }
                        }
                    }
                }
            }
            value
        })
        .collect();
    let indexed_version = reader.indexed_version().ok().flatten();
    let body = serde_json::to_vec(&serde_json::json!({
        "total_hits": response.total_hits,
        "indexed_version": indexed_version,
        "took_ms": took_ms,
        "hits": hits,
    }))
    .map_err(ApiError::internal)?;
    let query_text = serde_json::json!({
        "q": query.q, "symbols": request.symbols, "from": query.from, "to": query.to,
        "limit": request.limit, "offset": request.offset, "fuzzy": request.fuzzy,
    })
    .to_string();
    state.metrics.served(&dataset, hits.len(), body.len());
    let request_id = audit(
        &state,
        &principal,
        endpoint,
        query_text,
        entitlement.grant_ids.clone(),
        indexed_version.map(|v| format!("version {v}")),
        (200, hits.len()),
        &body,
    )
    .await?;
    Ok(json_response(body, request_id))
}
