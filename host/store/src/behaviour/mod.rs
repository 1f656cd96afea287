//! The store's behaviour, written once against the [`Store`] trait and run against both
//! backends: SQLite in a temporary directory, and PostgreSQL on a private server the tests start
//! themselves. A difference between the two is a bug in one of them, unless the trait leaves
//! the choice to the backend (then the assertion says so where it is made).
//!
//! Each test is an `async fn name(b: Backend)` in one of the files below; [`suite!`] lists them
//! and makes two `#[tokio::test]`s of each, `behaviour::sqlite::FILE::name` and
//! `behaviour::postgres::FILE::name`, so `cargo test -p spool-store behaviour::postgres` runs
//! one side. A test written but not listed is dead code, which the lints refuse.
//!
//! What only one backend has (SQLite's file, log, backups and migrations; PostgreSQL's hosts
//! sharing a database, LISTEN/NOTIFY, advisory locks) is tested beside that backend.

mod dlq;
mod lifecycle;
mod plugins;
mod queues;
mod routes;
mod schedules;

pub(crate) use queues::{depth_walk, depth_walk_options};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tempfile::TempDir;

use crate::pg_cluster::PgCluster;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Store, StoreOptions};
use spool_model::{MessageId, MessageState, NewMessage, QueueConfigPatch, Settle, Settlement};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// An open store and what must live as long as it.
pub(crate) struct Opened {
    // Declared first, so dropped first: the SQLite store closes before its directory goes.
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

impl Opened {
    /// A handle for tasks the test spawns.
    pub(crate) fn shared(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

impl std::ops::Deref for Opened {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// One PostgreSQL server for every test of this process: starting one takes seconds, a
/// database in it a fraction of one. The watchdog stops it after the process ends (a static is
/// never dropped).
static CLUSTER: LazyLock<Result<PgCluster, String>> = LazyLock::new(PgCluster::start_until_exit);

/// Names the databases of this process's tests apart.
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty store of backend `b`.
pub(crate) async fn open(b: Backend, opts: StoreOptions) -> Opened {
    match b {
        Backend::Sqlite => {
            let dir = TempDir::new().expect("a temporary directory");
            let store = SqliteStore::open(&dir.path().join("spool.db"), opts).expect("open store");
            Opened {
                store: Arc::new(store),
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let name = format!("behaviour_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
            // initdb and createdb are processes to wait for: not on a runtime worker.
            let url = tokio::task::spawn_blocking(move || {
                let cluster = CLUSTER
                    .as_ref()
                    .unwrap_or_else(|e| panic!("a private PostgreSQL: {e}"));
                cluster.create_database(&name)
            })
            .await
            .expect("create the test's database")
            .unwrap_or_else(|e| panic!("create the test's database: {e}"));
            let store = PgStore::connect_with(&url, opts)
                .await
                .expect("connect to the test's database");
            Opened {
                store: Arc::new(store),
                _dir: None,
            }
        }
    }
}

/// How long one behaviour test may take before it fails rather than hangs.
const TEST_BUDGET: Duration = Duration::from_secs(120);

/// Runs one behaviour test within [`TEST_BUDGET`].
pub(crate) async fn run(name: &str, test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_BUDGET, test).await.is_err() {
        panic!("{name} did not finish within {TEST_BUDGET:?}");
    }
}

/// Lists the behaviour tests, file by file, and makes a test per backend of each.
macro_rules! suite {
    ($($file:ident { $($test:ident),* $(,)? })*) => {
        mod sqlite {
            suite!(@backend Sqlite; $($file { $($test),* })*);
        }
        mod postgres {
            suite!(@backend Postgres; $($file { $($test),* })*);
        }
    };
    (@backend $backend:ident; $($file:ident { $($test:ident),* })*) => {
        $(
            mod $file {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $test() {
                        $crate::behaviour::run(
                            stringify!($test),
                            $crate::behaviour::$file::$test($crate::behaviour::Backend::$backend),
                        )
                        .await;
                    }
                )*
            }
        )*
    };
}

suite! {
    queues {
        put_queue_creates_then_patches_and_validates,
        concurrent_single_enqueues_get_distinct_ids_and_all_count,
        a_batch_with_one_invalid_message_stores_nothing,
        large_batches_return_ids_in_order_with_keys_mixed_in,
        enqueue_into_unknown_queue_fails,
        enqueue_stores_all_fields,
        a_batch_without_keys_stores_every_field_of_every_message,
        priority_order_is_priority_then_fifo,
        fifo_and_lifo_ignore_priority,
        weighted_random_hands_out_everything_exactly_once,
        weighted_random_favours_higher_priority,
        scheduled_messages_become_ready_when_due,
        list_messages_pages_exactly_once_while_inserting,
        list_messages_finds_an_idempotency_key_in_every_scope,
        paused_queue_hands_out_nothing_and_signals_fire,
        every_change_that_may_make_a_message_ready_wakes_its_queue,
        delete_queue_refuses_live_messages_unless_forced,
        delete_queue_without_live_messages_reports_the_records_it_removes,
        depth_counters_match_the_listings_through_every_transition,
        ping_answers,
        optimize_runs_on_a_live_store,
        history_keeps_the_last_sample_of_each_minute_for_a_week,
    }
    lifecycle {
        ttl_expires_unstarted_messages,
        ttl_does_not_expire_a_started_message_and_final_keys_stay_taken,
        idempotency_keys_deduplicate_and_supersede,
        idempotency_keys_are_scoped_per_producer,
        cancel_in_each_state,
        requeue_makes_delayed_and_backing_off_messages_ready,
        requeue_refuses_other_states_and_changes_nothing,
        settle_is_fenced_by_attempt,
        ack_keeps_a_payload_free_record_with_plugin_version,
        zero_acked_retention_deletes_on_ack,
        retry_dead_and_release_move_messages_and_count,
        extend_lease_is_fenced,
        maintain_recovers_expired_leases,
        maintain_applies_retention_windows,
        a_requested_retry_records_no_error_and_keeps_the_last_real_one,
        one_settle_batch_applies_each_kind_independently,
        a_ttl_counts_from_when_the_message_becomes_deliverable,
        a_released_message_can_expire_but_a_recovered_lease_cannot,
        replay_clears_the_ttl_and_counts_lease_expiries_afresh,
        a_dead_letter_keeps_its_idempotency_key_until_purged,
        a_cancel_requested_during_a_lease_wins_over_any_settlement,
        errors_are_cut_to_8_kib_and_plugin_versions_are_kept,
        extend_lease_needs_a_live_lease,
        the_oldest_ready_age_counts_from_the_enqueue,
    }
    dlq {
        dlq_list_filter_paginate_replay_review_purge,
        dead_letters_matching_a_filter_are_replayed_and_purged_oldest_first,
    }
    plugins {
        plugin_versions_activation_and_rollback,
        same_bytes_reactivate_their_version_and_any_version_can_be_activated,
        a_queue_handler_must_be_a_handler_plugin,
        a_plugin_in_use_is_not_deleted_and_a_deleted_one_leaves_nothing,
        a_large_plugin_round_trips_under_two_names,
        kv_round_trip_and_limits,
        kv_quotas_count_keys_and_bytes,
        plugin_config_secrets_and_grants_round_trip,
        a_deleted_plugin_takes_its_settings_along,
    }
    routes {
        routes_are_created_once_listed_and_deleted,
        a_route_needs_its_queue_and_a_filter_world_plugin,
        a_publish_writes_every_delivery_or_none_and_counts_per_route,
        a_failed_filter_delivery_is_a_dead_letter_that_can_be_routed_again,
        the_outbox_commits_with_an_ack_and_never_otherwise,
        a_trace_is_the_whole_correlation_tree,
        a_queue_keeps_its_messages_and_routes_unless_forced,
    }
    schedules {
        schedules_are_created_listed_updated_and_deleted,
        invalid_definitions_are_refused_and_name_the_field,
        a_fire_is_written_once_and_a_second_attempt_is_stale,
        a_recorded_fire_instant_is_never_written_again,
        an_edit_between_reading_and_firing_makes_the_fire_stale,
        fire_all_catches_up_at_most_max_catch_up_fires,
        skip_and_fire_once_after_an_outage,
        max_runs_ends_the_schedule,
        a_one_shot_ends_after_its_fire,
        the_fire_history_keeps_the_newest_fires,
        a_failed_delivery_leaves_the_schedule_due,
        run_now_fires_once_per_key_and_leaves_the_calendar_alone,
        a_long_name_is_refused_and_a_deleted_schedule_is_gone_everywhere,
        a_paused_schedule_runs_now_and_its_fires_say_so,
        a_topic_schedule_publishes_through_its_routes,
    }
}

// --- what the tests share ----------------------------------------------------------------------

/// A store of backend `b` with one queue `q` configured by `config` (a JSON patch).
pub(crate) async fn setup(b: Backend, config: &str) -> Opened {
    setup_with(b, config, StoreOptions::default()).await
}

pub(crate) async fn setup_with(b: Backend, config: &str, opts: StoreOptions) -> Opened {
    let store = open(b, opts).await;
    store.put_queue("q", &patch(config)).await.unwrap();
    store
}

/// A store of backend `b` with the named queues, configured by default.
pub(crate) async fn store_with(b: Backend, queues: &[&str]) -> Opened {
    let store = open(b, StoreOptions::default()).await;
    for q in queues {
        store
            .put_queue(q, &QueueConfigPatch::default())
            .await
            .unwrap();
    }
    store
}

pub(crate) fn patch(json: &str) -> QueueConfigPatch {
    serde_json::from_str(json).expect("patch json")
}

pub(crate) fn msg(payload: &str) -> NewMessage {
    NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

pub(crate) fn prio(payload: &str, priority: i32) -> NewMessage {
    NewMessage {
        priority,
        ..msg(payload)
    }
}

pub(crate) fn keyed(payload: &str, key: &str, supersede: bool) -> NewMessage {
    NewMessage {
        idempotency_key: Some(key.to_owned()),
        supersede,
        ..msg(payload)
    }
}

pub(crate) async fn enqueue_one(store: &dyn Store, m: NewMessage) -> MessageId {
    store.enqueue("q", vec![m]).await.unwrap()[0].id
}

pub(crate) async fn claim_payloads(store: &dyn Store, max: u32) -> Vec<String> {
    store
        .claim("q", max, 30_000)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|c| String::from_utf8(c.payload).unwrap())
        .collect()
}

pub(crate) fn settle(id: MessageId, attempt: u32, settlement: Settlement) -> Settle {
    Settle {
        id,
        attempt,
        settlement,
        plugin_version: None,
        outbox: Vec::new(),
    }
}

pub(crate) async fn state_of(store: &dyn Store, id: MessageId) -> MessageState {
    store.get_message(id).await.unwrap().state
}
