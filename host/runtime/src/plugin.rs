//! A loaded plugin and how it is called.
//!
//! Loading compiles (or reads the cache), detects the world and keeps an `InstancePre`, so a call
//! only instantiates. A call is: fresh store with the call's limits -> instantiate -> call the
//! export -> read fuel and output -> drop the store. The steps are separate functions so a warm
//! instance (`instance_mode = reuse`) can later keep the store and instance between calls and
//! repeat only the limit setup and the export call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::filter::FilterPre;
use super::bindings::handler::HandlerPre;
use super::bindings::wit_types;
use super::cache::CacheOutcome;
use super::capabilities::{self, ImportKind};
use super::host_imports::{CallContext, CallState, bounds, log_guest_output};
use super::limits::{Limits, PluginFailure, categorize, timeout_failure, truncate_utf8};
use super::settings::PluginSettings;
use super::{Compiler, Runtime, RuntimeError, Tier};
use spool_model::{Claimed, ErrorCategory};

/// Where to read how plugins are written, for error messages.
const SDK_HINT: &str = "write plugins with the Spool guest SDK (the `spool-guest` crate in \
    guest-sdk/: `spool_guest::handler!(my_fn)` or `spool_guest::filter!(my_fn)`) or implement \
    wit/spool.wit directly";

/// Longest dead-letter reason kept from a handler.
const MAX_REASON: usize = 4 * 1024;
/// Most queues a filter may route one message to.
const MAX_ROUTE_QUEUES: usize = 256;

/// Which world of `wit/spool.wit` a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Exports `handle`: consumes queue messages.
    Handler,
    /// Exports `route`: decides where published messages go.
    Filter,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Handler => "handler",
            World::Filter => "filter",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for World {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "handler" => Ok(World::Handler),
            "filter" => Ok(World::Filter),
            _ => Err(format!("unknown world {s:?}; expected handler or filter")),
        }
    }
}

/// The message a plugin is called with (the WIT `message` record, host side).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PluginMessage {
    pub id: String,
    /// Empty for a filter looking at a publish.
    pub queue: String,
    pub topic: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// 1 on the first delivery.
    pub attempt: u32,
    pub correlation_id: Option<String>,
    /// Unix milliseconds.
    pub enqueued_at: i64,
}

impl PluginMessage {
    /// The message a worker claimed, as its handler sees it.
    pub fn from_claimed(claimed: &Claimed) -> PluginMessage {
        PluginMessage {
            id: claimed.id.to_string(),
            queue: claimed.queue.clone(),
            topic: claimed.topic.clone(),
            payload: claimed.payload.clone(),
            headers: claimed.headers.clone(),
            attempt: claimed.attempt,
            correlation_id: claimed.correlation_id.clone(),
            enqueued_at: claimed.enqueued_at,
        }
    }

    pub(crate) fn into_wit(self) -> wit_types::Message {
        wit_types::Message {
            id: self.id,
            queue: self.queue,
            topic: self.topic,
            payload: self.payload,
            headers: self.headers,
            attempt: self.attempt,
            correlation_id: self.correlation_id,
            enqueued_at: u64::try_from(self.enqueued_at).unwrap_or(0),
        }
    }
}

/// What a handler decided (the WIT `outcome`, host side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandlerOutcome {
    Ack,
    /// Retry after this many milliseconds, or after the queue's backoff if `None`.
    Retry(Option<u64>),
    /// Give up: into the dead-letter queue with this reason.
    DeadLetter(String),
}

impl From<wit_types::Outcome> for HandlerOutcome {
    fn from(outcome: wit_types::Outcome) -> Self {
        match outcome {
            wit_types::Outcome::Ack => HandlerOutcome::Ack,
            wit_types::Outcome::Retry(delay_ms) => HandlerOutcome::Retry(delay_ms),
            wit_types::Outcome::DeadLetter(mut reason) => {
                truncate_utf8(&mut reason, MAX_REASON);
                HandlerOutcome::DeadLetter(reason)
            }
        }
    }
}

/// What a filter decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteDecision {
    /// Deliver unchanged to these queues.
    Deliver(Vec<String>),
    /// Deliver nowhere.
    Drop,
    /// Deliver a rewritten message to `queues`.
    Transform {
        queues: Vec<String>,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    },
}

impl RouteDecision {
    /// Checks what the guest returned against the same bounds as a publish.
    pub(crate) fn checked(
        route: wit_types::Route,
        what: &str,
    ) -> Result<RouteDecision, PluginFailure> {
        let bad = |msg: String| {
            PluginFailure::new(
                ErrorCategory::Handler,
                format!("filter {what} returned an unusable route: {msg}"),
            )
        };
        let check_queues = |queues: &[String]| {
            if queues.len() > MAX_ROUTE_QUEUES {
                return Err(bad(format!(
                    "{} queues (limit {MAX_ROUTE_QUEUES})",
                    queues.len()
                )));
            }
            Ok(())
        };
        match route {
            wit_types::Route::Deliver(queues) => {
                check_queues(&queues)?;
                Ok(RouteDecision::Deliver(queues))
            }
            wit_types::Route::Drop => Ok(RouteDecision::Drop),
            wit_types::Route::Transform(t) => {
                check_queues(&t.queues)?;
                if t.payload.len() > bounds::MAX_PUBLISH_PAYLOAD {
                    return Err(bad(format!(
                        "a payload of {} bytes (limit {})",
                        t.payload.len(),
                        bounds::MAX_PUBLISH_PAYLOAD
                    )));
                }
                if t.headers.len() > bounds::MAX_HEADERS {
                    return Err(bad(format!(
                        "{} headers (limit {})",
                        t.headers.len(),
                        bounds::MAX_HEADERS
                    )));
                }
                Ok(RouteDecision::Transform {
                    queues: t.queues,
                    payload: t.payload,
                    headers: t.headers,
                })
            }
        }
    }
}

/// What one call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallStats {
    pub fuel_consumed: u64,
    /// Wall-clock time from store creation to the end of the call, instantiation included.
    pub duration: Duration,
    /// The most linear memory the instance had (all its memories), in bytes.
    pub peak_memory_bytes: u64,
}

/// The world-specific, ready-to-instantiate form of the component.
#[derive(Clone)]
pub(crate) enum Prepared {
    Handler(HandlerPre<CallState>),
    Filter(FilterPre<CallState>),
}

/// A compiled, validated plugin version. Cheap to share: in-flight calls keep their
/// `Arc<Plugin>` while the registry swaps in a new version.
pub struct Plugin {
    name: String,
    version: u32,
    sha256: String,
    world: World,
    size: usize,
    cache: CacheOutcome,
    tier: Tier,
    /// The component's bytes, kept while only baseline code exists, for the optimising compile.
    source: Option<Arc<Vec<u8>>>,
    settings: PluginSettings,
    pub(crate) prepared: Prepared,
    /// The `wasi:http` interfaces it imports (needing `allowed_outbound_hosts`).
    http_imports: Vec<String>,
    // Keeps the engine's epoch ticker alive for as long as this plugin can be called.
    runtime: Runtime,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("sha256", &self.sha256)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

/// Hex sha256 of `bytes`, the content address of a component.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Rejects bytes that are not a component with a message saying what they are instead.
fn check_is_component(wasm: &[u8]) -> Result<(), RuntimeError> {
    const BUILD: &str = "build plugins with `cargo build --release --target wasm32-wasip2`";
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        let what = if wasmtime::Engine::detect_precompiled(wasm).is_some() {
            "this is a precompiled wasmtime artifact (.cwasm); upload the original .wasm \
             component instead"
                .to_owned()
        } else if wasm.trim_ascii_start().starts_with(b"(") {
            format!("this looks like WebAssembly text (WAT), not a binary component; {BUILD}")
        } else {
            format!(
                "not a WebAssembly binary ({} bytes not starting with the \\0asm magic); {BUILD}",
                wasm.len()
            )
        };
        return Err(RuntimeError::InvalidComponent(what));
    }
    // Bytes 4..8 are a version and a layer: layer 0 is a core module, 1 a component.
    if wasm[6..8] == [0, 0] {
        return Err(RuntimeError::InvalidComponent(format!(
            "this is a core wasm module, not a component: {BUILD} (the wasm32-wasip2 target \
             emits a component), or wrap a module with `wasm-tools component new`"
        )));
    }
    Ok(())
}

/// See [`Runtime::load`].
pub(crate) fn load(
    runtime: &Runtime,
    compiler: &Compiler,
    name: &str,
    version: u32,
    wasm: &[u8],
    sha256: String,
) -> Result<Plugin, RuntimeError> {
    check_is_component(wasm)?;
    let settings = PluginSettings::read(wasm)
        .map_err(|e| RuntimeError::InvalidComponent(format!("plugin {name:?}: {e}")))?;
    let engine = &compiler.engine;
    let (component, cache) = compiler.cache.load(engine, &sha256, wasm)?;

    let ty = component.component_type();
    let exported_funcs: Vec<&str> = ty
        .exports(engine)
        .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name)
        .collect();
    let world = match (
        exported_funcs.contains(&"handle"),
        exported_funcs.contains(&"route"),
    ) {
        (true, false) => World::Handler,
        (false, true) => World::Filter,
        (true, true) => {
            return Err(RuntimeError::WrongWorld(format!(
                "plugin {name:?} exports both `handle` and `route`; a plugin implements exactly \
                 one world (spool:plugin/handler or spool:plugin/filter)"
            )));
        }
        (false, false) => {
            let all: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
            let exported = if all.is_empty() {
                "nothing".to_owned()
            } else {
                all.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(RuntimeError::WrongWorld(format!(
                "plugin {name:?} exports {exported}, but Spool expects a function `handle` \
                 (world spool:plugin/handler@0.1.0) or `route` (world \
                 spool:plugin/filter@0.1.0); {SDK_HINT}"
            )));
        }
    };

    // Imports first: one Spool does not provide at all is refused naming it (400), rather
    // than as a link error; grantable ones are recorded for the registry to check.
    let mut http_imports = Vec::new();
    for (import, _) in ty.imports(engine) {
        match capabilities::classify_import(import) {
            ImportKind::Spool | ImportKind::Wasi => {}
            ImportKind::OutboundHttp => http_imports.push(import.to_owned()),
            ImportKind::Unknown => {
                return Err(RuntimeError::ImportNotAllowed(format!(
                    "plugin {name:?} imports {import}, which Spool does not provide and no grant \
                     allows; plugins may import spool:plugin/host@0.1.0, WASI 0.2 \
                     cli/io/clocks/random/filesystem/sockets (with nothing granted) and, with \
                     allowed_outbound_hosts granted, wasi:http; {SDK_HINT}"
                )));
            }
        }
    }

    let pre = compiler.linker.instantiate_pre(&component).map_err(|e| {
        RuntimeError::WrongWorld(format!(
            "plugin {name:?} needs imports Spool does not provide ({e:#}); plugins may import \
             only spool:plugin/host@0.1.0 and WASI 0.2 cli/io/clocks/random (with nothing \
             granted); {SDK_HINT}"
        ))
    })?;
    let mismatch = |e: wasmtime::Error| {
        RuntimeError::WrongWorld(format!(
            "plugin {name:?} exports `{}` with a signature that does not match \
             spool:plugin/{world}@0.1.0 ({e:#}); rebuild it against this Spool's wit/spool.wit",
            match world {
                World::Handler => "handle",
                World::Filter => "route",
            }
        ))
    };
    let prepared = match world {
        World::Handler => Prepared::Handler(HandlerPre::new(pre).map_err(mismatch)?),
        World::Filter => Prepared::Filter(FilterPre::new(pre).map_err(mismatch)?),
    };
    Ok(Plugin {
        name: name.to_owned(),
        version,
        sha256,
        world,
        size: wasm.len(),
        cache,
        tier: compiler.tier,
        source: (compiler.tier == Tier::Baseline).then(|| Arc::new(wasm.to_vec())),
        settings,
        prepared,
        http_imports,
        runtime: runtime.clone(),
    })
}

/// Errors before the guest runs are the host's (or the limits'); errors after are the guest's.
pub(crate) enum CallError {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn world(&self) -> World {
        self.world
    }

    /// The `wasi:http` interfaces the component imports, e.g.
    /// `wasi:http/outgoing-handler@0.2.4`: it may only be deployed with `allowed_outbound_hosts`.
    pub fn http_imports(&self) -> &[String] {
        &self.http_imports
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Which compiler produced the code this plugin runs.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The bytes to compile again with the optimising compiler; `None` once optimised.
    pub(crate) fn source(&self) -> Option<Arc<Vec<u8>>> {
        self.source.clone()
    }

    /// What the plugin declares about itself (its `spool-settings` section).
    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }

    /// Whether loading read a precompiled artifact from the disk cache.
    pub fn from_cache(&self) -> bool {
        self.cache == CacheOutcome::Hit
    }

    /// `name@version`, as messages and logs name a plugin.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The same compiled plugin under another version number (after the store assigned one).
    pub fn with_version(&self, version: u32) -> Plugin {
        Plugin {
            name: self.name.clone(),
            version,
            sha256: self.sha256.clone(),
            world: self.world,
            size: self.size,
            cache: self.cache,
            tier: self.tier,
            source: self.source.clone(),
            settings: self.settings.clone(),
            prepared: self.prepared.clone(),
            http_imports: self.http_imports.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// Calls a handler's `handle` in a fresh instance.
    pub async fn handle(
        &self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> Result<HandlerOutcome, PluginFailure> {
        self.handle_measured(msg, limits, ctx).await.0
    }

    /// [`handle`](Self::handle), also reporting the fuel and time used.
    pub async fn handle_measured(
        &self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> (Result<HandlerOutcome, PluginFailure>, CallStats) {
        let Prepared::Handler(pre) = &self.prepared else {
            return (Err(self.wrong_world(World::Handler)), CallStats::default());
        };
        let message = msg.into_wit();
        let started = Instant::now();
        let mut store = self.new_store(limits, ctx);
        let result = tokio::time::timeout(limits.timeout, async {
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(CallError::Instantiate)?;
            instance
                .call_handle(&mut store, &message)
                .await
                .map_err(CallError::Call)
        })
        .await;
        let (result, stats) = self.finish(&store, started, limits, result);
        (result.map(HandlerOutcome::from), stats)
    }

    /// Calls a filter's `route` in a fresh instance.
    pub async fn route(
        &self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> Result<RouteDecision, PluginFailure> {
        self.route_measured(msg, limits, ctx).await.0
    }

    /// [`route`](Self::route), also reporting the fuel and time used.
    pub async fn route_measured(
        &self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> (Result<RouteDecision, PluginFailure>, CallStats) {
        let Prepared::Filter(pre) = &self.prepared else {
            return (Err(self.wrong_world(World::Filter)), CallStats::default());
        };
        let message = msg.into_wit();
        let started = Instant::now();
        let mut store = self.new_store(limits, ctx);
        let result = tokio::time::timeout(limits.timeout, async {
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(CallError::Instantiate)?;
            instance
                .call_route(&mut store, &message)
                .await
                .map_err(CallError::Call)
        })
        .await;
        let (result, stats) = self.finish(&store, started, limits, result);
        let what = self.label();
        (
            result.and_then(|route| RouteDecision::checked(route, &what)),
            stats,
        )
    }

    pub(crate) fn wrong_world(&self, expected: World) -> PluginFailure {
        PluginFailure::new(
            ErrorCategory::Interface,
            format!(
                "plugin {} is a {} but is used as a {expected}; configure a plugin that \
                 exports `{}`",
                self.label(),
                self.world,
                match expected {
                    World::Handler => "handle",
                    World::Filter => "route",
                }
            ),
        )
    }

    /// A store for one call, with the call's fuel, memory limit and epoch deadline.
    pub(crate) fn new_store(&self, limits: &Limits, ctx: CallContext) -> Store<CallState> {
        // The pooling allocator's slots are `max_memory_mb` large; a larger per-queue limit could
        // never be reached, so report the effective one.
        let cap = self.runtime.options().max_memory_mb as usize * (1 << 20);
        let state = CallState::new(self.world, limits.memory_bytes.min(cap), ctx);
        let mut store = Store::new(&self.runtime.compiler(self.tier).engine, state);
        store.limiter(|state| &mut state.limiter);
        Self::arm(&mut store, limits);
        store
    }

    /// Sets the per-call budget on a store (also what a reused instance would redo per call).
    pub(crate) fn arm(store: &mut Store<CallState>, limits: &Limits) {
        // Cannot fail: the engine is built with `consume_fuel(true)`.
        let _ = store.set_fuel(limits.fuel);
        // Yield to the executor at every epoch tick so `tokio::time::timeout` can end the
        // call; when a queue holding fewer execution slots waits, the yield hands this call's
        // slot over (`fair::preempt`). The callback only applies from the current deadline on,
        // so set the first deadline explicitly or the first interval is doubled.
        store.epoch_deadline_callback(|_| {
            Ok(match super::fair::preempt() {
                Some(handover) => UpdateDeadline::YieldCustom(1, handover),
                None => UpdateDeadline::Yield(1),
            })
        });
        store.set_epoch_deadline(1);
    }

    /// Reads what the call used and turns errors into categorised failures.
    pub(crate) fn finish<R>(
        &self,
        store: &Store<CallState>,
        started: Instant,
        limits: &Limits,
        result: Result<Result<R, CallError>, tokio::time::error::Elapsed>,
    ) -> (Result<R, PluginFailure>, CallStats) {
        let fuel_left = store.get_fuel().unwrap_or(0);
        let stats = CallStats {
            fuel_consumed: limits.fuel.saturating_sub(fuel_left),
            duration: started.elapsed(),
            peak_memory_bytes: store.data().limiter.peak_bytes as u64,
        };
        let state = store.data();
        log_guest_output(state, stats.duration);
        let what = self.label();
        let result = match result {
            Ok(Ok(value)) => Ok(value),
            Err(_elapsed) => Err(timeout_failure(&what, limits)),
            Ok(Err(CallError::Call(e))) => Err(categorize(
                &e,
                &state.limiter,
                limits,
                &what,
                &state.stderr.text(),
            )),
            Ok(Err(CallError::Instantiate(e))) => {
                if state.limiter.memory_denied || e.downcast_ref::<wasmtime::Trap>().is_some() {
                    Err(categorize(
                        &e,
                        &state.limiter,
                        limits,
                        &what,
                        &state.stderr.text(),
                    ))
                } else {
                    // E.g. every instance slot of the pooling allocator is in use.
                    Err(PluginFailure::new(
                        ErrorCategory::Host,
                        format!("could not instantiate plugin {what}: {e:#}"),
                    ))
                }
            }
        };
        (result, stats)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::testutil::{RecordingHost, context, plugin_wasm, runtime};

    fn message(payload: &str) -> PluginMessage {
        PluginMessage {
            id: "42".to_owned(),
            queue: "q".to_owned(),
            payload: payload.as_bytes().to_vec(),
            attempt: 1,
            ..PluginMessage::default()
        }
    }

    fn limits() -> Limits {
        Limits {
            timeout: Duration::from_secs(10),
            fuel: 1_000_000_000,
            memory_bytes: 32 << 20,
        }
    }

    async fn misbehave(
        payload: &str,
        limits: Limits,
    ) -> (Result<HandlerOutcome, PluginFailure>, Vec<String>) {
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let result = plugin
            .handle(
                message(payload),
                &limits,
                context("misbehave", host.clone()),
            )
            .await;
        (result, host.calls())
    }

    fn category(result: &Result<HandlerOutcome, PluginFailure>) -> ErrorCategory {
        match result {
            Err(f) => f.category,
            Ok(o) => panic!("expected a failure, got {o:?}"),
        }
    }

    #[tokio::test]
    async fn echo_acks_and_logs_without_the_payload() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("echo", 3, &plugin_wasm("echo")).unwrap();
        assert_eq!(plugin.world(), World::Handler);
        assert_eq!(plugin.label(), "echo@3");
        assert_eq!(plugin.sha256(), sha256_hex(&plugin_wasm("echo")));
        let host = Arc::new(RecordingHost::default());
        let (result, stats) = plugin
            .handle_measured(
                message("{\"secret\":1}"),
                &limits(),
                context("echo", host.clone()),
            )
            .await;
        assert_eq!(result, Ok(HandlerOutcome::Ack));
        assert!(stats.fuel_consumed > 0);
        assert_eq!(
            host.calls(),
            ["log info message 42 attempt 1 payload 12 bytes"]
        );
    }

    #[tokio::test]
    async fn endless_loop_runs_out_of_fuel() {
        let limits = Limits {
            fuel: 5_000_000,
            ..limits()
        };
        let (result, _) = misbehave(r#"{"do":"loop"}"#, limits).await;
        assert_eq!(category(&result), ErrorCategory::Fuel, "{result:?}");
    }

    #[tokio::test]
    async fn endless_loop_times_out_with_enough_fuel() {
        let limits = Limits {
            timeout: Duration::from_millis(200),
            fuel: u64::MAX / 2,
            ..limits()
        };
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let started = Instant::now();
        let result = plugin
            .handle(
                message(r#"{"do":"loop"}"#),
                &limits,
                context("misbehave", host),
            )
            .await;
        assert_eq!(category(&result), ErrorCategory::Timeout, "{result:?}");
        // Close to the timeout: the epoch ticker makes the guest yield every few ms.
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1_000), "{took:?}");
    }

    #[tokio::test]
    async fn panic_is_a_trap_with_the_panic_message() {
        let (result, _) = misbehave(r#"{"do":"trap"}"#, limits()).await;
        assert_eq!(category(&result), ErrorCategory::Trap);
        let message = result.unwrap_err().message;
        assert!(message.contains("misbehave@1 trapped"), "{message}");
        assert!(
            message.contains("trap requested by message 42"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn runaway_allocation_hits_the_memory_limit() {
        let limits = Limits {
            memory_bytes: 8 << 20,
            ..limits()
        };
        let (result, _) = misbehave(r#"{"do":"alloc"}"#, limits).await;
        assert_eq!(category(&result), ErrorCategory::Memory, "{result:?}");
        assert!(
            result
                .unwrap_err()
                .message
                .contains("limit of 8388608 bytes")
        );

        // A queue limit above the runtime's cap (64 MiB in tests) is capped, and says so.
        let limits = Limits {
            memory_bytes: 1 << 30,
            ..limits
        };
        let (result, _) = misbehave(r#"{"do":"alloc"}"#, limits).await;
        assert_eq!(category(&result), ErrorCategory::Memory, "{result:?}");
        assert!(
            result
                .unwrap_err()
                .message
                .contains("limit of 67108864 bytes")
        );
    }

    #[tokio::test]
    async fn handler_decisions_come_back() {
        let (result, _) = misbehave(r#"{"do":"retry","delay_ms":250}"#, limits()).await;
        assert_eq!(result, Ok(HandlerOutcome::Retry(Some(250))));
        let (result, _) = misbehave(r#"{"do":"retry"}"#, limits()).await;
        assert_eq!(result, Ok(HandlerOutcome::Retry(None)));
        let (result, _) = misbehave(r#"{"do":"dead-letter","reason":"bad order"}"#, limits()).await;
        assert_eq!(
            result,
            Ok(HandlerOutcome::DeadLetter("bad order".to_owned()))
        );
        let (result, _) = misbehave("not json", limits()).await;
        assert_eq!(result, Ok(HandlerOutcome::Ack));
    }

    #[tokio::test]
    async fn long_handler_heartbeats() {
        let (result, calls) = misbehave(r#"{"do":"sleep-ms","ms":350}"#, limits()).await;
        assert_eq!(result, Ok(HandlerOutcome::Ack));
        let beats = calls.iter().filter(|c| *c == "heartbeat").count();
        // Every ~100 ms of wall-clock time; a loaded machine may delay some, never add any.
        assert!((1..=4).contains(&beats), "{calls:?}");
    }

    #[tokio::test]
    async fn publish_and_kv_reach_the_host() {
        let (result, calls) = misbehave(
            r#"{"do":"publish","topic":"orders.new","body":{"n":1}}"#,
            limits(),
        )
        .await;
        assert_eq!(result, Ok(HandlerOutcome::Ack));
        assert_eq!(calls[0], "publish orders.new 7");
        // Extra fields (tests tag payloads with counters) do not change the behaviour.
        let (result, calls) = misbehave(r#"{"do":"kv","n":1}"#, limits()).await;
        assert_eq!(result, Ok(HandlerOutcome::Ack));
        assert_eq!(calls[..2], ["kv_get count", "kv_set count 1"]);
    }

    #[tokio::test]
    async fn a_failed_call_does_not_affect_the_next() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let ctx = || context("misbehave", host.clone());
        let trap = plugin
            .handle(message(r#"{"do":"trap"}"#), &limits(), ctx())
            .await;
        assert_eq!(category(&trap), ErrorCategory::Trap);
        let ok = plugin.handle(message("{}"), &limits(), ctx()).await;
        assert_eq!(ok, Ok(HandlerOutcome::Ack));
    }

    #[test]
    fn bytes_that_are_not_a_component_are_rejected_clearly() {
        let (rt, _dir) = runtime();
        let core_module = b"\0asm\x01\0\0\0";
        let err = rt.load("x", 1, core_module).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidComponent(m) if m.contains("core wasm module") && m.contains("wasm32-wasip2")),
            "{err}"
        );
        let err = rt.load("x", 1, b"hello world, not wasm").unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidComponent(m) if m.contains("magic")),
            "{err}"
        );
        let err = rt.load("x", 1, b"(component)").unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidComponent(m) if m.contains("WAT")),
            "{err}"
        );
        // A component header followed by garbage fails validation.
        let err = rt.load("x", 1, b"\0asm\x0d\0\x01\0\xff\xff").unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidComponent(_)), "{err}");
    }

    #[test]
    fn a_component_of_another_world_is_rejected_with_what_it_exports() {
        let (rt, _dir) = runtime();
        // The smallest valid component: imports nothing, exports nothing.
        let err = rt.load("empty", 1, b"\0asm\x0d\0\x01\0").unwrap_err();
        let RuntimeError::WrongWorld(message) = &err else {
            panic!("expected WrongWorld, got {err:?}");
        };
        assert!(message.contains("exports nothing"), "{message}");
        assert!(
            message.contains("`handle`") && message.contains("`route`"),
            "{message}"
        );
        assert!(message.contains("spool-guest"), "{message}");
    }

    #[tokio::test]
    async fn a_handler_used_as_a_filter_is_an_interface_failure() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("echo", 1, &plugin_wasm("echo")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let failure = plugin
            .route(message("{}"), &limits(), context("echo", host))
            .await
            .unwrap_err();
        assert_eq!(failure.category, ErrorCategory::Interface);
        assert!(
            failure.message.contains("echo@1 is a handler"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn second_load_reads_the_compiled_cache() {
        let (rt, dir) = runtime();
        let wasm = plugin_wasm("echo");
        let first = rt.load("echo", 1, &wasm).unwrap();
        assert!(!first.from_cache());
        let cached = rt.optimized().cache.path_for(&sha256_hex(&wasm));
        assert!(cached.starts_with(dir.path()) && cached.is_file());
        let second = rt.load("echo", 2, &wasm).unwrap();
        assert!(second.from_cache());

        // A corrupt artifact is replaced, not trusted.
        std::fs::write(&cached, b"garbage").unwrap();
        let third = rt.load("echo", 3, &wasm).unwrap();
        assert!(!third.from_cache());
        assert!(rt.load("echo", 4, &wasm).unwrap().from_cache());
    }

    /// With the threshold at zero every plugin compiles baseline first: it runs, the optimising
    /// compile delivers a plugin that runs the same, and once that code is cached a new runtime
    /// (a restart) loads it optimised straight away and compiles nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_first_then_optimised_in_the_background_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::RuntimeOptions {
            cache_dir: dir.path().to_owned(),
            max_instances: 8,
            max_memory_mb: 64,
            baseline_from_bytes: 0,
            flatten: true,
        };
        let rt = Runtime::new(options.clone()).unwrap();
        let wasm = plugin_wasm("echo");
        let baseline = rt.load("echo", 3, &wasm).unwrap();
        assert_eq!(baseline.tier(), Tier::Baseline);
        let msg = PluginMessage {
            id: "m".to_owned(),
            payload: b"{}".to_vec(),
            attempt: 1,
            ..PluginMessage::default()
        };
        let ctx = context("echo", Arc::new(RecordingHost::default()));
        let limits = Limits::default();
        assert!(matches!(
            baseline.handle(msg.clone(), &limits, ctx.clone()).await,
            Ok(HandlerOutcome::Ack)
        ));

        let (tx, rx) = std::sync::mpsc::channel();
        rt.optimize_later(&baseline, move |p| tx.send(p).unwrap());
        // Asking again while it is queued or compiling starts nothing more.
        rt.optimize_later(&baseline, |_| {
            panic!("a second optimisation of the same bytes")
        });
        let optimized = rx.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(optimized.tier(), Tier::Optimized);
        assert_eq!((optimized.name(), optimized.version()), ("echo", 3));
        assert!(optimized.source().is_none(), "no bytes kept once optimised");
        assert!(matches!(
            optimized.handle(msg.clone(), &limits, ctx.clone()).await,
            Ok(HandlerOutcome::Ack)
        ));
        // Optimising an optimised plugin does nothing.
        rt.optimize_later(&optimized, |_| panic!("optimised twice"));

        drop((rt, baseline, optimized));
        let restarted = Runtime::new(options).unwrap();
        let loaded = restarted.load("echo", 3, &wasm).unwrap();
        assert_eq!(loaded.tier(), Tier::Optimized);
        assert!(loaded.from_cache());
    }

    /// Per-call overhead of a fresh instance per message (release build):
    /// `cargo test --release -p spool --lib runtime::plugin::tests::per_call_overhead -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    #[ignore = "measurement, not a test"]
    async fn per_call_overhead() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let limits = limits();
        // `{}` makes misbehave parse the payload and ack without calling the host.
        for _ in 0..200 {
            plugin
                .handle(message("{}"), &limits, context("m", host.clone()))
                .await
                .unwrap();
        }
        let n = 5_000;
        let started = Instant::now();
        for _ in 0..n {
            plugin
                .handle(message("{}"), &limits, context("m", host.clone()))
                .await
                .unwrap();
        }
        let per_call = started.elapsed() / n;
        println!("fresh instance per call: {per_call:?} per call ({n} calls)");
    }
}
