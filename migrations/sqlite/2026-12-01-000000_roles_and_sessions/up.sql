-- SQLite twin of the PostgreSQL migration. SQLite cannot change a CHECK constraint:
-- the operators table is rebuilt (nothing refers to it yet).
CREATE TABLE operators_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    key_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    -- Written at most once a minute per key.
    last_used_at TIMESTAMP
);
INSERT INTO operators_new (id, name, role, key_hash, created_at, updated_at)
SELECT id, name, role, key_hash, created_at, updated_at FROM operators;
DROP TABLE operators;
ALTER TABLE operators_new RENAME TO operators;
-- A signed-in browser: the cookie holds a random id, only its SHA-256 is stored.
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    id_hash TEXT NOT NULL UNIQUE,
    operator_id BIGINT NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX sessions_operator_id ON sessions (operator_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
