-- The session journal: every request that changed a session's state, in order, with the bytes
-- needed to replay it on another cluster. Superseded entries are deleted (compaction); removals
-- stay as tombstones so clusters that saw the removed state get the removal too.
CREATE TABLE journal (
    user_id     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    key         TEXT NOT NULL,
    removes     INTEGER NOT NULL DEFAULT 0,
    rpc         TEXT NOT NULL,
    payload     BLOB NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (user_id, session_id, seq)
);
