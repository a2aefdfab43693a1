//! `[api]` settings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address `serve` listens on (loopback by default).
    pub listen: String,
    /// Catalog URL: `sqlite://FILE` (created when missing; relative to the working directory)
    /// or `postgres://...` when several API instances share one catalog.
    pub catalog_url: String,
    /// Grants loaded into an empty catalog at start (TOML), for the demo.
    pub seed_grants_file: Option<std::path::PathBuf>,
    pub auth: AuthConfig,
    /// Key of the keyed hash (HMAC-SHA256) that replaces masked column values.
    pub mask_key: String,
    /// Most rows in one JSON page (a larger `limit` is capped; follow `next_cursor` for more).
    /// Streamed formats (ndjson, csv, arrow, parquet) return every matching row unless a
    /// `limit` is given.
    pub max_rows: usize,
    /// Time allowed to produce a response's first byte, seconds (504 `timeout` beyond).
    pub request_timeout_secs: u64,
    /// Longest a streamed response may run, seconds (cut, and audited as aborted, beyond).
    pub stream_timeout_secs: u64,
    /// Scans served at once; more wait up to `queue_wait_ms`, then get 503 `busy`.
    pub max_concurrent_scans: usize,
    pub queue_wait_ms: u64,
    /// Live streams (`/v1/stream/...`) open at once (503 `busy` beyond).
    pub max_streams: usize,
    /// Requests per minute per principal (429 `rate_limited` beyond), after a burst of
    /// `rate_limit_burst`.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Refused tokens allowed per client address and minute (also the burst); beyond, 429
    /// `too_many_failures` before any work.
    pub auth_failures_per_minute: u32,
    /// Origins allowed to call the API from a browser (CORS). Empty: closed to browsers.
    pub cors_allowed_origins: Vec<String>,
    /// Largest request body, bytes (413 `body_too_large` beyond).
    pub max_body_bytes: usize,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>` (what scrapers send).
    /// Unset: open, as it carries counts and dataset names, never rows.
    pub metrics_token: Option<String>,
    /// Memory for parsed Parquet footers and page indexes kept between requests, MB (0: none).
    /// Data files never change, so a one-symbol query on a compacted table reuses them
    /// instead of reading and decoding them again.
    pub footer_cache_mb: usize,
    pub search: crate::indexer::SearchConfig,
    pub sharing: crate::http::sharing::SharingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// HS256 secret for local use (`marketlake token` signs with it). Used only when the
    /// algorithms are HMAC ones.
    pub hmac_secret: String,
    /// Accepted algorithms: HMAC ones (`HS256`...) with `hmac_secret`, or public-key ones
    /// (`RS256`, `PS256`, `ES256`, `ES384`, `EdDSA`...) with a JWKS — never both for one issuer.
    pub algorithms: Vec<String>,
    /// Public keys as a JWKS file (re-read on an unknown `kid`)...
    pub jwks_file: Option<std::path::PathBuf>,
    /// ...or URL (fetched at start, cached, refetched on an unknown `kid`).
    pub jwks_url: Option<String>,
    /// Least time between two JWKS refetches caused by unknown `kid`s, seconds.
    pub jwks_refetch_secs: u64,
    /// Keys older than this are refetched, seconds (a withdrawn key stops being trusted).
    pub jwks_max_age_secs: u64,
    /// Clock skew tolerated on `exp` / `nbf`, seconds.
    pub leeway_secs: u64,
    /// Claim holding roles (`roles`; Keycloak: `realm_access.roles` is not nested-path aware yet).
    pub roles_claim: String,
    /// Claim holding groups.
    pub groups_claim: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            catalog_url: "sqlite://lake/catalog.db".into(),
            seed_grants_file: None,
            auth: AuthConfig::default(),
            mask_key: "change-me-mask-key".into(),
            max_rows: 100_000,
            request_timeout_secs: 30,
            stream_timeout_secs: 3_600,
            max_concurrent_scans: 4,
            queue_wait_ms: 2_000,
            max_streams: 64,
            rate_limit_per_minute: 600,
            rate_limit_burst: 60,
            auth_failures_per_minute: 120,
            cors_allowed_origins: Vec::new(),
            max_body_bytes: 64 * 1024,
            metrics_token: None,
            footer_cache_mb: 128,
            search: crate::indexer::SearchConfig::default(),
            sharing: crate::http::sharing::SharingConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "marketlake-local".into(),
            audience: "marketlake".into(),
            hmac_secret: "change-me-local-secret".into(),
            algorithms: vec!["HS256".into()],
            jwks_file: None,
            jwks_url: None,
            jwks_refetch_secs: 30,
            jwks_max_age_secs: 300,
            leeway_secs: 30,
            roles_claim: "roles".into(),
            groups_claim: "groups".into(),
        }
    }
}

/// The algorithm families a token may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Hmac,
    PublicKey,
}

fn family(alg: &str) -> Option<KeyFamily> {
    match alg {
        "HS256" | "HS384" | "HS512" => Some(KeyFamily::Hmac),
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA" => {
            Some(KeyFamily::PublicKey)
        }
        _ => None,
    }
}

/// `https://`, or plain `http://` to a loopback address only (parsed, not prefix-matched).
fn jwks_url_is_safe(text: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(text) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            loopback && url.username().is_empty()
        }
        _ => false,
    }
}

impl AuthConfig {
    /// The one key family of the allowed algorithms (validated).
    pub fn family(&self) -> KeyFamily {
        self.algorithms
            .first()
            .and_then(|a| family(a))
            .unwrap_or(KeyFamily::Hmac)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.algorithms.is_empty() {
            return Err("setting `api.auth.algorithms`: name at least one (e.g. [\"RS256\"] with a JWKS, or [\"HS256\"] for local use)".into());
        }
        let mut families = std::collections::BTreeSet::new();
        for alg in &self.algorithms {
            match family(alg) {
                Some(f) => {
                    families.insert(format!("{f:?}"));
                }
                None => {
                    return Err(format!(
                        "setting `api.auth.algorithms`: `{alg}` is not supported (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA; `none` never)"
                    ))
                }
            }
        }
        if families.len() > 1 {
            return Err("setting `api.auth.algorithms`: mixes HMAC and public-key algorithms; one issuer uses one family, or a public key could be used as an HMAC secret".into());
        }
        let jwks = self.jwks_file.is_some() || self.jwks_url.is_some();
        match self.family() {
            KeyFamily::Hmac if jwks => Err("settings `api.auth.jwks_file` / `jwks_url`: a JWKS is for public-key algorithms; with HMAC ones remove it, or set `api.auth.algorithms` to e.g. [\"RS256\"]".into()),
            KeyFamily::PublicKey if self.jwks_file.is_some() == self.jwks_url.is_some() => Err("settings `api.auth.jwks_file` / `api.auth.jwks_url`: public-key algorithms need exactly one of them".into()),
            KeyFamily::PublicKey
                if self.jwks_url.as_deref().is_some_and(|u| !jwks_url_is_safe(u)) =>
            {
                Err("setting `api.auth.jwks_url`: use https:// (plain http only on loopback)".into())
            }
            _ if self.jwks_refetch_secs == 0 => {
                Err("setting `api.auth.jwks_refetch_secs`: at least 1".into())
            }
            _ => Ok(()),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "setting `api.listen`: `{}` is not host:port (e.g. 127.0.0.1:8080)",
                self.listen
            ));
        }
        if !(self.catalog_url.starts_with("sqlite:") || self.catalog_url.starts_with("postgres")) {
            return Err("setting `api.catalog_url`: use sqlite://FILE or postgres://...".into());
        }
        let hmac = self.auth.family() == KeyFamily::Hmac;
        if hmac && self.auth.hmac_secret.len() < 16 {
            return Err("setting `api.auth.hmac_secret`: at least 16 characters".into());
        }
        // The shipped demo secrets are public: anyone could mint tokens or reverse masked
        // values with them. They are accepted on loopback only.
        let loopback = self
            .listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        let defaults = ApiConfig::default();
        if !loopback {
            if hmac
                && (self.auth.hmac_secret == defaults.auth.hmac_secret
                    || self.auth.hmac_secret.len() < 32)
            {
                return Err("setting `api.auth.hmac_secret`: the API listens beyond loopback, so set a secret of at least 32 characters (MARKETLAKE__API__AUTH__HMAC_SECRET) instead of the demo one".into());
            }
            if self.mask_key == defaults.mask_key || self.mask_key.len() < 32 {
                return Err("setting `api.mask_key`: the API listens beyond loopback, so set a key of at least 32 characters (MARKETLAKE__API__MASK_KEY) instead of the demo one".into());
            }
        }
        self.auth.validate()?;
        self.search.validate()?;
        self.sharing.validate()?;
        let at_least_one = [
            ("max_rows", self.max_rows as u64),
            ("request_timeout_secs", self.request_timeout_secs),
            ("stream_timeout_secs", self.stream_timeout_secs),
            ("max_concurrent_scans", self.max_concurrent_scans as u64),
            ("max_streams", self.max_streams as u64),
            (
                "rate_limit_per_minute",
                u64::from(self.rate_limit_per_minute),
            ),
            ("rate_limit_burst", u64::from(self.rate_limit_burst)),
            (
                "auth_failures_per_minute",
                u64::from(self.auth_failures_per_minute),
            ),
            ("max_body_bytes", self.max_body_bytes as u64),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(format!("setting `api.{name}`: at least 1"));
            }
        }
        if self.metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(
                "setting `api.metrics_token`: at least 16 characters (or leave it unset for an open /metrics)".into(),
            );
        }
        for origin in &self.cors_allowed_origins {
            if origin == "*" || !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "setting `api.cors_allowed_origins`: `{origin}` is not an origin like https://desk.example.com (a wildcard is not accepted: responses carry entitled data)"
                ));
            }
        }
        Ok(())
    }
}
