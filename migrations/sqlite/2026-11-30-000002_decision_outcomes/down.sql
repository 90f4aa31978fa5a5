PRAGMA defer_foreign_keys = ON;
CREATE TABLE decisions_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('partner', 'order')),
    request_id TEXT NOT NULL,
    response INTEGER NOT NULL CHECK (response IN (0, 1)),
    operator TEXT NOT NULL,
    correlation_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN
        ('pending', 'ok', 'chain_error', 'timeout', 'broker_unavailable', 'overloaded', 'failed')),
    chain_message TEXT,
    chain_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
INSERT INTO decisions_old (id, kind, request_id, response, operator, correlation_id, outcome,
                           chain_message, chain_error, created_at, updated_at)
SELECT id, kind, request_id, response, operator, correlation_id,
       CASE
           WHEN outcome IN ('accepted', 'rejected') THEN 'ok'
           WHEN outcome = 'not_sent' THEN 'overloaded'
           WHEN outcome IN ('unknown', 'not_applied') THEN 'timeout'
           ELSE outcome END,
       chain_message, chain_error, created_at, updated_at
FROM decisions;
DROP TABLE decisions;
ALTER TABLE decisions_old RENAME TO decisions;
CREATE INDEX decisions_request_id ON decisions (request_id);
