//! Bearer tokens: validation with stable reason codes, and local demo tokens.
//!
//! Checked before the signature: the header's `alg` must be in the allow-list (so `alg: none`
//! and algorithm-confusion tokens are refused by name) and the header must not carry `jku`,
//! `x5u` or `jwk` (keys are never taken from the token). Then the signature, `exp`, `nbf`, `iss`,
//! `aud` and `sub` (all required) with a small leeway.

use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::config::AuthConfig;
use crate::error::ApiError;

/// Who is asking, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
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

/// Validate `token` against `config`.
pub fn verify(token: &str, config: &AuthConfig) -> Result<Principal, ApiError> {
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
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = config.leeway_secs;
    let key = DecodingKey::from_secret(config.hmac_secret.as_bytes());
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        &key,
        &validation,
    )
    .map_err(|e| {
        let (code, message) = match e.kind() {
            ErrorKind::ExpiredSignature => ("token_expired", "the token has expired".to_string()),
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
