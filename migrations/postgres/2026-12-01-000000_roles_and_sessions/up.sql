-- Roles viewer < operator < admin, when each key was last used, and the console's
-- server-side sessions (docs/security.md, "Keys, roles and sessions").
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_role_check;
ALTER TABLE operators ADD CONSTRAINT operators_role_check
    CHECK (role IN ('viewer', 'operator', 'admin'));
-- Written at most once a minute per key, so a busy key costs no write per request.
ALTER TABLE operators ADD COLUMN last_used_at TIMESTAMP;
-- A signed-in browser: the cookie holds a random id, only its SHA-256 is stored.
-- Removing an operator ends its sessions (cascade); rotating its key deletes them.
CREATE TABLE sessions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id_hash TEXT NOT NULL UNIQUE,
    operator_id BIGINT NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX sessions_operator_id ON sessions (operator_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
