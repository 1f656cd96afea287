//! Deployed plugins by name: deploy (validate, store, swap), lookup, rollback.
//!
//! Plugins live in the store, so every host sharing a database sees the same versions; this
//! registry keeps the compiled active version of each in memory. A swap replaces the entry;
//! calls in flight hold their own `Arc<Plugin>` and finish on the version they started with.
//! Each cached entry is re-checked against the store's active version every
//! [`PluginRegistry::with_revalidate_interval`], which is how a deploy or rollback on another
//! host reaches this one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::settings::{Effective, FileSettings, SettingsCache};
use crate::model::{
    ConfigChange, Deployed, PluginDeleted, PluginGrants, PluginSettings, PluginVersion,
    validate_name,
};
use crate::runtime::plugin::sha256_hex;
use crate::runtime::{Plugin, Runtime, RuntimeError, Tier};
use crate::store::{Store, StoreError};

/// What can go wrong managing plugins. The API maps `NotFound` to 404, `InvalidName` and
/// `InvalidComponent` to 400, `WrongWorld` to 422, and `Store` errors as the store's (e.g.
/// `StoreError::NoPreviousVersion` on a rollback to 409).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("plugin {0:?} is not deployed; deploy it with `spool plugin deploy {0} FILE.wasm`")]
    NotFound(String),
    #[error("{0}")]
    InvalidName(String),
    /// The bytes are not a WebAssembly component (the message says what they are).
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// A component, but not a Spool handler or filter (the message says what it exports).
    #[error("{0}")]
    WrongWorld(String),
    /// The component imports something Spool does not provide, or a capability the plugin has
    /// not been granted; the message names the import and the grant that would allow it.
    #[error("{0}")]
    NotGranted(String),
    /// A grant that cannot be stored (the message names the entry and the syntax).
    #[error("{0}")]
    InvalidGrant(String),
    /// The stored bytes of a version no longer match the SHA-256 recorded at deploy.
    #[error(
        "plugin {name:?} version {version}: the stored component does not match the SHA-256 \
         recorded when it was deployed (the database record is damaged); redeploy it"
    )]
    Damaged { name: String, version: u32 },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Runtime(RuntimeError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    fn from_runtime(name: &str, e: RuntimeError) -> RegistryError {
        match e {
            RuntimeError::InvalidComponent(message) => {
                RegistryError::InvalidComponent(format!("plugin {name:?}: {message}"))
            }
            // The runtime's message already names the plugin.
            RuntimeError::WrongWorld(message) => RegistryError::WrongWorld(message),
            RuntimeError::ImportNotAllowed(message) => RegistryError::NotGranted(message),
            other => RegistryError::Runtime(other),
        }
    }

    fn from_store(e: StoreError) -> RegistryError {
        match e {
            StoreError::PluginNotFound(name) => RegistryError::NotFound(name),
            other => RegistryError::Store(other),
        }
    }
}

struct Entry {
    plugin: Arc<Plugin>,
    checked_at: Instant,
}

/// The registry of deployed plugins. Share it behind an `Arc`.
pub struct PluginRegistry {
    store: Arc<dyn Store>,
    runtime: Runtime,
    settings: SettingsCache,
    /// Shared with the runtime's optimising thread, which swaps optimised code in.
    active: Arc<RwLock<HashMap<String, Entry>>>,
    /// Serialises loads so concurrent misses for one plugin compile it once.
    loading: tokio::sync::Mutex<()>,
    revalidate_every: Duration,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("configured", &self.settings.configured())
            .finish_non_exhaustive()
    }
}

impl PluginRegistry {
    /// `configs` holds each plugin's configuration (`[plugins.NAME.config]`) by plugin name.
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Runtime,
        configs: HashMap<String, BTreeMap<String, String>>,
    ) -> PluginRegistry {
        let files = configs
            .into_iter()
            .map(|(name, config)| {
                let file = FileSettings {
                    config,
                    grants: PluginGrants::default(),
                };
                (name, file)
            })
            .collect();
        PluginRegistry {
            store,
            runtime,
            settings: SettingsCache::new(files),
            active: Arc::new(RwLock::new(HashMap::new())),
            loading: tokio::sync::Mutex::new(()),
            revalidate_every: Duration::from_secs(5),
        }
    }

    /// How stale a cached active version may get before it is checked against the store (so a
    /// deploy on another host is picked up). Default 5 s.
    pub fn with_revalidate_interval(mut self, every: Duration) -> PluginRegistry {
        self.revalidate_every = every;
        self
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Adds the capabilities spool.toml grants (`[plugins.NAME] allowed_outbound_hosts`,
    /// `kv_max_keys`, `kv_max_bytes`) by plugin name.
    pub fn with_grants(mut self, grants: HashMap<String, PluginGrants>) -> PluginRegistry {
        let mut files: HashMap<String, FileSettings> = HashMap::new();
        for name in self.settings.configured() {
            files.insert(name.clone(), self.settings.file(name));
        }
        for (name, g) in grants {
            files.entry(name).or_default().grants = g;
        }
        self.settings = SettingsCache::new(files);
        self
    }

    /// What the plugin's calls see: its configuration (spool.toml, then values and secrets set
    /// through the API) and its grants. Cached; re-read from the store at the revalidation
    /// interval.
    pub async fn settings(&self, name: &str) -> Arc<Effective> {
        self.settings
            .get(self.store.as_ref(), name, self.revalidate_every)
            .await
    }

    /// spool.toml's part of the plugin's settings.
    pub fn file_settings(&self, name: &str) -> FileSettings {
        self.settings.file(name)
    }

    /// The settings stored through the API (secrets included: callers must not return them).
    pub async fn stored_settings(&self, name: &str) -> Result<PluginSettings, RegistryError> {
        validate_name("plugin", name).map_err(RegistryError::InvalidName)?;
        let stored = self
            .store
            .plugin_settings(name)
            .await
            .map_err(RegistryError::from_store)?;
        self.settings.put(name, &stored);
        Ok(stored)
    }

    /// Sets or removes configuration values and secrets of `name` (deployed or not); calls
    /// that start afterwards on this host see them, other hosts within the revalidation
    /// interval.
    pub async fn update_config(
        &self,
        name: &str,
        changes: Vec<ConfigChange>,
    ) -> Result<PluginSettings, RegistryError> {
        validate_name("plugin", name).map_err(RegistryError::InvalidName)?;
        // Logged by key only: values may be secrets.
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        tracing::info!(plugin = name, ?keys, "plugin configuration changed");
        let stored = self
            .store
            .update_plugin_config(name, changes)
            .await
            .map_err(RegistryError::from_store)?;
        self.settings.put(name, &stored);
        Ok(stored)
    }

    /// Replaces the grants of `name` set through the API.
    pub async fn put_grants(
        &self,
        name: &str,
        grants: PluginGrants,
    ) -> Result<PluginSettings, RegistryError> {
        validate_name("plugin", name).map_err(RegistryError::InvalidName)?;
        if let Some(hosts) = &grants.allowed_outbound_hosts {
            if hosts.len() > crate::model::plugin_settings::MAX_OUTBOUND_HOSTS {
                return Err(RegistryError::InvalidGrant(format!(
                    "allowed_outbound_hosts has {} entries, over the limit of {}",
                    hosts.len(),
                    crate::model::plugin_settings::MAX_OUTBOUND_HOSTS
                )));
            }
            crate::runtime::OutboundHosts::parse(hosts).map_err(RegistryError::InvalidGrant)?;
        }
        for (field, value) in [
            ("kv_max_keys", grants.kv_max_keys),
            ("kv_max_bytes", grants.kv_max_bytes),
        ] {
            // The store counts in SQLite integers (i64).
            if value.is_some_and(|v| v > i64::MAX as u64) {
                return Err(RegistryError::InvalidGrant(format!(
                    "{field} must be at most {}",
                    i64::MAX
                )));
            }
        }
        tracing::info!(plugin = name, ?grants, "plugin grants changed");
        let stored = self
            .store
            .put_plugin_grants(name, grants)
            .await
            .map_err(RegistryError::from_store)?;
        self.settings.put(name, &stored);
        Ok(stored)
    }

    /// Validates, stores and activates a new version of `name`; the bytes of an existing
    /// version activate that version instead. `actor` (the API token's name) is recorded in
    /// the plugin's activation history.
    ///
    /// The component is compiled and checked against the plugin worlds first: bytes that are
    /// not a valid Spool plugin are rejected and nothing is stored.
    pub async fn deploy(
        &self,
        name: &str,
        wasm: Vec<u8>,
        actor: Option<&str>,
    ) -> Result<Deployed, RegistryError> {
        validate_name("plugin", name).map_err(RegistryError::InvalidName)?;
        let (candidate, wasm) = self.compile(name, 0, wasm).await?;
        if let Some(import) = candidate.http_imports().first() {
            // Read from the store, not the cache: grants set on another host a moment ago
            // count.
            let stored = self
                .store
                .plugin_settings(name)
                .await
                .map_err(RegistryError::from_store)?;
            let settings = self.settings.put(name, &stored);
            if settings.outbound.is_empty() {
                return Err(RegistryError::NotGranted(format!(
                    "plugin {name:?} imports {import} but has no allowed_outbound_hosts; grant \
                     the hosts it may call in spool.toml ([plugins.{name}] \
                     allowed_outbound_hosts = [\"https://api.example.com\"]), with `PUT \
                     /v1/plugins/{name}/grants` or `spool plugin config grant {name} \
                     --allow-outbound-host URL`, then deploy again"
                )));
            }
        }
        // Hashed by the compile already (18 MB of Python take tens of milliseconds, which must
        // not run on an async thread).
        let sha256 = candidate.sha256().to_owned();
        // Store and swap under the load lock, so a concurrent `get` that read the previous
        // active version cannot re-cache it after this swap.
        let _guard = self.loading.lock().await;
        let deployed = self
            .store
            .put_plugin(name, candidate.world().as_str(), &sha256, wasm, actor)
            .await
            .map_err(RegistryError::from_store)?;
        let version = &deployed.version;
        let plugin = Arc::new(candidate.with_version(version.version));
        tracing::info!(plugin = name, version = version.version, world = %plugin.world(),
            sha256 = %version.sha256, new_version = deployed.new_version, "plugin deployed");
        self.activate(name, plugin);
        Ok(deployed)
    }

    /// The active version of `name`, compiled; loaded from the store on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<Plugin>, RegistryError> {
        if let Some(plugin) = self.cached(name, true) {
            return Ok(plugin);
        }
        if let Some(plugin) = self.cached(name, false) {
            // Stale: ask the store which version is active (cheap, no bytes).
            match self.active_version(name).await {
                Ok(Some(v)) if v.version == plugin.version() => {
                    self.touch(name);
                    return Ok(plugin);
                }
                Ok(_) => {}
                // A store hiccup must not stop message handling with a known-good plugin.
                Err(e) => {
                    tracing::warn!(plugin = name, error = %e,
                        "could not re-check the active plugin version; keeping the cached one");
                    return Ok(plugin);
                }
            }
        }
        self.load_active(name).await
    }

    /// Re-activates the version before the active one.
    pub async fn rollback(
        &self,
        name: &str,
        actor: Option<&str>,
    ) -> Result<PluginVersion, RegistryError> {
        let version = {
            // Under the load lock, so a `get` that read the old active version cannot cache it
            // after the `forget` below.
            let _guard = self.loading.lock().await;
            let version = self
                .store
                .rollback_plugin(name, actor)
                .await
                .map_err(RegistryError::from_store)?;
            self.forget(name);
            version
        };
        // Compile now (usually a cache hit) so the next message does not pay for it, and so a
        // version that no longer loads is reported here rather than on every message.
        self.load_active(name).await?;
        tracing::info!(
            plugin = name,
            version = version.version,
            "plugin rolled back"
        );
        Ok(version)
    }

    /// Makes version `version` of `name` active.
    pub async fn activate_version(
        &self,
        name: &str,
        version: u32,
        actor: Option<&str>,
    ) -> Result<PluginVersion, RegistryError> {
        let activated = {
            let _guard = self.loading.lock().await;
            let activated = self
                .store
                .activate_plugin(name, version, actor)
                .await
                .map_err(RegistryError::from_store)?;
            self.forget(name);
            activated
        };
        // As in `rollback`: compile now, and report a version that no longer loads here.
        self.load_active(name).await?;
        tracing::info!(plugin = name, version, "plugin version activated");
        Ok(activated)
    }

    /// Deletes every version of `name` with its history and key-value data (refused while a
    /// queue uses it) and drops it from the cache, so nothing on this host runs it again.
    pub async fn delete(&self, name: &str) -> Result<PluginDeleted, RegistryError> {
        let _guard = self.loading.lock().await;
        let deleted = self
            .store
            .delete_plugin(name)
            .await
            .map_err(RegistryError::from_store)?;
        self.forget(name);
        self.settings.forget(name);
        Ok(deleted)
    }

    /// All versions of all plugins, by name then version.
    pub async fn list(&self) -> Result<Vec<PluginVersion>, RegistryError> {
        self.store
            .list_plugins()
            .await
            .map_err(RegistryError::from_store)
    }

    /// How the loaded active version of `name` is compiled on this server: `None` until a
    /// message, a deploy or an activation loaded it here.
    pub fn compiled(&self, name: &str) -> Option<(u32, Tier)> {
        self.cached(name, false).map(|p| (p.version(), p.tier()))
    }

    /// Drops the cached active version of `name`, so the next `get` asks the store.
    pub fn forget(&self, name: &str) {
        self.write().remove(name);
    }

    async fn load_active(&self, name: &str) -> Result<Arc<Plugin>, RegistryError> {
        let _guard = self.loading.lock().await;
        // Another task may have loaded it while this one waited.
        if let Some(plugin) = self.cached(name, true) {
            return Ok(plugin);
        }
        let (version, wasm) = self
            .store
            .active_plugin(name)
            .await
            .map_err(RegistryError::from_store)?;
        // The compile hashes the bytes (off the async threads); only when it fails are they
        // hashed again, to tell damaged bytes from a component this build cannot load.
        let (loaded, wasm) = self
            .runtime
            .load_in_background(name, version.version, wasm)
            .await;
        let intact = match &loaded {
            Ok(plugin) => plugin.sha256() == version.sha256,
            Err(_) => {
                tokio::task::spawn_blocking(move || sha256_hex(&wasm))
                    .await
                    .map_err(|e| RegistryError::Internal(format!("hashing plugin {name:?}: {e}")))?
                    == version.sha256
            }
        };
        if !intact {
            tracing::error!(
                plugin = name,
                version = version.version,
                "stored plugin bytes do not match their SHA-256; not loading them"
            );
            return Err(RegistryError::Damaged {
                name: name.to_owned(),
                version: version.version,
            });
        }
        let plugin = loaded.map_err(|e| RegistryError::from_runtime(name, e))?;
        let plugin = Arc::new(plugin.with_version(version.version));
        self.activate(name, plugin.clone());
        Ok(plugin)
    }

    /// Compiles off the async threads; returns the bytes so the caller can store them.
    async fn compile(
        &self,
        name: &str,
        version: u32,
        wasm: Vec<u8>,
    ) -> Result<(Plugin, Vec<u8>), RegistryError> {
        let (result, wasm) = self.runtime.load_in_background(name, version, wasm).await;
        let plugin = result.map_err(|e| RegistryError::from_runtime(name, e))?;
        // `Runtime::load` returns an `Arc`; this registry wants to re-version it first.
        Ok((plugin.with_version(version), wasm))
    }

    async fn active_version(&self, name: &str) -> Result<Option<PluginVersion>, StoreError> {
        Ok(self
            .store
            .list_plugins()
            .await?
            .into_iter()
            .find(|v| v.name == name && v.active))
    }

    fn cached(&self, name: &str, fresh_only: bool) -> Option<Arc<Plugin>> {
        let map = self.active.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(name)?;
        if fresh_only && entry.checked_at.elapsed() >= self.revalidate_every {
            return None;
        }
        Some(entry.plugin.clone())
    }

    fn touch(&self, name: &str) {
        if let Some(entry) = self.write().get_mut(name) {
            entry.checked_at = Instant::now();
        }
    }

    fn activate(&self, name: &str, plugin: Arc<Plugin>) {
        self.write().insert(
            name.to_owned(),
            Entry {
                plugin: plugin.clone(),
                checked_at: Instant::now(),
            },
        );
        if plugin.tier() == Tier::Baseline {
            // Scheduled after the insert, so the swap below always finds the entry it replaces
            // (unless a deploy, rollback or delete replaced it meanwhile: then it is left alone).
            let active = self.active.clone();
            let name = name.to_owned();
            self.runtime.optimize_later(&plugin, move |optimized| {
                let mut map = write(&active);
                if let Some(entry) = map.get_mut(&name)
                    && entry.plugin.tier() == Tier::Baseline
                    && entry.plugin.sha256() == optimized.sha256()
                {
                    let version = entry.plugin.version();
                    entry.plugin = Arc::new(optimized.with_version(version));
                    tracing::info!(plugin = %name, version, "optimised code swapped in");
                }
            });
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        write(&self.active)
    }
}

fn write(
    active: &RwLock<HashMap<String, Entry>>,
) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
    active.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testutil::{plugin_wasm, runtime};
    use crate::store::StoreOptions;
    use crate::store::sqlite::SqliteStore;

    fn registry(rt: Runtime, dir: &tempfile::TempDir) -> PluginRegistry {
        let store = SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default())
            .expect("store");
        let configs = HashMap::from([(
            "echo".to_owned(),
            BTreeMap::from([("greeting".to_owned(), "hi".to_owned())]),
        )]);
        PluginRegistry::new(Arc::new(store), rt, configs)
    }

    /// A large plugin serves at once on baseline code; the optimised code replaces it in the
    /// registry when its background compile ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_baseline_deploy_is_swapped_for_optimised_code_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(crate::runtime::RuntimeOptions {
            cache_dir: dir.path().join("cache"),
            max_instances: 8,
            max_memory_mb: 64,
            baseline_from_bytes: 0,
            flatten: true,
        })
        .unwrap();
        let reg = registry(rt, &dir);
        let deployed = reg.deploy("echo", plugin_wasm("echo"), None).await.unwrap();
        let first = reg.get("echo").await.unwrap();
        assert_eq!(first.version(), deployed.version.version);
        let started = Instant::now();
        loop {
            let now = reg.get("echo").await.unwrap();
            if now.tier() == Tier::Optimized {
                assert_eq!(now.version(), deployed.version.version);
                assert_eq!(now.sha256(), first.sha256());
                break;
            }
            assert_eq!(now.tier(), Tier::Baseline);
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the optimised code never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn deploy_swap_and_rollback() {
        let (rt, dir) = runtime();
        let reg = registry(rt, &dir);

        let v1 = reg
            .deploy("echo", plugin_wasm("echo"), None)
            .await
            .unwrap()
            .version;
        assert_eq!((v1.version, v1.world.as_str()), (1, "handler"));
        let in_flight = reg.get("echo").await.unwrap();
        assert_eq!(in_flight.version(), 1);

        // A new version under the same name takes over; the old Arc stays usable.
        let v2 = reg
            .deploy("echo", plugin_wasm("misbehave"), None)
            .await
            .unwrap()
            .version;
        assert_eq!(v2.version, 2);
        assert_eq!(reg.get("echo").await.unwrap().version(), 2);
        assert_eq!(in_flight.version(), 1);
        assert_eq!(in_flight.sha256(), v1.sha256);

        let back = reg.rollback("echo", None).await.unwrap();
        assert_eq!(back.version, 1);
        let active = reg.get("echo").await.unwrap();
        assert_eq!((active.version(), active.sha256()), (1, v1.sha256.as_str()));

        // A fresh registry (another host, or a restart) loads the active version from the store.
        let (rt2, _dir2) = runtime();
        let store = SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default());
        let other = PluginRegistry::new(Arc::new(store.unwrap()), rt2, HashMap::new());
        assert_eq!(other.get("echo").await.unwrap().version(), 1);

        let versions = reg.list().await.unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(
            reg.settings("echo")
                .await
                .config
                .get("greeting")
                .map(String::as_str),
            Some("hi")
        );
        assert!(reg.settings("other").await.config.is_empty());
    }

    #[tokio::test]
    async fn bad_uploads_store_nothing() {
        let (rt, dir) = runtime();
        let reg = registry(rt, &dir);

        let err = reg
            .deploy("bad name!", plugin_wasm("echo"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::InvalidName(_)), "{err}");
        let err = reg
            .deploy("x", b"\0asm\x01\0\0\0".to_vec(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::InvalidComponent(m) if m.contains("core wasm")),
            "{err}"
        );
        let err = reg
            .deploy("x", b"\0asm\x0d\0\x01\0".to_vec(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::WrongWorld(_)), "{err}");
        assert!(reg.list().await.unwrap().is_empty());

        let err = reg.get("x").await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::NotFound(n) if n == "x"),
            "{err}"
        );
        assert!(err.to_string().contains("spool plugin deploy x"));
    }

    #[tokio::test]
    async fn a_deploy_on_another_host_is_picked_up() {
        let (rt, dir) = runtime();
        let reg = registry(rt.clone(), &dir).with_revalidate_interval(Duration::ZERO);
        let other = registry(rt, &dir);
        reg.deploy("echo", plugin_wasm("echo"), None).await.unwrap();
        assert_eq!(reg.get("echo").await.unwrap().version(), 1);
        other
            .deploy("echo", plugin_wasm("misbehave"), None)
            .await
            .unwrap();
        assert_eq!(reg.get("echo").await.unwrap().version(), 2);
    }
}
