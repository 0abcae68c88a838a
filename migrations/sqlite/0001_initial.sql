-- The embedded twin of migrations/postgres/0001_initial.sql: the same tables, columns and view.
-- uuids are text, jsonb is JSON text, timestamps are ISO-8601 text (UTC), real[] is a JSON array.

CREATE TABLE batches (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'finished', 'cancelled')),
    model       TEXT NOT NULL,
    total       INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at TEXT
);
CREATE UNIQUE INDEX batches_name ON batches (name);

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    batch_id    TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    custom_id   TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'image')),
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'filtered', 'cancelled')),
    -- position of the line in the submitted files, so results come back in input order
    seq         INTEGER NOT NULL DEFAULT 0,
    priority    INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    input       TEXT NOT NULL,
    params      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    started_at  TEXT,
    finished_at TEXT,
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX jobs_batch_status ON jobs (batch_id, status);
CREATE INDEX jobs_batch_seq ON jobs (batch_id, seq);

CREATE TABLE results (
    job_id            TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    output_text       TEXT,
    reasoning         TEXT,
    candidates        TEXT NOT NULL DEFAULT '[]',
    rule_report       TEXT,
    embedding         TEXT,
    labels            TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    finish_reason     TEXT,
    model             TEXT NOT NULL,
    worker            TEXT NOT NULL,
    latency_ms        INTEGER NOT NULL DEFAULT 0,
    object_uri        TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Lines the producer rejected (malformed JSON, missing fields, bad params, unknown model,
-- duplicate custom_id), with the file, line and reason: kept where users look for results.
CREATE TABLE rejected_lines (
    batch_id   TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    file       TEXT NOT NULL,
    line       INTEGER NOT NULL,
    custom_id  TEXT,
    field      TEXT NOT NULL,
    error      TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (batch_id, file, line)
);

CREATE VIEW batch_progress AS
SELECT b.id AS batch_id,
       b.name,
       b.status,
       b.total,
       coalesce(sum(j.status = 'queued'), 0) AS queued,
       coalesce(sum(j.status = 'running'), 0) AS running,
       coalesce(sum(j.status = 'succeeded'), 0) AS succeeded,
       coalesce(sum(j.status = 'failed'), 0) AS failed,
       coalesce(sum(j.status = 'filtered'), 0) AS filtered,
       coalesce(sum(j.status = 'cancelled'), 0) AS cancelled
FROM batches b
LEFT JOIN jobs j ON j.batch_id = b.id
GROUP BY b.id;
