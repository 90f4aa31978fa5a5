DROP TABLE sessions;
CREATE TABLE operators_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('operator', 'viewer')),
    key_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
INSERT INTO operators_old (id, name, role, key_hash, created_at, updated_at)
SELECT id, name, CASE WHEN role = 'admin' THEN 'operator' ELSE role END, key_hash,
       created_at, updated_at FROM operators;
DROP TABLE operators;
ALTER TABLE operators_old RENAME TO operators;
