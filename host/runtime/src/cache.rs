//! Compiled components on disk, so a restart or a redeploy of known bytes skips compilation
//! (61 ms for a small Rust plugin, seconds for Python/JavaScript; a cached load takes ~0.1 ms).
//!
//! An artifact is named `{sha256 of the wasm}-{engine hash}.cwasm`. The engine hash is
//! `Engine::precompile_compatibility_hash`, which covers the wasmtime version, the target and
//! every setting that affects code generation (fuel, epochs, memory layout), so an artifact is
//! only ever loaded into an engine that could have produced it. Artifacts are written to a
//! temporary file and renamed into place, so a crash or a concurrent writer never leaves a
//! partial file under the final name. Deleting files from the directory is always safe.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::RuntimeError;

/// Where a component came from on [`ComponentCache::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read a precompiled artifact this host wrote earlier.
    Hit,
    /// Compiled now (and written to the cache).
    Compiled,
}

#[derive(Debug)]
pub struct ComponentCache {
    dir: PathBuf,
    engine_hash: String,
    flatten: bool,
}

impl ComponentCache {
    /// Creates the directory if needed.
    pub fn open(
        dir: &Path,
        engine: &Engine,
        flatten: bool,
    ) -> Result<ComponentCache, RuntimeError> {
        fs::create_dir_all(dir).map_err(|e| RuntimeError::Cache {
            path: dir.to_owned(),
            message: format!("cannot create the cache directory: {e}"),
        })?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // What is compiled for given bytes also depends on whether and how they are flattened.
        flatten
            .then_some(crate::flatten::FLATTEN_VERSION)
            .hash(&mut hasher);
        Ok(ComponentCache {
            dir: dir.to_owned(),
            engine_hash: format!("{:016x}", hasher.finish()),
            flatten,
        })
    }

    /// The artifact path for wasm bytes with this sha256 (hex).
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.engine_hash))
    }

    /// Whether compiled code for bytes with this sha256 is on disk.
    pub fn has(&self, sha256: &str) -> bool {
        self.path_for(sha256).is_file()
    }

    /// Loads the component with these bytes from the cache, or compiles and caches it.
    ///
    /// Compilation also validates: errors here mean the bytes are not a usable component.
    pub fn load(
        &self,
        engine: &Engine,
        sha256: &str,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), RuntimeError> {
        let path = self.path_for(sha256);
        if path.is_file() {
            match open_artifact(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    // A truncated or foreign file under our name: recompile and replace it.
                    tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                        "discarding unreadable compiled plugin");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let artifact = precompile(engine, wasm, self.flatten)?;
        match write_atomically(&path, &artifact) {
            Ok(()) => open_artifact(engine, &path)
                .map(|c| (c, CacheOutcome::Compiled))
                .map_err(|e| RuntimeError::Cache {
                    path: path.clone(),
                    message: format!("cannot load the artifact just written: {e:#}"),
                }),
            Err(e) => {
                // The cache is an optimisation: a read-only or full disk must not stop plugins.
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot write compiled plugin to the cache; compiling in memory");
                // SAFETY: see `open_artifact`; `artifact` is `precompile_component` output
                // produced by this very engine a moment ago, never bytes from outside.
                #[allow(unsafe_code)]
                unsafe { Component::deserialize(engine, &artifact) }
                    .map(|c| (c, CacheOutcome::Compiled))
                    .map_err(|e| RuntimeError::InvalidComponent(format!("{e:#}")))
            }
        }
    }
}

/// Compiles `wasm`, flattened first when it is dynamically linked (`crate::flatten`: a Python
/// component then instantiates about twice as fast). Flattening is an optimisation: when it
/// fails, or its output does not compile, the component is compiled as it was uploaded.
fn precompile(engine: &Engine, wasm: &[u8], flatten: bool) -> Result<Vec<u8>, RuntimeError> {
    let started = std::time::Instant::now();
    let flattened = if flatten {
        crate::flatten::flatten(wasm)
    } else {
        Ok(None)
    };
    let flatten_ms = started.elapsed().as_millis() as u64;
    match flattened {
        Ok(Some(flat)) => match engine.precompile_component(&flat) {
            Ok(artifact) => {
                tracing::info!(
                    bytes = wasm.len(),
                    flattened_bytes = flat.len(),
                    flatten_ms,
                    compile_ms = (started.elapsed().as_millis() as u64).saturating_sub(flatten_ms),
                    "flattened a dynamically linked component into one core module"
                );
                return Ok(artifact);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"),
                "the flattened component does not compile; compiling it as uploaded"),
        },
        Ok(None) => {}
        Err(e) => tracing::info!(error = %e, "component not flattened; compiling it as uploaded"),
    }
    engine
        .precompile_component(wasm)
        .map_err(|e| RuntimeError::InvalidComponent(format!("{e:#}")))
}

/// Loads a precompiled artifact as a component.
///
/// The file is read into memory rather than mapped with `Component::deserialize_file`: a mapped
/// file that anything truncates or rewrites in place (a cleanup script, an operator, a second
/// host sharing the directory) kills the whole process with SIGBUS. Reading costs a fraction of
/// a millisecond more.
#[allow(unsafe_code)]
fn open_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = fs::read(path)?;
    // SAFETY: `deserialize` trusts the bytes to be code wasmtime produced, since it maps them
    // as executable. Only `ComponentCache::load` calls this, with a path inside the cache
    // directory whose name it derived from the content hash and engine hash; files get that
    // name only through `write_atomically` of `Engine::precompile_component` output from this
    // host. Uploaded bytes are never deserialized: they always go through
    // `precompile_component`, which compiles and validates them. wasmtime additionally checks
    // the artifact's header against the engine's configuration and rejects a mismatch.
    unsafe { Component::deserialize(engine, &bytes) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
