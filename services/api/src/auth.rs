//! Bearer tokens: validation with stable reason codes, and local demo tokens.
//!
//! Keys: an HMAC secret for local use, or a JWKS (file or URL) of public keys for RS*/PS*/ES*/
//! EdDSA — never both for one issuer (a public key must never double as an HMAC secret). An
//! unknown `kid` refetches the JWKS at most once per `jwks_refetch_secs`.
//!
//! Checked before the signature: the header's `alg` must be in the allow-list (so `alg: none`
//! and algorithm-confusion tokens are refused by name) and the header must not carry `jku`,
//! `x5u` or `jwk` (keys are never taken from the token). Then the signature, `exp`, `nbf`, `iss`,
//! `aud` and `sub` (all required) with a small leeway.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::config::{AuthConfig, KeyFamily};
use crate::error::ApiError;

/// Who is asking, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The token's `exp`, UTC seconds (long-lived responses end when it passes).
    pub expires_at: Option<i64>,
}

impl Principal {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

fn strings(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Verifies tokens: the header checks, then the key (the HMAC secret, or the JWKS key named
/// by `kid`), then the claims.
pub struct Verifier {
    config: AuthConfig,
    jwks: tokio::sync::RwLock<Arc<JwkSet>>,
    /// When the JWKS was last (re)loaded: unknown `kid`s refetch it at most once per
    /// `jwks_refetch_secs`, so a flood of made-up kids cannot hammer the key server.
    last_fetch: tokio::sync::Mutex<Instant>,
    http: Option<reqwest::Client>,
}

/// The JWKS could not be loaded; names the setting.
#[derive(Debug, thiserror::Error)]
#[error("setting `{setting}`: {message}")]
pub struct KeysError {
    pub setting: &'static str,
    pub message: String,
}

impl Verifier {
    /// A verifier for `config`; with public-key algorithms, the JWKS is loaded now (start-up
    /// fails with the setting named when it cannot be).
    pub async fn new(config: &AuthConfig) -> Result<Verifier, KeysError> {
        let http = match &config.jwks_url {
            Some(_) => Some(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| KeysError {
                        setting: "api.auth.jwks_url",
                        message: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let verifier = Verifier {
            config: config.clone(),
            jwks: tokio::sync::RwLock::new(Arc::new(JwkSet { keys: Vec::new() })),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
            http,
        };
        if config.family() == KeyFamily::PublicKey {
            let set = verifier.fetch().await?;
            *verifier.jwks.write().await = Arc::new(set);
        }
        Ok(verifier)
    }

    /// Load the JWKS from its file or URL; symmetric keys in it are refused.
    async fn fetch(&self) -> Result<JwkSet, KeysError> {
        let (setting, bytes) = if let Some(path) = &self.config.jwks_file {
            let bytes = tokio::fs::read(path).await.map_err(|e| KeysError {
                setting: "api.auth.jwks_file",
                message: format!("{}: {e}", path.display()),
            })?;
            ("api.auth.jwks_file", bytes)
        } else if let (Some(url), Some(http)) = (&self.config.jwks_url, &self.http) {
            let err = |message: String| KeysError {
                setting: "api.auth.jwks_url",
                message: format!("{url}: {message}"),
            };
            let response = http.get(url).send().await.map_err(|e| err(e.to_string()))?;
            if !response.status().is_success() {
                return Err(err(format!("HTTP {}", response.status())));
            }
            let bytes = response.bytes().await.map_err(|e| err(e.to_string()))?;
            if bytes.len() > 1024 * 1024 {
                return Err(err("the JWKS is larger than 1 MB".into()));
            }
            ("api.auth.jwks_url", bytes.to_vec())
        } else {
            return Ok(JwkSet { keys: Vec::new() });
        };
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| KeysError {
            setting,
            message: format!("not a JWKS: {e}"),
        })?;
        if set
            .keys
            .iter()
            .any(|k| matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
        {
            return Err(KeysError {
                setting,
                message: "the JWKS holds a symmetric (`oct`) key; only public keys are accepted"
                    .into(),
            });
        }
        tracing::info!(keys = set.keys.len(), source = setting, "JWKS loaded");
        Ok(set)
    }

    /// The key for `kid`, refetching the JWKS (rate-limited) when it is unknown.
    async fn public_key(&self, kid: Option<&str>, alg: &str) -> Result<DecodingKey, ApiError> {
        let pick = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(kid) => set.find(kid).cloned(),
                // Without a kid, only an unambiguous set will do.
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let cached = self.jwks.read().await.clone();
        let mut found = pick(&cached);
        // An unknown kid refetches (a rotation); so does age, so that a key the issuer
        // withdrew stops being trusted without a restart.
        let stale = self.last_fetch.lock().await.elapsed()
            >= Duration::from_secs(self.config.jwks_max_age_secs);
        if (found.is_none() && kid.is_some()) || stale {
            let mut last = self.last_fetch.lock().await;
            if last.elapsed() >= Duration::from_secs(self.config.jwks_refetch_secs) {
                *last = Instant::now();
                match self.fetch().await {
                    Ok(set) => {
                        found = pick(&set);
                        *self.jwks.write().await = Arc::new(set);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "JWKS refetch failed; keeping the cached keys")
                    }
                }
            }
        }
        let jwk = found.ok_or_else(|| match kid {
            Some(kid) => ApiError::unauthorized(
                "unknown_key",
                format!("no key `{kid}` in the issuer's JWKS"),
            ),
            None => ApiError::unauthorized(
                "missing_kid",
                "the token names no key (`kid`) and the JWKS holds several",
            ),
        })?;
        if let Some(key_alg) = jwk.common.key_algorithm {
            if key_alg.to_string() != alg {
                return Err(ApiError::unauthorized(
                    "alg_not_allowed",
                    format!("key `{}` is for {key_alg}, not {alg}", kid.unwrap_or("-")),
                ));
            }
        }
        DecodingKey::from_jwk(&jwk)
            .map_err(|_| ApiError::unauthorized("unknown_key", "the issuer's key cannot be used"))
    }

    /// Validate `token`.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let config = &self.config;
        let (algorithm, alg_name, kid) = check_header(token, config)?;
        let key = match config.family() {
            KeyFamily::Hmac => DecodingKey::from_secret(config.hmac_secret.as_bytes()),
            KeyFamily::PublicKey => self.public_key(kid.as_deref(), &alg_name).await?,
        };
        verify_with_key(token, &key, algorithm, config)
    }
}

/// The header checks made before any key is looked at: no key-carrying headers, an allowed
/// algorithm. Returns the algorithm and the `kid`.
fn check_header(
    token: &str,
    config: &AuthConfig,
) -> Result<(Algorithm, String, Option<String>), ApiError> {
    let malformed = || ApiError::unauthorized("token_malformed", "the bearer token is not a JWT");
    let header_b64 = token.split('.').next().ok_or_else(malformed)?;
    let header_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header_b64.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let header: serde_json::Value =
        serde_json::from_slice(&header_bytes).map_err(|_| malformed())?;
    for forbidden in ["jku", "x5u", "jwk"] {
        if header.get(forbidden).is_some() {
            return Err(ApiError::unauthorized(
                "forbidden_header",
                format!("tokens carrying a `{forbidden}` header are refused: keys are never taken from the token"),
            ));
        }
    }
    let alg_name = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
    if !config.algorithms.iter().any(|a| a == alg_name) {
        return Err(ApiError::unauthorized(
            "alg_not_allowed",
            format!("algorithm `{alg_name}` is not accepted"),
        ));
    }
    let algorithm = Algorithm::from_str(alg_name).map_err(|_| {
        ApiError::unauthorized(
            "alg_not_allowed",
            format!("algorithm `{alg_name}` is not accepted"),
        )
    })?;
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .map(str::to_owned);
    Ok((algorithm, alg_name.to_string(), kid))
}

/// Check the signature with `key` and the claims.
fn verify_with_key(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
    config: &AuthConfig,
) -> Result<Principal, ApiError> {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = config.leeway_secs;
    let data =
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, key, &validation)
            .map_err(|e| {
                let (code, message) = match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        ("token_expired", "the token has expired".to_string())
                    }
                    ErrorKind::ImmatureSignature => (
                        "token_not_yet_valid",
                        "the token is not valid yet (nbf)".to_string(),
                    ),
                    ErrorKind::InvalidSignature => (
                        "bad_signature",
                        "the token's signature does not verify".to_string(),
                    ),
                    ErrorKind::InvalidAudience => (
                        "wrong_audience",
                        format!("the token is not for audience `{}`", config.audience),
                    ),
                    ErrorKind::InvalidIssuer => (
                        "wrong_issuer",
                        format!("the token is not from issuer `{}`", config.issuer),
                    ),
                    ErrorKind::MissingRequiredClaim(claim) => (
                        "missing_claim",
                        format!("the token lacks the `{claim}` claim"),
                    ),
                    ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidAlgorithmName
                    | ErrorKind::MissingAlgorithm
                    | ErrorKind::UnsupportedAlgorithm => (
                        "alg_not_allowed",
                        "the token's algorithm is not accepted".to_string(),
                    ),
                    _ => (
                        "token_malformed",
                        "the bearer token could not be read".to_string(),
                    ),
                };
                ApiError::unauthorized(code, message)
            })?;
    let claims = data.claims;
    let sub = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("missing_claim", "the token lacks the `sub` claim")
        })?;
    Ok(Principal {
        sub: sub.to_string(),
        roles: strings(claims.get(&config.roles_claim)),
        groups: strings(claims.get(&config.groups_claim)),
        expires_at: claims.get("exp").and_then(|e| e.as_i64()),
    })
}

/// Mint a local HS256 token (`marketlake token`).
pub fn mint(
    config: &AuthConfig,
    sub: &str,
    roles: &[String],
    groups: &[String],
    ttl_secs: i64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = marketlake_schemas::now_utc_ns() / 1_000_000_000;
    let claims = serde_json::json!({
        "sub": sub,
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_secs,
        config.roles_claim.as_str(): roles,
        config.groups_claim.as_str(): groups,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(config.hmac_secret.as_bytes()),
    )
}
