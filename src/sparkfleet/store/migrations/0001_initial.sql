-- Clusters the fleet has started, with their last known state.
CREATE TABLE clusters (
    id          TEXT PRIMARY KEY,
    size        TEXT NOT NULL,
    runtime     TEXT NOT NULL,
    state       TEXT NOT NULL,
    address     TEXT,
    pid         INTEGER,
    cores       INTEGER NOT NULL,
    memory_mb   INTEGER NOT NULL,
    cpus        TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    exit_code   INTEGER
);

-- Every state change of a cluster, with its reason (the cluster's history).
CREATE TABLE cluster_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id  TEXT NOT NULL REFERENCES clusters(id),
    at          REAL NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX cluster_events_by_cluster ON cluster_events(cluster_id, seq);

-- Client sessions as the gateway presents them (one stable server-side id each).
CREATE TABLE sessions (
    session_id             TEXT NOT NULL,
    user_id                TEXT NOT NULL,
    server_side_session_id TEXT NOT NULL,
    state                  TEXT NOT NULL,
    client_type            TEXT NOT NULL DEFAULT '',
    home_cluster_id        TEXT,
    created_at             REAL NOT NULL,
    last_active_at         REAL NOT NULL,
    PRIMARY KEY (user_id, session_id)
);

-- Every ExecutePlan: where it ran, how it went.
CREATE TABLE queries (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    fingerprint     TEXT,
    profile         TEXT,
    estimate        TEXT,
    cluster_id      TEXT,
    runtime         TEXT,
    state           TEXT NOT NULL,
    placement_reason TEXT,
    submitted_at    REAL NOT NULL,
    finished_at     REAL,
    duration_ms     REAL,
    response_bytes  INTEGER NOT NULL DEFAULT 0,
    error_class     TEXT,
    error_message   TEXT,
    attempts        TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX queries_by_session ON queries(session_id, submitted_at);
CREATE INDEX queries_by_time ON queries(submitted_at);
