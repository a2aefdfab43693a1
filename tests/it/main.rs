//! The one integration-test binary: every test that needs a broker, a lake or a process.
//! Each test starts its own tansu broker on a free loopback port and its own temporary lake,
//! so tests run in parallel and clean up after themselves.

mod api;
mod api_ops;
mod api_search;
mod config_errors;
mod crash;
mod curated;
mod evolution;
mod exactly_once;
mod maintain;
mod reference;
mod samples;
mod support;
