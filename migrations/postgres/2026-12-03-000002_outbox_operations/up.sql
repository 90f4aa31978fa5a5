-- Outbox operations (docs/operations.md, "The outbox"): an operator may retry a failed
-- row or discard it (`discarded`, with who, why and when); the caps count a retried
-- row's age from its retry; retention empties the payload of old delivered rows and
-- keeps the row as a tombstone (`purged_at`) so that its dedup key still refuses a
-- second enqueue.
ALTER TABLE chain_outbox DROP CONSTRAINT chain_outbox_status_check;
ALTER TABLE chain_outbox ADD CONSTRAINT chain_outbox_status_check
    CHECK (status IN ('pending', 'in_flight', 'done', 'failed', 'discarded'));
ALTER TABLE chain_outbox ADD COLUMN discarded_by TEXT;
ALTER TABLE chain_outbox ADD COLUMN discard_reason TEXT;
ALTER TABLE chain_outbox ADD COLUMN discarded_at TIMESTAMP;
ALTER TABLE chain_outbox ADD COLUMN retried_at TIMESTAMP;
ALTER TABLE chain_outbox ADD COLUMN purged_at TIMESTAMP;
-- Whether the row failed on the chain's answer (or was no request), rather than on a cap:
-- such a row is retried under a new idempotency key (`idem`), since a gateway answers a
-- key it has seen with its first answer, the refusal.
ALTER TABLE chain_outbox ADD COLUMN refused BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE chain_outbox ADD COLUMN idem TEXT;
-- What retention looks for: delivered rows not yet purged, oldest first.
CREATE INDEX chain_outbox_purgeable ON chain_outbox (delivered_at)
    WHERE status = 'done' AND purged_at IS NULL;
