-- The schema of queuectl_sqlite.store at SCHEMA_VERSION 1, as released (before
-- commit cc77693), byte for byte: test_sqlite_schema.py builds old stores with it.
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    command          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    worker_id        TEXT,
    claim_token      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    exit_code        INTEGER
);
-- Claim order, over claimable jobs only: finished jobs never slow a claim.
-- Queries name it with INDEXED BY: without statistics the planner would
-- pick jobs_state and sort every claimable job on each claim.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, run_at, seq)
    WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    rowid        INTEGER PRIMARY KEY,
    job_id       TEXT NOT NULL,
    number       INTEGER NOT NULL,
    claim_token  TEXT NOT NULL UNIQUE,
    worker_id    TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT NOT NULL,
    exit_code    INTEGER,
    signal       INTEGER,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id, rowid);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    current_job  TEXT,
    job_pgid     INTEGER
);
