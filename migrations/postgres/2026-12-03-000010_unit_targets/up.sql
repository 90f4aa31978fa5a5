-- Each unit's targets for its day reports' indicators (ISO 22400-2), set by an
-- operator (PUT /api/ProductionUnit/<id>/target): local data, never sent to the chain.
-- One row per unit; fractions from 0 to 1; only the OEE target is required.
CREATE TABLE unit_targets (
    unit_id BIGINT PRIMARY KEY REFERENCES production_units (id) ON DELETE CASCADE,
    oee DOUBLE PRECISION NOT NULL CHECK (oee >= 0 AND oee <= 1),
    availability DOUBLE PRECISION CHECK (availability >= 0 AND availability <= 1),
    performance DOUBLE PRECISION CHECK (performance >= 0 AND performance <= 1),
    quality DOUBLE PRECISION CHECK (quality >= 0 AND quality <= 1),
    updated_at TIMESTAMP NOT NULL
);
