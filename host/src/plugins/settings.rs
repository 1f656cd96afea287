//! What a plugin reads through `config(key)` and what it is granted: spool.toml's
//! `[plugins.NAME]` as the base, overridden by what was set through the API and kept in the
//! store (`PUT /v1/plugins/{name}/config` and `/grants`).
//!
//! Every call needs these, so they are cached per plugin and re-read from the store after the
//! registry's revalidation interval (how a change made on another host reaches this one); a
//! change made through this host's registry replaces its entry at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::model::{PluginGrants, PluginSettings};
use crate::runtime::OutboundHosts;
use crate::store::Store;

/// A plugin's settings as calls see them. `Debug` shows keys, never values (secrets are among
/// them).
#[derive(Clone, Default)]
pub struct Effective {
    /// spool.toml values, then API values and secrets over them.
    pub config: Arc<BTreeMap<String, String>>,
    /// spool.toml grants, each field overridden by the API's when set there.
    pub grants: PluginGrants,
    /// `grants.allowed_outbound_hosts`, parsed (entries are checked when they are set).
    pub outbound: Arc<OutboundHosts>,
}

impl std::fmt::Debug for Effective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effective")
            .field("config_keys", &self.config.keys().collect::<Vec<_>>())
            .field("grants", &self.grants)
            .finish()
    }
}

/// From spool.toml, per plugin.
#[derive(Debug, Clone, Default)]
pub struct FileSettings {
    pub config: BTreeMap<String, String>,
    pub grants: PluginGrants,
}

impl FileSettings {
    pub fn effective(&self, stored: &PluginSettings) -> Effective {
        let mut config = self.config.clone();
        config.extend(stored.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        config.extend(stored.secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
        let grants = self.grants.overridden_by(&stored.grants);
        let entries = grants.allowed_outbound_hosts.as_deref().unwrap_or_default();
        // Entries are checked when spool.toml is read and when the API stores them; one that
        // still does not parse (written by a newer Spool?) grants nothing rather than failing
        // every call.
        let outbound = OutboundHosts::parse(entries).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring unreadable allowed_outbound_hosts");
            OutboundHosts::default()
        });
        Effective {
            config: Arc::new(config),
            grants,
            outbound: Arc::new(outbound),
        }
    }
}

pub(super) struct SettingsCache {
    files: HashMap<String, FileSettings>,
    cached: RwLock<HashMap<String, (Arc<Effective>, Instant)>>,
}

impl SettingsCache {
    pub(super) fn new(files: HashMap<String, FileSettings>) -> SettingsCache {
        SettingsCache {
            files,
            cached: RwLock::new(HashMap::new()),
        }
    }

    pub(super) fn file(&self, name: &str) -> FileSettings {
        self.files.get(name).cloned().unwrap_or_default()
    }

    pub(super) fn configured(&self) -> Vec<&String> {
        self.files.keys().collect()
    }

    /// The cached settings of `name` if younger than `max_age`, else read from the store.
    pub(super) async fn get(
        &self,
        store: &dyn Store,
        name: &str,
        max_age: Duration,
    ) -> Arc<Effective> {
        let stale = {
            let map = self.cached.read().unwrap_or_else(|e| e.into_inner());
            match map.get(name) {
                Some((e, at)) if at.elapsed() < max_age => return e.clone(),
                Some((e, _)) => Some(e.clone()),
                None => None,
            }
        };
        match store.plugin_settings(name).await {
            Ok(stored) => self.put(name, &stored),
            Err(e) => {
                // A store hiccup must not stop message handling: keep what was known, or at
                // least spool.toml's settings. The error names no value.
                tracing::warn!(plugin = name, error = %e,
                    "could not read the plugin's stored settings; using the last known ones");
                stale.unwrap_or_else(|| {
                    Arc::new(self.file(name).effective(&PluginSettings::default()))
                })
            }
        }
    }

    /// Records settings just written (or read) for `name` and returns its effective settings.
    pub(super) fn put(&self, name: &str, stored: &PluginSettings) -> Arc<Effective> {
        let effective = Arc::new(self.file(name).effective(stored));
        self.cached
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (effective.clone(), Instant::now()));
        effective
    }

    pub(super) fn forget(&self, name: &str) {
        self.cached
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_values_and_secrets_override_the_file() {
        let file = FileSettings {
            config: BTreeMap::from([
                ("greeting".into(), "hi".into()),
                ("url".into(), "http://a".into()),
            ]),
            grants: PluginGrants {
                kv_max_keys: Some(3),
                ..PluginGrants::default()
            },
        };
        let stored = PluginSettings {
            values: BTreeMap::from([("url".into(), "http://b".into())]),
            secrets: BTreeMap::from([("token".into(), "s3cret".into())]),
            grants: PluginGrants {
                allowed_outbound_hosts: Some(vec!["http://b".into()]),
                ..PluginGrants::default()
            },
        };
        let e = file.effective(&stored);
        assert_eq!(e.config["greeting"], "hi");
        assert_eq!(e.config["url"], "http://b");
        assert_eq!(e.config["token"], "s3cret");
        assert_eq!(e.grants.kv_max_keys, Some(3));
        assert_eq!(
            e.grants.allowed_outbound_hosts.as_deref(),
            Some(&["http://b".to_owned()][..])
        );
        assert!(!format!("{e:?}").contains("s3cret"));
    }
}
