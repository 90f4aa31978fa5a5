CREATE TABLE chain_outbox_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    topic TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    ordering_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'in_flight', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP,
    last_error TEXT,
    chain_message TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    traceparent TEXT
);
INSERT INTO chain_outbox_old (id, topic, dedup_key, ordering_key, payload, status, attempts, next_attempt_at, locked_until, last_error, chain_message, created_at, updated_at, delivered_at, traceparent)
    SELECT id, topic, dedup_key, ordering_key, payload,
        CASE status WHEN 'discarded' THEN 'failed' ELSE status END,
        attempts, next_attempt_at, locked_until, last_error, chain_message, created_at,
        updated_at, delivered_at, traceparent FROM chain_outbox;
DROP TABLE chain_outbox;
ALTER TABLE chain_outbox_old RENAME TO chain_outbox;
CREATE INDEX chain_outbox_status_next_attempt_at ON chain_outbox (status, next_attempt_at);
CREATE INDEX chain_outbox_ordering_key_id ON chain_outbox (ordering_key, id);
CREATE INDEX chain_outbox_unsettled_key_id ON chain_outbox (ordering_key, id)
    WHERE status IN ('pending', 'in_flight');
