-- The mirror of the chain's partner and order requests: refreshed by the poller's
-- scans and by every LIST reply, read by the operator inbox. Shared by every server
-- instance on the database, so it also tells what has been announced already.
CREATE TABLE chain_requests (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('partner', 'order')),
    -- The chain's request id, spelled as the chain spells it.
    chain_id TEXT NOT NULL CHECK (length(chain_id) BETWEEN 1 AND 128),
    -- The chain's status, upper-cased (OPEN, ACCEPTED, REJECTED, …).
    status TEXT NOT NULL,
    issuing_agent TEXT NOT NULL,
    -- The item's `timestamp` (seconds since the epoch, as the chain gives it).
    chain_timestamp BIGINT NOT NULL,
    -- Orders' description ('' for partners): searched by the inbox.
    description TEXT NOT NULL,
    -- The item as the chain sent it, as JSON text.
    item TEXT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    -- The scan (chain_scans.completed_scan numbering) that last saw it; NULL when
    -- only a LIST reply has.
    last_scan BIGINT,
    UNIQUE (kind, chain_id)
);
CREATE INDEX chain_requests_newest ON chain_requests (kind, status, chain_timestamp DESC, id DESC);

-- One row per kind: how far the poller's scans of the chain's list have got.
CREATE TABLE chain_scans (
    kind TEXT PRIMARY KEY CHECK (kind IN ('partner', 'order')),
    -- The last scan that read the whole list (0: none yet, the mirror has no baseline).
    completed_scan BIGINT NOT NULL,
    completed_at TIMESTAMP,
    -- Where scan completed_scan + 1 continues, when a cycle stopped part-way.
    resume_scan BIGINT NOT NULL,
    resume_start BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
