//! The L3 (curated) record types and their Arrow schemas. Owned by the curation work.
