//! marketlake-enrich: L1 raw records → L2 rows (placeholder while the crate is built).
