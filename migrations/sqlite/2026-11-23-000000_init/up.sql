-- SQLite twin of the PostgreSQL migration: same tables, columns and constraints.
-- Timestamps are UTC text written by the application (diesel's "%F %T%.f"), so
-- comparisons order correctly and match what PostgreSQL stores.

-- The MES's identity on the chain (the original KafkaToken model).
CREATE TABLE kafka_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    instance_type TEXT NOT NULL,
    token TEXT NOT NULL,
    public_key TEXT,
    password TEXT,
    record_id TEXT,
    topic TEXT,
    name TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- Every request carries the master token: there must never be two to choose from.
CREATE UNIQUE INDEX kafka_tokens_one_master ON kafka_tokens (instance_type)
    WHERE instance_type = 'Master';

CREATE TABLE production_units (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    process_name TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE day_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    unit_code TEXT NOT NULL REFERENCES production_units (code),
    report_date DATE NOT NULL,
    -- 1 = A, 2 = B, 3 = C, 4 = day average (the record id's shift digit)
    shift INTEGER NOT NULL CHECK (shift BETWEEN 1 AND 4),
    planned_busy_time_s DOUBLE,
    actual_production_time_s DOUBLE,
    planned_unit_time_s DOUBLE,
    produced_quantity DOUBLE,
    good_quantity DOUBLE,
    failure_count INTEGER,
    repair_time_s DOUBLE,
    availability DOUBLE,
    performance DOUBLE,
    quality DOUBLE,
    oee DOUBLE,
    mtbf_s DOUBLE,
    mttr_s DOUBLE,
    production_time_s DOUBLE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (unit_code, report_date, shift)
);

-- Transactional outbox: chain messages are written with the change that causes them
-- and delivered by a relay, so nothing is lost when Kafka or the server is down.
CREATE TABLE chain_outbox (
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
    delivered_at TIMESTAMP
);
CREATE INDEX chain_outbox_status_next_attempt_at ON chain_outbox (status, next_attempt_at);
CREATE INDEX chain_outbox_ordering_key_id ON chain_outbox (ordering_key, id);

-- Audit trail of every operator accept/reject.
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('partner', 'order')),
    request_id TEXT NOT NULL,
    response INTEGER NOT NULL CHECK (response IN (0, 1)),
    operator TEXT NOT NULL,
    correlation_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN
        ('pending', 'ok', 'chain_error', 'timeout', 'broker_unavailable', 'overloaded', 'failed')),
    chain_message TEXT,
    chain_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX decisions_request_id ON decisions (request_id);

CREATE TABLE production_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    chain_order_id TEXT NOT NULL UNIQUE,
    issuing_agent TEXT NOT NULL,
    order_type TEXT NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    chain_timestamp BIGINT NOT NULL,
    decision_id BIGINT REFERENCES decisions (id),
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX production_orders_decision_id ON production_orders (decision_id);
