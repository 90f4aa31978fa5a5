-- SQLite twin of the PostgreSQL migration: each unit's targets for its day reports'
-- indicators (ISO 22400-2), local data, never sent to the chain.
CREATE TABLE unit_targets (
    unit_id BIGINT PRIMARY KEY NOT NULL REFERENCES production_units (id) ON DELETE CASCADE,
    oee DOUBLE NOT NULL CHECK (oee >= 0 AND oee <= 1),
    availability DOUBLE CHECK (availability >= 0 AND availability <= 1),
    performance DOUBLE CHECK (performance >= 0 AND performance <= 1),
    quality DOUBLE CHECK (quality >= 0 AND quality <= 1),
    updated_at TIMESTAMP NOT NULL
);
