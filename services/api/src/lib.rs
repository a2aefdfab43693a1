//! marketlake-api: the way people get data out — authenticated, entitled, audited.
//!
//! - [`config`]: `[api]` settings (listen address, token issuer/audience/keys, catalog URL).
//! - [`auth`]: bearer JWT validation (HMAC secret or JWKS public keys) with stable reason codes, and minting
//!   demo tokens.
//! - [`catalog`]: the SQL catalog (SQLite by default, PostgreSQL by URL): migrations, grants of
//!   datasets to users and groups with row filters and column masks, audit events.
//! - [`http`]: the axum router: extraction (streamed, paged, time travel), news search, grant
//!   administration, `/health`, `/ready`, `/metrics`; [`http::Api`] starts and serves it all.
//! - [`indexer`]: keeps the news search index in step with `l2.news`.
//! - [`error`]: the one API error type, JSON with a stable `code`.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod error;
pub mod http;
pub mod indexer;

pub use config::ApiConfig;
pub use error::ApiError;
