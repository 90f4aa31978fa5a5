DROP INDEX decisions_outcome;
ALTER TABLE decisions DROP COLUMN last_scan;
ALTER TABLE decisions DROP COLUMN open_scans;
ALTER TABLE decisions DROP CONSTRAINT decisions_outcome_check;
UPDATE decisions SET outcome = CASE
    WHEN outcome IN ('accepted', 'rejected') THEN 'ok'
    WHEN outcome = 'not_sent' THEN 'overloaded'
    WHEN outcome IN ('unknown', 'not_applied') THEN 'timeout'
    ELSE outcome END;
ALTER TABLE decisions ADD CONSTRAINT decisions_outcome_check CHECK (outcome IN
    ('pending', 'ok', 'chain_error', 'timeout', 'broker_unavailable', 'overloaded', 'failed'));
