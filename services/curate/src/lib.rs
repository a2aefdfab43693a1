//! marketlake-curate: L2 → L3 in event time (placeholder while the crate is built).
