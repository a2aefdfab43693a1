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
    /// Most rows one request returns (a `limit` above it is capped).
    pub max_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// HS256 secret for local use (`marketlake token` signs with it).
    pub hmac_secret: String,
    /// Accepted algorithms (only HMAC ones with an `hmac_secret`).
    pub algorithms: Vec<String>,
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
            leeway_secs: 30,
            roles_claim: "roles".into(),
            groups_claim: "groups".into(),
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
        if self.auth.hmac_secret.len() < 16 {
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
            if self.auth.hmac_secret == defaults.auth.hmac_secret
                || self.auth.hmac_secret.len() < 32
            {
                return Err("setting `api.auth.hmac_secret`: the API listens beyond loopback, so set a secret of at least 32 characters (MARKETLAKE__API__AUTH__HMAC_SECRET) instead of the demo one".into());
            }
            if self.mask_key == defaults.mask_key || self.mask_key.len() < 32 {
                return Err("setting `api.mask_key`: the API listens beyond loopback, so set a key of at least 32 characters (MARKETLAKE__API__MASK_KEY) instead of the demo one".into());
            }
        }
        for alg in &self.auth.algorithms {
            if !matches!(alg.as_str(), "HS256" | "HS384" | "HS512") {
                return Err(format!(
                    "setting `api.auth.algorithms`: `{alg}` needs public keys (JWKS), which this version does not load yet; use HS256"
                ));
            }
        }
        if self.max_rows == 0 {
            return Err("setting `api.max_rows`: at least 1".into());
        }
        Ok(())
    }
}
