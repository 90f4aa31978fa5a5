-- Webhook notifications (MES_WEBHOOKS), one row per event and webhook, so that a
-- restart loses none: a worker per webhook claims due rows (a lease in
-- locked_until), POSTs them and settles them. `event_id` is deterministic
-- (`new_request:<kind>:<id>`, `outbox_failed:<row id>:<attempts>`): two instances
-- that see the same event insert one row per webhook.
CREATE TABLE notifications (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- May hold a secret (a bot token): never logged nor shown; `target` is what is.
    url TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    UNIQUE (event_id, url)
);
CREATE INDEX notifications_due ON notifications (url, next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_status_id ON notifications (status, id);
