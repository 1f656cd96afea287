-- Per-minute queue history for charts (`Store::record_history`): the last sample of each
-- minute, kept a week.
CREATE TABLE queue_history (
    queue_id            BIGINT NOT NULL,
    minute              BIGINT NOT NULL,
    scheduled           BIGINT NOT NULL,
    ready               BIGINT NOT NULL,
    leased              BIGINT NOT NULL,
    dlq_depth           BIGINT NOT NULL,
    enqueued            BIGINT NOT NULL,
    acked               BIGINT NOT NULL,
    retried             BIGINT NOT NULL,
    dead                BIGINT NOT NULL,
    cancelled           BIGINT NOT NULL,
    expired             BIGINT NOT NULL,
    oldest_ready_age_ms BIGINT,
    PRIMARY KEY (queue_id, minute)
);
CREATE INDEX queue_history_by_minute ON queue_history (minute);
