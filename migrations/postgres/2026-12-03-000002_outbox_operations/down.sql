DROP INDEX chain_outbox_purgeable;
UPDATE chain_outbox SET status = 'failed' WHERE status = 'discarded';
ALTER TABLE chain_outbox DROP COLUMN idem;
ALTER TABLE chain_outbox DROP COLUMN refused;
ALTER TABLE chain_outbox DROP COLUMN purged_at;
ALTER TABLE chain_outbox DROP COLUMN retried_at;
ALTER TABLE chain_outbox DROP COLUMN discarded_at;
ALTER TABLE chain_outbox DROP COLUMN discard_reason;
ALTER TABLE chain_outbox DROP COLUMN discarded_by;
ALTER TABLE chain_outbox DROP CONSTRAINT chain_outbox_status_check;
ALTER TABLE chain_outbox ADD CONSTRAINT chain_outbox_status_check
    CHECK (status IN ('pending', 'in_flight', 'done', 'failed'));
