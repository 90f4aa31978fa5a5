ALTER TABLE chain_outbox DROP COLUMN traceparent;
