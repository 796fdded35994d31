-- Every finished run of a workload (queries with the same plan fingerprint): where it ran, how it
-- ended, what Spark measured it cost, and what it was expected to cost when it was placed. The
-- placement policy learns a fingerprint's cost from its recent successful runs. Metric columns
-- are NULL when the cluster's Spark UI could not be read (the run still counts as a run).
CREATE TABLE workload_runs (
    seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint             TEXT NOT NULL,
    query_id                TEXT NOT NULL,
    cluster_id              TEXT,
    size_class              TEXT,
    runtime                 TEXT,
    outcome                 TEXT NOT NULL,
    duration_ms             REAL,
    task_ms                 REAL,
    cpu_ms                  REAL,
    peak_execution_memory   INTEGER,
    spilled_bytes           INTEGER,
    shuffle_bytes           INTEGER,
    input_bytes             INTEGER,
    estimated_class         TEXT,
    estimated_core_seconds  REAL,
    recorded_at             REAL NOT NULL
);
CREATE INDEX workload_runs_by_fingerprint ON workload_runs(fingerprint, seq);
