DROP TABLE sessions;
ALTER TABLE operators DROP COLUMN last_used_at;
UPDATE operators SET role = 'operator' WHERE role = 'admin';
ALTER TABLE operators DROP CONSTRAINT IF EXISTS operators_role_check;
ALTER TABLE operators ADD CONSTRAINT operators_role_check CHECK (role IN ('operator', 'viewer'));
