-- DRAFT (pg-store branch): the PostgreSQL schema, one migration, mirroring sqlite/schema.rs at
-- V_PLUGIN_CHUNKS. Times are Unix ms (BIGINT), like SQLite's, so rows convert one to one
-- (`spool migrate`). Not wired into anything yet.

CREATE TABLE spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE queues (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    config          JSONB NOT NULL,
    created_at      BIGINT NOT NULL,
    enqueued_total  BIGINT NOT NULL DEFAULT 0,
    acked_total     BIGINT NOT NULL DEFAULT 0,
    retried_total   BIGINT NOT NULL DEFAULT 0,
    dead_total      BIGINT NOT NULL DEFAULT 0,
    cancelled_total BIGINT NOT NULL DEFAULT 0,
    expired_total   BIGINT NOT NULL DEFAULT 0
);

-- Depths and totals as deltas in shards: one row per (queue, shard), each transaction adding to
-- the shard its connection owns, so hosts never queue on one counter row; stats sum the shards.
CREATE TABLE queue_counters (
    queue_id      BIGINT NOT NULL,
    shard         SMALLINT NOT NULL,
    scheduled_now BIGINT NOT NULL DEFAULT 0,
    ready_now     BIGINT NOT NULL DEFAULT 0,
    leased_now    BIGINT NOT NULL DEFAULT 0,
    dead_now      BIGINT NOT NULL DEFAULT 0,
    enqueued      BIGINT NOT NULL DEFAULT 0,
    acked         BIGINT NOT NULL DEFAULT 0,
    retried       BIGINT NOT NULL DEFAULT 0,
    dead          BIGINT NOT NULL DEFAULT 0,
    cancelled     BIGINT NOT NULL DEFAULT 0,
    expired       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, shard)
) WITH (fillfactor = 50);

CREATE TABLE messages (
    id               BIGSERIAL PRIMARY KEY,
    queue_id         BIGINT NOT NULL,
    state            SMALLINT NOT NULL,
    priority         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    enqueued_at      BIGINT NOT NULL,
    available_at     BIGINT NOT NULL,
    expires_at       BIGINT,
    lease_expires_at BIGINT,
    finished_at      BIGINT,
    reviewed_at      BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    lease_expiries   INTEGER NOT NULL DEFAULT 0,
    idem_scope       TEXT NOT NULL DEFAULT '',
    idem_key         TEXT,
    topic            TEXT,
    correlation_id   TEXT,
    headers          JSONB,
    last_error       TEXT,
    error_category   TEXT,
    plugin_version   TEXT,
    producer         TEXT,
    parent_id        BIGINT,
    chain_depth      INTEGER NOT NULL DEFAULT 0,
    route_id         BIGINT,
    payload          BYTEA
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
        autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_cost_limit = 2000);

CREATE INDEX messages_by_state ON messages (queue_id, state, id);
CREATE INDEX messages_ready_by_priority ON messages (queue_id, priority DESC, id) WHERE state = 1;
CREATE INDEX messages_scheduled_due ON messages (queue_id, available_at) WHERE state = 0;
CREATE INDEX messages_ttl ON messages (queue_id, expires_at)
    WHERE state < 2 AND attempts = 0 AND expires_at IS NOT NULL;
CREATE INDEX messages_lease ON messages (lease_expires_at) WHERE state = 2;
CREATE UNIQUE INDEX messages_idem_scope_key ON messages (queue_id, idem_scope, idem_key)
    WHERE idem_key IS NOT NULL;
CREATE INDEX messages_acked ON messages (finished_at) WHERE state = 3;
CREATE INDEX messages_dead ON messages (id) WHERE state = 4;
CREATE INDEX messages_dead_reviewed ON messages (reviewed_at)
    WHERE state = 4 AND reviewed_at IS NOT NULL;
CREATE INDEX messages_by_correlation ON messages (correlation_id)
    WHERE correlation_id IS NOT NULL;

CREATE TABLE plugins (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    world      TEXT NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    wasm       BYTEA NOT NULL,
    UNIQUE (name, version)
);
-- Components hardly compress and are read whole: stored out of line without a compression try.
ALTER TABLE plugins ALTER COLUMN wasm SET STORAGE EXTERNAL;
CREATE TABLE plugin_heads (name TEXT PRIMARY KEY, active_version INTEGER NOT NULL);
CREATE TABLE plugin_history (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL,
    at           BIGINT NOT NULL,
    actor        TEXT,
    action       TEXT NOT NULL,
    from_version INTEGER,
    to_version   INTEGER NOT NULL
);
CREATE INDEX plugin_history_by_name ON plugin_history (name, id);
CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BYTEA NOT NULL,
    PRIMARY KEY (plugin, key)
);
CREATE TABLE plugin_config (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    secret BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (plugin, key)
);
CREATE TABLE plugin_grants (plugin TEXT PRIMARY KEY, grants JSONB NOT NULL);

CREATE TABLE routes (
    id              BIGSERIAL PRIMARY KEY,
    pattern         TEXT NOT NULL,
    queue_id        BIGINT NOT NULL,
    filter          TEXT,
    headers         JSONB,
    limits          JSONB,
    created_at      BIGINT NOT NULL,
    delivered_total BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX routes_by_queue ON routes (queue_id);
CREATE INDEX routes_by_filter ON routes (filter) WHERE filter IS NOT NULL;

CREATE TABLE schedules (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT,
    cron         TEXT,
    every_ms     BIGINT,
    at_ms        BIGINT,
    timezone     TEXT,
    target_kind  TEXT NOT NULL CHECK (target_kind IN ('queue', 'topic')),
    target       TEXT NOT NULL,
    headers      JSONB,
    priority     INTEGER,
    start_at     BIGINT,
    end_at       BIGINT,
    max_runs     BIGINT,
    missed       TEXT NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT false,
    created_at   BIGINT NOT NULL,
    next_fire_at BIGINT,
    runs         BIGINT NOT NULL DEFAULT 0,
    last_fire_at BIGINT,
    generation   BIGINT NOT NULL DEFAULT 1,
    payload      BYTEA NOT NULL,
    CHECK (num_nonnulls(cron, every_ms, at_ms) = 1)
);
CREATE INDEX schedules_due ON schedules (next_fire_at)
    WHERE NOT paused AND next_fire_at IS NOT NULL;
CREATE TABLE schedule_fires (
    schedule_id BIGINT NOT NULL,
    fire_at     BIGINT NOT NULL,
    fired_at    BIGINT NOT NULL,
    message_ids JSONB NOT NULL,
    manual      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (schedule_id, fire_at)
);
