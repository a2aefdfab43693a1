//! Operating the API: request metrics and `/metrics`, per-principal rate limits, the time
//! allowed to answer, and CORS (closed unless origins are configured).
//!
//! `/metrics` is Prometheus text: the API's own counters followed by every `*.prom` textfile
//! the services write under `<lake>/_metrics/` (enrichment rule counts, consumer lag), so one
//! scrape sees the whole lake. It carries counts, never data.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use sha2::{Digest, Sha256};

use super::AppState;
use crate::error::ApiError;

/// Upper bounds of the latency histogram, seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BOUNDS.len()];
        }
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BOUNDS) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
struct Counters {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    rows: BTreeMap<String, u64>,
    bytes: u64,
}

/// The API's counters.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        match self.counters.lock() {
            Ok(mut c) => f(&mut c),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn request(&self, route: &str, status: u16, elapsed: Duration) {
        self.with(|c| {
            *c.requests.entry((route.to_string(), status)).or_default() += 1;
            c.latency
                .entry(route.to_string())
                .or_default()
                .observe(elapsed.as_secs_f64());
        });
    }

    /// Rows and bytes of a data response, once it has been sent.
    pub fn served(&self, dataset: &str, rows: usize, bytes: usize) {
        self.with(|c| {
            *c.rows.entry(dataset.to_string()).or_default() += rows as u64;
            c.bytes += bytes as u64;
        });
    }

    /// Prometheus text of the API's counters.
    pub fn render(&self) -> String {
        self.with(|c| {
            let mut out = String::new();
            let _ = writeln!(out, "# HELP marketlake_api_requests_total HTTP requests answered, by route and status.");
            let _ = writeln!(out, "# TYPE marketlake_api_requests_total counter");
            for ((route, status), n) in &c.requests {
                let _ = writeln!(
                    out,
                    "marketlake_api_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            let _ = writeln!(out, "# HELP marketlake_api_request_seconds Time to the response head (streamed bodies continue after it).");
            let _ = writeln!(out, "# TYPE marketlake_api_request_seconds histogram");
            for (route, h) in &c.latency {
                for (bound, n) in LATENCY_BOUNDS.iter().zip(&h.buckets) {
                    let _ = writeln!(
                        out,
                        "marketlake_api_request_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "marketlake_api_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "marketlake_api_request_seconds_sum{{route=\"{route}\"}} {}", h.sum);
                let _ = writeln!(out, "marketlake_api_request_seconds_count{{route=\"{route}\"}} {}", h.count);
            }
            let _ = writeln!(out, "# HELP marketlake_api_rows_served_total Rows sent in data responses, by dataset.");
            let _ = writeln!(out, "# TYPE marketlake_api_rows_served_total counter");
            for (dataset, n) in &c.rows {
                let _ = writeln!(
                    out,
                    "marketlake_api_rows_served_total{{dataset=\"{dataset}\"}} {n}"
                );
            }
            let _ = writeln!(out, "# HELP marketlake_api_bytes_served_total Body bytes sent in data responses.");
            let _ = writeln!(out, "# TYPE marketlake_api_bytes_served_total counter");
            let _ = writeln!(out, "marketlake_api_bytes_served_total {}", c.bytes);
            out
        })
    }
}

/// Prometheus text of the footer cache: what it holds and how often it answered.
fn footer_cache_text(stats: &marketlake_lake::footers::FooterCacheStats) -> String {
    format!(
        "# HELP marketlake_api_footer_cache_files Data files whose parsed footer is cached.\n\
         # TYPE marketlake_api_footer_cache_files gauge\n\
         marketlake_api_footer_cache_files {}\n\
         # HELP marketlake_api_footer_cache_bytes Memory held by cached footers (api.footer_cache_mb bounds it).\n\
         # TYPE marketlake_api_footer_cache_bytes gauge\n\
         marketlake_api_footer_cache_bytes {}\n\
         # HELP marketlake_api_footer_cache_lookups_total Footer lookups, by result.\n\
         # TYPE marketlake_api_footer_cache_lookups_total counter\n\
         marketlake_api_footer_cache_lookups_total{{result=\"hit\"}} {}\n\
         marketlake_api_footer_cache_lookups_total{{result=\"miss\"}} {}\n",
        stats.files, stats.bytes, stats.hits, stats.misses
    )
}

/// Prometheus text of the news index as searched now: its segments fall as merges finish,
/// and searches are slower while many remain.
fn search_index_text(stats: &marketlake_search::IndexStats) -> String {
    format!(
        "# HELP marketlake_api_search_docs News items searchable.\n\
         # TYPE marketlake_api_search_docs gauge\n\
         marketlake_api_search_docs {}\n\
         # HELP marketlake_api_search_deleted_docs Replaced news items not yet merged away.\n\
         # TYPE marketlake_api_search_deleted_docs gauge\n\
         marketlake_api_search_deleted_docs {}\n\
         # HELP marketlake_api_search_segments Segments of the news index searched per query.\n\
         # TYPE marketlake_api_search_segments gauge\n\
         marketlake_api_search_segments {}\n",
        stats.docs, stats.deleted_docs, stats.segments
    )
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.config.metrics_token {
        let given = super::bearer(&headers).unwrap_or("");
        // Digests compared, so the time taken says nothing about how much of the token matched.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            return ApiError::unauthorized(
                "metrics_token",
                "send Authorization: Bearer <api.metrics_token>",
            )
            .into_response();
        }
    }
    let mut text = state.metrics.render();
    text.push_str(&footer_cache_text(&state.footers.stats()));
    if let Some(search) = &state.search {
        text.push_str(&search_index_text(&search.stats()));
    }
    // The services' own textfiles (written with a rename, so never torn).
    let dir = state.lake.root.join("_metrics");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "prom"))
            .collect();
        files.sort();
        for file in files {
            if let Ok(content) = std::fs::read_to_string(&file) {
                text.push_str(&content);
                if !content.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A token bucket per principal.
pub(super) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(super) fn new(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `who` has a request left, without taking it.
    pub(super) fn peek(&self, who: &str) -> Result<(), u64> {
        let buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        match buckets.get(who) {
            None => Ok(()),
            Some((tokens, at)) => {
                let tokens =
                    (tokens + at.elapsed().as_secs_f64() * self.per_second).min(self.burst);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(((1.0 - tokens) / self.per_second.max(f64::MIN_POSITIVE)).ceil() as u64)
                }
            }
        }
    }

    /// Take one request from `who`'s bucket, or say how many seconds until one is available.
    pub(super) fn check(&self, who: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget principals whose bucket has refilled, so the map stays the size of the
        // recently active principals.
        if buckets.len() > 10_000 {
            let full_after = self.burst / self.per_second.max(f64::MIN_POSITIVE);
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < full_after);
        }
        let (tokens, at) = buckets.entry(who.to_string()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second.max(f64::MIN_POSITIVE);
            Err(wait.ceil() as u64)
        }
    }
}

fn allowed_origin(state: &AppState, request: &Request) -> Option<HeaderValue> {
    let origin = request.headers().get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    state
        .config
        .cors_allowed_origins
        .iter()
        .any(|o| o == text)
        .then(|| origin.clone())
}

/// Around every request: CORS, the time allowed for the response head, metrics.
pub(super) async fn around_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let origin = allowed_origin(&state, &request);
    // Refused tokens are limited per client address before any work: each costs an audit
    // write, so a flood of bad tokens is answered 429 without touching the catalog.
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    if let Some(ip) = &client {
        if let Err(wait) = state.failures.peek(ip) {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                "too many refused tokens from this address; retry later",
            );
            response.retry_after = Some(wait.max(1));
            let response = response.into_response();
            state
                .metrics
                .request(&route, response.status().as_u16(), started.elapsed());
            return response;
        }
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        match &origin {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => ApiError::new(
                StatusCode::FORBIDDEN,
                "cors_origin_not_allowed",
                "this origin may not call the API from a browser (api.cors_allowed_origins)",
            )
            .into_response(),
        }
    } else {
        let limit = Duration::from_secs(state.config.request_timeout_secs);
        match tokio::time::timeout(limit, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "no answer within {} s (api.request_timeout_secs); narrow the request",
                    limit.as_secs()
                ),
            )
            .into_response(),
        }
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, x-dataset-version, retry-after"),
        );
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, last-event-id"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    if response.status() == StatusCode::UNAUTHORIZED {
        if let Some(ip) = &client {
            let _ = state.failures.check(ip);
        }
    }
    state
        .metrics
        .request(&route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(60, 3);
        for _ in 0..3 {
            assert!(limiter.check("alice").is_ok());
        }
        let wait = limiter.check("alice").unwrap_err();
        assert!((1..=2).contains(&wait), "{wait}");
        // Others have their own bucket.
        assert!(limiter.check("bob").is_ok());
    }
}
