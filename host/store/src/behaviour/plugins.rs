//! Plugins: versions, activation history, the world rules, deletion; their key-value data,
//! configuration, secrets and grants.

use super::*;
use crate::StoreError;
use spool_model::now_ms;

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

pub(super) async fn plugin_versions_activation_and_rollback(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    assert!(matches!(
        store.active_plugin("echo").await,
        Err(StoreError::PluginNotFound(_))
    ));
    assert!(matches!(
        store.rollback_plugin("echo", None).await,
        Err(StoreError::PluginNotFound(_))
    ));
    let v1 = store
        .put_plugin("echo", "handler", &sha(1), b"wasm-1".to_vec(), None)
        .await
        .unwrap()
        .version;
    assert_eq!((v1.version, v1.active, v1.size), (1, true, 6));
    assert!(matches!(
        store.rollback_plugin("echo", None).await,
        Err(StoreError::NoPreviousVersion(_))
    ));
    let same = store
        .put_plugin("echo", "handler", &sha(1), b"wasm-1".to_vec(), None)
        .await
        .unwrap();
    assert!(!same.new_version);
    assert_eq!(
        same.version, v1,
        "same bytes as the active version: unchanged"
    );
    let v2 = store
        .put_plugin("echo", "handler", &sha(2), b"wasm-2".to_vec(), None)
        .await
        .unwrap()
        .version;
    assert_eq!(v2.version, 2);
    let (active, bytes) = store.active_plugin("echo").await.unwrap();
    assert_eq!((active.version, bytes), (2, b"wasm-2".to_vec()));

    let back = store.rollback_plugin("echo", None).await.unwrap();
    assert_eq!((back.version, back.sha256.clone()), (1, sha(1)));
    let (active, bytes) = store.active_plugin("echo").await.unwrap();
    assert_eq!((active.version, bytes), (1, b"wasm-1".to_vec()));

    let v3 = store
        .put_plugin("echo", "handler", &sha(3), b"wasm-3".to_vec(), None)
        .await
        .unwrap()
        .version;
    assert_eq!(v3.version, 3, "versions only grow");
    store
        .put_plugin("filter-a", "filter", &sha(4), b"f".to_vec(), None)
        .await
        .unwrap();
    let list: Vec<(String, u32, bool)> = store
        .list_plugins()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version, p.active))
        .collect();
    assert_eq!(
        list,
        vec![
            ("echo".into(), 1, false),
            ("echo".into(), 2, false),
            ("echo".into(), 3, true),
            ("filter-a".into(), 1, true)
        ]
    );
    assert!(matches!(
        store
            .put_plugin("bad name", "handler", &sha(5), b"x".to_vec(), None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.put_plugin("echo", "handler", "abc", b"x".to_vec(), None).await,
        Err(StoreError::Invalid(m)) if m.contains("sha256")
    ));
}

async fn history(store: &dyn Store, name: &str) -> Vec<(String, Option<String>, Option<u32>, u32)> {
    store
        .plugin_history(name)
        .await
        .unwrap()
        .into_iter()
        .map(|h| {
            (
                h.action.as_str().to_owned(),
                h.actor,
                h.from_version,
                h.to_version,
            )
        })
        .collect()
}

pub(super) async fn same_bytes_reactivate_their_version_and_any_version_can_be_activated(
    b: Backend,
) {
    let store = open(b, StoreOptions::default()).await;
    let put = |sha_n: u8, actor: Option<&'static str>| {
        let store = store.shared();
        async move {
            store
                .put_plugin("p", "handler", &sha(sha_n), vec![sha_n], actor)
                .await
                .unwrap()
        }
    };
    assert!(put(1, Some("ci")).await.new_version);
    assert!(put(2, Some("ci")).await.new_version);
    let again = put(1, None).await;
    assert!(!again.new_version, "the bytes of version 1: no copy");
    assert_eq!((again.version.version, again.version.active), (1, true));
    let (active, bytes) = store.active_plugin("p").await.unwrap();
    assert_eq!((active.version, bytes), (1, vec![1]));
    assert_eq!(
        store.list_plugins().await.unwrap().len(),
        2,
        "nothing was copied"
    );

    let v = store.activate_plugin("p", 2, Some("ops")).await.unwrap();
    assert_eq!((v.version, v.active), (2, true));
    assert_eq!(store.active_plugin("p").await.unwrap().0.version, 2);
    let same = store.activate_plugin("p", 2, Some("ops")).await.unwrap();
    assert_eq!(
        same.version, 2,
        "activating the active version changes nothing"
    );
    assert!(matches!(
        store.activate_plugin("p", 9, None).await,
        Err(StoreError::PluginVersionNotFound { version: 9, .. })
    ));
    assert!(matches!(
        store.activate_plugin("nope", 1, None).await,
        Err(StoreError::PluginNotFound(_))
    ));
    store.rollback_plugin("p", Some("ops")).await.unwrap();

    let d = |a: &str, who: Option<&str>, from: Option<u32>, to: u32| {
        (a.to_owned(), who.map(str::to_owned), from, to)
    };
    assert_eq!(
        history(&*store, "p").await,
        vec![
            d("deploy", Some("ci"), None, 1),
            d("deploy", Some("ci"), Some(1), 2),
            d("deploy", None, Some(2), 1),
            d("activate", Some("ops"), Some(1), 2),
            d("rollback", Some("ops"), Some(2), 1),
        ]
    );
    let first = &store.plugin_history("p").await.unwrap()[0];
    assert!((now_ms() - first.at).abs() < 60_000, "{first:?}");
    assert!(matches!(
        store.plugin_history("nope").await,
        Err(StoreError::PluginNotFound(_))
    ));
}

pub(super) async fn a_queue_handler_must_be_a_handler_plugin(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    store
        .put_plugin("f", "filter", &sha(1), b"f".to_vec(), None)
        .await
        .unwrap();
    let err = store
        .put_queue("q", &patch(r#"{"handler": "f"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongWorld(m) if m.contains("filter") && m.contains("\"f\"")),
        "{err}"
    );
    assert!(
        matches!(
            store.get_queue("q").await,
            Err(StoreError::QueueNotFound(_))
        ),
        "a refused PUT creates nothing"
    );
    // Not deployed yet: allowed (deploy-later), and the later deploy is checked instead.
    store
        .put_queue("q", &patch(r#"{"handler": "later"}"#))
        .await
        .unwrap();
    let err = store
        .put_plugin("later", "filter", &sha(2), b"l".to_vec(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongWorld(m) if m.contains("queue(s) q")),
        "{err}"
    );
    assert!(
        store
            .list_plugins()
            .await
            .unwrap()
            .iter()
            .all(|p| p.name != "later")
    );

    // A plugin with a filter version 1 and a handler version 2, used by the queue: neither a
    // rollback nor an activation may bring the filter back.
    store
        .put_queue("q", &patch(r#"{"handler": null}"#))
        .await
        .unwrap();
    store
        .put_plugin("h", "filter", &sha(3), b"h1".to_vec(), None)
        .await
        .unwrap();
    store
        .put_plugin("h", "handler", &sha(4), b"h2".to_vec(), None)
        .await
        .unwrap();
    store
        .put_queue("q", &patch(r#"{"handler": "h"}"#))
        .await
        .unwrap();
    for result in [
        store.rollback_plugin("h", None).await,
        store.activate_plugin("h", 1, None).await,
        store
            .put_plugin("h", "filter", &sha(3), b"h1".to_vec(), None)
            .await
            .map(|d| d.version),
    ] {
        assert!(
            matches!(&result, Err(StoreError::WrongWorld(_))),
            "{result:?}"
        );
    }
    assert_eq!(store.active_plugin("h").await.unwrap().0.version, 2);
    assert_eq!(
        history(&*store, "h").await.len(),
        2,
        "refusals record nothing"
    );
}

pub(super) async fn a_plugin_in_use_is_not_deleted_and_a_deleted_one_leaves_nothing(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    for n in 1..=2 {
        store
            .put_plugin("p", "handler", &sha(n), vec![n], None)
            .await
            .unwrap();
    }
    store.kv_set("p", "count", b"7".to_vec()).await.unwrap();
    store.kv_set("other", "count", b"1".to_vec()).await.unwrap();
    store
        .put_queue("a", &patch(r#"{"handler": "p"}"#))
        .await
        .unwrap();
    store
        .put_queue("b", &patch(r#"{"handler": "p"}"#))
        .await
        .unwrap();
    let err = store.delete_plugin("p").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::PluginInUse { queues, .. } if queues == &["a", "b"]),
        "{err}"
    );
    assert!(err.to_string().contains("a, b"), "{err}");
    assert_eq!(store.active_plugin("p").await.unwrap().0.version, 2);

    store
        .put_queue("a", &patch(r#"{"handler": null}"#))
        .await
        .unwrap();
    store.delete_queue("b", false).await.unwrap();
    let deleted = store.delete_plugin("p").await.unwrap();
    assert_eq!((deleted.versions, deleted.kv_entries), (2, 1));
    assert!(matches!(
        store.active_plugin("p").await,
        Err(StoreError::PluginNotFound(_))
    ));
    assert!(store.list_plugins().await.unwrap().is_empty());
    assert_eq!(store.kv_get("p", "count").await.unwrap(), None);
    assert_eq!(
        store.kv_get("other", "count").await.unwrap(),
        Some(b"1".to_vec()),
        "other plugins' data stays"
    );
    assert!(matches!(
        store.delete_plugin("p").await,
        Err(StoreError::PluginNotFound(_))
    ));
    // Deployed again, it starts over: version 1, a fresh history.
    let again = store
        .put_plugin("p", "handler", &sha(2), vec![2], None)
        .await
        .unwrap();
    assert_eq!((again.version.version, again.new_version), (1, true));
    assert_eq!(history(&*store, "p").await.len(), 1);
}

pub(super) async fn kv_round_trip_and_limits(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    assert_eq!(store.kv_get("p", "k").await.unwrap(), None);
    store.kv_set("p", "k", b"v1".to_vec()).await.unwrap();
    store.kv_set("p", "k", b"v2".to_vec()).await.unwrap();
    store.kv_set("other", "k", b"o".to_vec()).await.unwrap();
    assert_eq!(store.kv_get("p", "k").await.unwrap(), Some(b"v2".to_vec()));
    assert_eq!(
        store.kv_get("other", "k").await.unwrap(),
        Some(b"o".to_vec())
    );
    store.kv_delete("p", "k").await.unwrap();
    assert_eq!(store.kv_get("p", "k").await.unwrap(), None);

    let max_key = "k".repeat(256);
    store
        .kv_set("p", &max_key, vec![7; 64 * 1024])
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("p", &max_key).await.unwrap().unwrap().len(),
        65_536
    );
    let err = store
        .kv_set("p", &"k".repeat(257), b"v".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m.contains("256")),
        "{err}"
    );
    let err = store
        .kv_set("p", "k", vec![0; 64 * 1024 + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m.contains("65536")),
        "{err}"
    );
    assert!(matches!(
        store.kv_get("p", "").await,
        Err(StoreError::Invalid(_))
    ));
}

pub(super) async fn kv_quotas_count_keys_and_bytes(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    store
        .kv_set_within("p", "a", vec![0; 10], 2, 100)
        .await
        .unwrap();
    store
        .kv_set_within("p", "b", vec![0; 10], 2, 100)
        .await
        .unwrap();
    // Overwriting an existing key does not count it twice.
    store
        .kv_set_within("p", "b", vec![0; 20], 2, 100)
        .await
        .unwrap();
    let err = store
        .kv_set_within("p", "c", vec![0; 1], 2, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::KvQuota(m) if m.contains("kv_max_keys")),
        "{err}"
    );
    let err = store
        .kv_set_within("p", "b", vec![0; 90], 2, 100)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("kv quota:") && err.to_string().contains("kv_max_bytes"));
    // Another plugin has its own quota; the refused sets changed nothing.
    store
        .kv_set_within("q", "c", vec![0; 1], 2, 100)
        .await
        .unwrap();
    assert_eq!(store.kv_get("p", "b").await.unwrap().unwrap().len(), 20);
}

pub(super) async fn a_large_plugin_round_trips_under_two_names(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    // Over twice SQLite's piece size (256 KiB), the last piece short: stored in three there.
    let wasm: Vec<u8> = (0..(2 * (256 << 10) + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    for name in ["big", "big-too"] {
        let d = store
            .put_plugin(name, "handler", &sha(7), wasm.clone(), None)
            .await
            .unwrap();
        assert!(d.new_version);
        assert_eq!(d.version.size, wasm.len() as u64);
        assert_eq!(store.active_plugin(name).await.unwrap().1, wasm);
    }
    let again = store
        .put_plugin("big", "handler", &sha(7), wasm.clone(), None)
        .await
        .unwrap();
    assert!(!again.new_version, "the active version's bytes: unchanged");
    // Deleting one plugin leaves the other's bytes whole, though they are the same.
    store.delete_plugin("big").await.unwrap();
    assert_eq!(store.active_plugin("big-too").await.unwrap().1, wasm);
    store.delete_plugin("big-too").await.unwrap();
    assert!(matches!(
        store.active_plugin("big-too").await,
        Err(StoreError::PluginNotFound(_))
    ));
}

pub(super) async fn plugin_config_secrets_and_grants_round_trip(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    let set = |key: &str, value: Option<&str>, secret: bool| spool_model::ConfigChange {
        key: key.into(),
        value: value.map(Into::into),
        secret,
    };
    let s = store
        .update_plugin_config(
            "p",
            vec![
                set("region", Some("eu"), false),
                set("api_key", Some("s3cr3t"), true),
            ],
        )
        .await
        .unwrap();
    assert_eq!(s.values.get("region").map(String::as_str), Some("eu"));
    assert_eq!(s.secrets.get("api_key").map(String::as_str), Some("s3cr3t"));
    let s = store
        .update_plugin_config("p", vec![set("region", None, false)])
        .await
        .unwrap();
    assert!(s.values.is_empty() && s.secrets.len() == 1, "{s:?}");
    let bad = store
        .update_plugin_config("p", vec![set("", Some("x"), false)])
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))));

    let grants: spool_model::PluginGrants = serde_json::from_str(r#"{"kv_max_keys": 5}"#).unwrap();
    let s = store.put_plugin_grants("p", grants.clone()).await.unwrap();
    assert_eq!(s.grants, grants);
    let s = store
        .put_plugin_grants("p", Default::default())
        .await
        .unwrap();
    assert_eq!(s.grants, spool_model::PluginGrants::default());
    assert_eq!(store.plugin_settings("p").await.unwrap().secrets.len(), 1);
}

pub(super) async fn a_deleted_plugin_takes_its_settings_along(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    store
        .put_plugin("p", "handler", &sha(1), vec![1], None)
        .await
        .unwrap();
    let change = |key: &str, secret: bool| spool_model::ConfigChange {
        key: key.into(),
        value: Some("v".into()),
        secret,
    };
    store
        .update_plugin_config("p", vec![change("region", false), change("token", true)])
        .await
        .unwrap();
    store
        .update_plugin_config("other", vec![change("region", false)])
        .await
        .unwrap();
    let grants: spool_model::PluginGrants = serde_json::from_str(r#"{"kv_max_keys": 5}"#).unwrap();
    store.put_plugin_grants("p", grants).await.unwrap();
    store.delete_plugin("p").await.unwrap();
    let s = store.plugin_settings("p").await.unwrap();
    assert!(s.values.is_empty() && s.secrets.is_empty(), "{s:?}");
    assert_eq!(s.grants, spool_model::PluginGrants::default());
    assert_eq!(
        store.plugin_settings("other").await.unwrap().values.len(),
        1,
        "other plugins' settings stay"
    );
}
