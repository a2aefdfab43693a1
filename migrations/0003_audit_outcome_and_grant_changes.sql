-- marketlake catalog, migration 3: streamed responses and audited grant changes.
--
-- A streamed response is audited twice in one row: the event is inserted before the first byte
-- (outcome 'streaming': no audit, no data) and completed when the last byte is sent, with the
-- rows, bytes and SHA-256 of the whole body and the outcome ('complete', 'aborted: ...').
ALTER TABLE audit_events ADD COLUMN outcome TEXT NOT NULL DEFAULT 'complete';
ALTER TABLE audit_events ADD COLUMN completed_at_ns BIGINT;

-- Every change to the grants, by whom, through which request: grants are deleted when revoked,
-- their history stays here.
CREATE TABLE IF NOT EXISTS grant_changes (
    change_id       TEXT PRIMARY KEY,
    at_ns           BIGINT NOT NULL,
    actor           TEXT NOT NULL,          -- the token's sub, or cli:<user>
    action          TEXT NOT NULL,          -- 'grant' | 'revoke'
    grant_id        TEXT NOT NULL,
    grant_json      TEXT NOT NULL,          -- the grant as it was created or revoked
    request_id      TEXT
);

CREATE INDEX IF NOT EXISTS grant_changes_by_grant ON grant_changes (grant_id, at_ns);
