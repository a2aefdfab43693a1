//! marketlake-api: the way people get data out — authenticated, entitled, audited.
//!
//! - [`config`]: `[api]` settings (listen address, token issuer/audience/keys, catalog URL).
//! - [`auth`]: bearer JWT validation (HS256 for local use) with stable reason codes, and minting
//!   demo tokens.
//! - [`catalog`]: the SQL catalog (SQLite by default, PostgreSQL by URL): migrations, grants of
//!   datasets to users and groups with row filters and column masks, audit events.
//! - [`http`]: the axum router: `/health`, `/ready`, `/v1/datasets`, `/v1/datasets/{name}/rows`.
//! - [`error`]: the one API error type, JSON with a stable `code`.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod error;
pub mod http;

pub use config::ApiConfig;
pub use error::ApiError;
