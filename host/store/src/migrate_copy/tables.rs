//! What `spool migrate` copies: every table of the SQLite schema (`sqlite/schema.rs`) with its
//! PostgreSQL twin (`postgres/schema.sql`), column by column, and how each value converts.
//!
//! The two schemas use the same table and column names; only types differ (SQLite's INTEGER
//! 0/1 is BOOLEAN, JSON kept as TEXT is JSONB, INTEGER is SMALLINT/INTEGER/BIGINT). What exists
//! on one side only is listed in [`SQLITE_ONLY`] and [`POSTGRES_ONLY`] with the reason, and a
//! test compares all of this against both live schemas, so a migration that adds a column to
//! one store and not here fails the tests instead of silently dropping data.

use tokio_postgres::types::Type;

/// How a SQLite value becomes the PostgreSQL column's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// SMALLINT, INTEGER, BIGINT from SQLite's INTEGER (range-checked: a value that does not
    /// fit is an error naming the row, never a wrapped number).
    Int2,
    Int4,
    Int8,
    /// BOOLEAN from SQLite's 0 or 1.
    Bool,
    Text,
    Bytea,
    /// JSONB from JSON stored as TEXT (parsed, so a damaged value names its row).
    Jsonb,
    /// A plugin component (BYTEA). SQLite's empty `wasm` means "my bytes are the
    /// `plugin_chunks` pieces of my sha256" (`sqlite/plugin_chunks.rs`); they are put together
    /// again, since PostgreSQL keeps every component whole in its row.
    Wasm,
}

impl Kind {
    pub(super) fn pg_type(self) -> Type {
        match self {
            Kind::Int2 => Type::INT2,
            Kind::Int4 => Type::INT4,
            Kind::Int8 => Type::INT8,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Bytea | Kind::Wasm => Type::BYTEA,
            Kind::Jsonb => Type::JSONB,
        }
    }
}

/// One copied column: the same name on both sides.
#[derive(Debug, Clone, Copy)]
pub(super) struct Col {
    pub name: &'static str,
    pub kind: Kind,
    /// NULL allowed (checked while reading, so a NULL in a NOT NULL column names its row).
    pub null: bool,
}

const fn col(name: &'static str, kind: Kind) -> Col {
    Col {
        name,
        kind,
        null: false,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Col {
    Col {
        name,
        kind,
        null: true,
    }
}

/// One copied table.
#[derive(Debug)]
pub(super) struct Table {
    pub name: &'static str,
    /// A unique key rows are read in order of; a resumed copy continues after the last key
    /// committed. Keys, not SQLite rowids: a `VACUUM` (or `spool backup`) may renumber the
    /// rowids of tables without an integer primary key.
    pub key: &'static [&'static str],
    pub cols: &'static [Col],
    /// The BIGSERIAL sequence of the table's `id`, moved past every id the source handed out.
    pub sequence: Option<&'static str>,
}

use Kind::*;

/// Every copied table, in copy order: what others refer to first, messages (by far the
/// largest) last.
pub(super) const TABLES: &[Table] = &[
    Table {
        name: "queues",
        key: &["id"],
        // The totals and depths are not columns on PostgreSQL: they go into counter shard 0
        // (`queue_counters`) once the messages are there (see [`SQLITE_ONLY`]).
        cols: &[
            col("id", Int8),
            col("name", Text),
            col("config", Jsonb),
            col("created_at", Int8),
        ],
        sequence: Some("queues_id_seq"),
    },
    Table {
        name: "queue_history",
        key: &["queue_id", "minute"],
        cols: &[
            col("queue_id", Int8),
            col("minute", Int8),
            col("scheduled", Int8),
            col("ready", Int8),
            col("leased", Int8),
            col("dlq_depth", Int8),
            col("enqueued", Int8),
            col("acked", Int8),
            col("retried", Int8),
            col("dead", Int8),
            col("cancelled", Int8),
            col("expired", Int8),
            opt("oldest_ready_age_ms", Int8),
        ],
        sequence: None,
    },
    Table {
        name: "plugins",
        key: &["id"],
        cols: &[
            col("id", Int8),
            col("name", Text),
            col("version", Int4),
            col("sha256", Text),
            col("world", Text),
            col("size", Int8),
            col("created_at", Int8),
            col("wasm", Wasm),
        ],
        sequence: Some("plugins_id_seq"),
    },
    Table {
        name: "plugin_heads",
        key: &["name"],
        cols: &[col("name", Text), col("active_version", Int4)],
        sequence: None,
    },
    Table {
        name: "plugin_history",
        key: &["id"],
        cols: &[
            col("id", Int8),
            col("name", Text),
            col("at", Int8),
            opt("actor", Text),
            col("action", Text),
            opt("from_version", Int4),
            col("to_version", Int4),
        ],
        sequence: Some("plugin_history_id_seq"),
    },
    Table {
        name: "plugin_kv",
        key: &["plugin", "key"],
        cols: &[col("plugin", Text), col("key", Text), col("value", Bytea)],
        sequence: None,
    },
    Table {
        name: "plugin_config",
        key: &["plugin", "key"],
        cols: &[
            col("plugin", Text),
            col("key", Text),
            col("value", Text),
            col("secret", Bool),
        ],
        sequence: None,
    },
    Table {
        name: "plugin_grants",
        key: &["plugin"],
        cols: &[col("plugin", Text), col("grants", Jsonb)],
        sequence: None,
    },
    Table {
        name: "routes",
        key: &["id"],
        cols: &[
            col("id", Int8),
            col("pattern", Text),
            col("queue_id", Int8),
            opt("filter", Text),
            opt("headers", Jsonb),
            opt("limits", Jsonb),
            col("created_at", Int8),
            col("delivered_total", Int8),
        ],
        sequence: Some("routes_id_seq"),
    },
    Table {
        name: "schedules",
        key: &["id"],
        cols: &[
            col("id", Int8),
            opt("name", Text),
            opt("cron", Text),
            opt("every_ms", Int8),
            opt("at_ms", Int8),
            opt("timezone", Text),
            col("target_kind", Text),
            col("target", Text),
            opt("headers", Jsonb),
            opt("priority", Int4),
            opt("start_at", Int8),
            opt("end_at", Int8),
            opt("max_runs", Int8),
            col("missed", Text),
            col("paused", Bool),
            col("created_at", Int8),
            opt("next_fire_at", Int8),
            col("runs", Int8),
            opt("last_fire_at", Int8),
            col("generation", Int8),
            col("payload", Bytea),
        ],
        sequence: Some("schedules_id_seq"),
    },
    Table {
        name: "schedule_fires",
        key: &["schedule_id", "fire_at"],
        cols: &[
            col("schedule_id", Int8),
            col("fire_at", Int8),
            col("fired_at", Int8),
            col("message_ids", Jsonb),
            col("manual", Bool),
        ],
        sequence: None,
    },
    Table {
        name: "messages",
        key: &["id"],
        cols: &[
            col("id", Int8),
            col("queue_id", Int8),
            col("state", Int2),
            col("priority", Int4),
            col("attempts", Int4),
            col("enqueued_at", Int8),
            col("available_at", Int8),
            opt("expires_at", Int8),
            opt("lease_expires_at", Int8),
            opt("finished_at", Int8),
            opt("reviewed_at", Int8),
            col("cancel_requested", Bool),
            col("lease_expiries", Int4),
            col("idem_scope", Text),
            opt("idem_key", Text),
            opt("topic", Text),
            opt("correlation_id", Text),
            opt("headers", Jsonb),
            opt("last_error", Text),
            opt("error_category", Text),
            opt("plugin_version", Text),
            opt("producer", Text),
            opt("parent_id", Int8),
            col("chain_depth", Int4),
            opt("route_id", Int8),
            opt("payload", Bytea),
        ],
        sequence: Some("messages_id_seq"),
    },
];

/// The index of the messages table in [`TABLES`].
pub(super) fn messages_index() -> usize {
    TABLES
        .iter()
        .position(|t| t.name == "messages")
        .unwrap_or(TABLES.len() - 1)
}

/// What exists in SQLite only, and where it goes instead. Read by the schema test only: the
/// copy itself needs nothing from it, the list is what keeps every column accounted for.
#[cfg(test)]
pub(super) const SQLITE_ONLY: &[(&str, &str, &str)] = &[
    (
        "queues",
        "enqueued_total acked_total retried_total dead_total cancelled_total expired_total",
        "PostgreSQL keeps totals in queue_counters: written to shard 0",
    ),
    (
        "queues",
        "scheduled_now ready_now leased_now dead_now",
        "PostgreSQL keeps depths in queue_counters: recounted from the copied messages",
    ),
    (
        "plugin_chunks",
        "*",
        "pieces of large components: put together into plugins.wasm",
    ),
    (
        "spool_meta",
        "*",
        "the SQLite file's own facts (last backup, write probe)",
    ),
];

/// What exists in PostgreSQL only (read by the schema test, like [`SQLITE_ONLY`]).
#[cfg(test)]
pub(super) const POSTGRES_ONLY: &[(&str, &str, &str)] = &[
    (
        "queues",
        "enqueued_total acked_total retried_total dead_total cancelled_total expired_total",
        "mirrors SQLite's columns but is not read: totals live in queue_counters",
    ),
    (
        "queue_counters",
        "*",
        "written once all messages are copied",
    ),
    (
        "spool_meta",
        "*",
        "holds the migration's own progress record",
    ),
    ("spool_schema", "*", "the schema version"),
];
