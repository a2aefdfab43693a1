-- marketlake catalog, migration 2: one-time catalog events (e.g. the demo grants were seeded),
-- so that revoking every grant is not undone by the next start.

CREATE TABLE IF NOT EXISTS catalog_events (
    name    TEXT PRIMARY KEY,
    at_ns   BIGINT NOT NULL
);
