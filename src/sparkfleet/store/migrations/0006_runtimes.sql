-- Spark runtimes side by side (policy/versions.py): each a Spark home plus default confs, in a
-- rollout stage. `ord` is the order they were added in; the release order is by version, then `ord`.
CREATE TABLE runtimes (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    spark_home TEXT NOT NULL,
    conf TEXT NOT NULL DEFAULT '{}',
    stage TEXT NOT NULL,
    ord INTEGER NOT NULL,
    added_at REAL NOT NULL,
    stage_reason TEXT NOT NULL DEFAULT '',
    stage_changed_at REAL NOT NULL
);

-- A workload fingerprint that must run on one runtime, and why.
CREATE TABLE runtime_pins (
    fingerprint TEXT PRIMARY KEY,
    runtime TEXT NOT NULL,
    broken_on TEXT NOT NULL,
    kind TEXT NOT NULL,            -- 'error' or 'slowdown'
    reason TEXT NOT NULL,
    pinned_at REAL NOT NULL
);

-- One row per workload a runtime broke: the failing run and the run that passed.
CREATE TABLE regressions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- 'error' or 'slowdown'
    broken_on TEXT NOT NULL,
    passed_on TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    error_class TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    failed_run TEXT NOT NULL DEFAULT '{}',   -- JSON: query id, seconds, ...
    passed_run TEXT NOT NULL DEFAULT '{}',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    occurrences INTEGER NOT NULL DEFAULT 1,
    UNIQUE (kind, broken_on, passed_on, fingerprint, error_class)
);
CREATE INDEX regressions_by_pair ON regressions (broken_on, passed_on, error_class);
