-- Decisions converge with the chain (docs/protocol.md §10): an outcome says what the
-- chain did, or that it is not known yet, or that nothing was sent. SQLite cannot
-- change a CHECK constraint: the table is rebuilt. Foreign keys (production_orders)
-- are checked at commit, when the rebuilt table holds the same ids.
PRAGMA defer_foreign_keys = ON;
CREATE TABLE decisions_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('partner', 'order')),
    request_id TEXT NOT NULL,
    response INTEGER NOT NULL CHECK (response IN (0, 1)),
    operator TEXT NOT NULL,
    correlation_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN
        ('pending', 'accepted', 'rejected', 'chain_error', 'unknown', 'not_sent', 'not_applied')),
    chain_message TEXT,
    chain_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    -- Complete scans of the chain's list that still showed the request OPEN while the
    -- decision was unknown, and the last scan counted (each scan counts once).
    open_scans INTEGER NOT NULL DEFAULT 0,
    last_scan BIGINT
);
INSERT INTO decisions_new (id, kind, request_id, response, operator, correlation_id, outcome,
                           chain_message, chain_error, created_at, updated_at)
SELECT id, kind, request_id, response, operator, correlation_id,
       CASE
           WHEN outcome = 'ok' AND response = 1 THEN 'accepted'
           WHEN outcome = 'ok' THEN 'rejected'
           WHEN outcome = 'overloaded' THEN 'not_sent'
           WHEN outcome IN ('timeout', 'broker_unavailable', 'failed') THEN 'unknown'
           ELSE outcome END,
       chain_message, chain_error, created_at, updated_at
FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_new RENAME TO decisions;
CREATE INDEX decisions_request_id ON decisions (request_id);
CREATE INDEX decisions_outcome ON decisions (outcome);
