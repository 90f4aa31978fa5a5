-- Decisions converge with the chain (docs/protocol.md §10): an outcome says what the
-- chain did, or that it is not known yet, or that nothing was sent.
ALTER TABLE decisions DROP CONSTRAINT IF EXISTS decisions_outcome_check;
UPDATE decisions SET outcome = CASE
    WHEN outcome = 'ok' AND response = 1 THEN 'accepted'
    WHEN outcome = 'ok' THEN 'rejected'
    WHEN outcome = 'overloaded' THEN 'not_sent'
    WHEN outcome IN ('timeout', 'broker_unavailable', 'failed') THEN 'unknown'
    ELSE outcome END;
ALTER TABLE decisions ADD CONSTRAINT decisions_outcome_check CHECK (outcome IN
    ('pending', 'accepted', 'rejected', 'chain_error', 'unknown', 'not_sent', 'not_applied'));
-- Complete scans of the chain's list that still showed the request OPEN while the
-- decision was unknown, and the last scan counted (each scan counts once).
ALTER TABLE decisions ADD COLUMN open_scans INTEGER NOT NULL DEFAULT 0;
ALTER TABLE decisions ADD COLUMN last_scan BIGINT;
CREATE INDEX decisions_outcome ON decisions (outcome);
