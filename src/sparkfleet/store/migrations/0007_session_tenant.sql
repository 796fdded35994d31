-- The tenant of the identity that created the session (auth.py); "default" without auth.
ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sessions_by_session_id ON sessions (session_id);
