-- Outbox operations (docs/operations.md, "The outbox"): an operator may retry a failed
-- row or discard it (`discarded`, with who, why and when); the caps count a retried
-- row's age from its retry; retention empties the payload of old delivered rows and
-- keeps the row as a tombstone (`purged_at`) so that its dedup key still refuses a
-- second enqueue. SQLite cannot change a CHECK constraint: the table is rebuilt, every
-- column kept (traceparent included), and its indexes made again. `refused`: the row
-- failed on the chain's answer rather than on a cap, so a retry sends it under a new
-- idempotency key (`idem`): a gateway answers a key it has seen with its first answer.
CREATE TABLE chain_outbox_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    topic TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    ordering_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'in_flight', 'done', 'failed', 'discarded')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP,
    last_error TEXT,
    chain_message TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    traceparent TEXT,
    discarded_by TEXT,
    discard_reason TEXT,
    discarded_at TIMESTAMP,
    retried_at TIMESTAMP,
    purged_at TIMESTAMP,
    refused BOOLEAN NOT NULL DEFAULT 0,
    idem TEXT
);
INSERT INTO chain_outbox_new (id, topic, dedup_key, ordering_key, payload, status, attempts, next_attempt_at, locked_until, last_error, chain_message, created_at, updated_at, delivered_at, traceparent)
    SELECT id, topic, dedup_key, ordering_key, payload, status, attempts, next_attempt_at, locked_until, last_error, chain_message, created_at, updated_at, delivered_at, traceparent FROM chain_outbox;
DROP TABLE chain_outbox;
ALTER TABLE chain_outbox_new RENAME TO chain_outbox;
CREATE INDEX chain_outbox_status_next_attempt_at ON chain_outbox (status, next_attempt_at);
CREATE INDEX chain_outbox_ordering_key_id ON chain_outbox (ordering_key, id);
CREATE INDEX chain_outbox_unsettled_key_id ON chain_outbox (ordering_key, id)
    WHERE status IN ('pending', 'in_flight');
-- What retention looks for: delivered rows not yet purged, oldest first.
CREATE INDEX chain_outbox_purgeable ON chain_outbox (delivered_at)
    WHERE status = 'done' AND purged_at IS NULL;
