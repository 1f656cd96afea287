//! Where a published message goes.
//!
//! Routes bind topic patterns (`pattern`) to queues, optionally with exact header conditions and
//! a filter plugin. A publish matches its topic against an index of every route's pattern
//! (`index`: a trie over words, so the cost follows the topic, not the number of routes), keeps
//! the routes whose header conditions hold, and runs their filters (`filter`). Every route that
//! matches delivers (fan-out), each queue at most once per message; all deliveries of one
//! request are written in one store transaction.
//!
//! A message that no route matches goes to the queue named like its topic when one exists (the
//! implicit route, on by default), else to the unroutable queue when one is configured, else
//! the publish is refused (`no_route`) and nothing is stored.
//!
//! A filter that fails (trap, fuel, timeout, memory, wrong interface, unloadable) never loses
//! the message: that delivery is written as a dead letter of the route's queue, category
//! `filter`; replaying it runs the route again ([`Router::replay`]).
//!
//! Filters run on the plugin threads holding an execution slot, like handlers. A handler's own
//! publishes are routed from inside its call (already on a plugin thread, holding its slot), and
//! become its outbox: written with its ack, or not at all (see `dispatch::host_api`).

mod filter;
pub mod index;
pub mod pattern;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tokio::runtime::Handle;

use self::filter::{FilterCounters, Filters};
pub use self::filter::{FilterOutcome, FilterStats};
use self::index::RouteIndex;
use self::pattern::{Pattern, validate_topic};
use crate::model::{
    Delivery, ErrorCategory, MessageId, MessageState, NewMessage, NewRoute, Route, RouteId,
};
use crate::plugins::PluginRegistry;
use crate::runtime::RouteDecision;
use crate::runtime::fair::ExecutionSlots;
use crate::store::{Store, StoreError};

/// Most header conditions one route may have.
const MAX_ROUTE_HEADERS: usize = 32;

/// How the router behaves (`[router]` in spool.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOptions {
    /// A topic no route matches reaches the queue of the same name, if there is one.
    pub implicit_routes: bool,
    /// Where messages that match nothing go; `None`: such a publish is refused.
    pub unroutable_queue: Option<String>,
    /// Most publishes between a handler's message and the one that started its chain.
    pub max_chain_depth: u32,
    pub filter_timeout_ms: u64,
    pub filter_fuel: u64,
    pub filter_memory_mb: u32,
    /// Calls before a warm filter instance is replaced (1: a fresh instance per call).
    pub filter_max_calls: u32,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            implicit_routes: true,
            unroutable_queue: None,
            max_chain_depth: 16,
            filter_timeout_ms: 1_000,
            filter_fuel: 100_000_000,
            filter_memory_mb: 64,
            filter_max_calls: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    InvalidTopic(String),
    /// A route that cannot be created as asked; the text says what is wrong.
    #[error("{0}")]
    InvalidRoute(String),
    #[error(
        "no route matches topic {topic:?}{implicit}: add one (`spool route add PATTERN QUEUE`), \
         or set [router] unroutable_queue to keep such messages; nothing was stored",
        implicit = if *.implicit { " and no queue has its name" } else { "" }
    )]
    NoRoute { topic: String, implicit: bool },
    #[error(
        "this message is {depth} publishes deep in a chain, and chains may be at most {limit} \
         deep ([router] max_chain_depth); a handler that publishes what it consumes loops"
    )]
    ChainTooDeep { depth: u32, limit: u32 },
    /// Replaying a filter's dead letter ran the filter again, and it failed again.
    #[error("the route's filter failed again, the dead letter is unchanged: {0}")]
    FilterFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One delivery a publish made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub queue: String,
    pub id: MessageId,
    /// An idempotency key found an existing message in that queue.
    pub existing: bool,
    /// The route's filter failed: the delivery is a dead letter (category `filter`).
    pub dead: bool,
}

/// What a chained publish resolved to: deliveries to write with the parent's ack.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub deliveries: Vec<Delivery>,
    /// Messages no route took, sent to the unroutable queue (a refused publish counts one).
    pub unroutable: u64,
}

/// What [`Router::reach`] found for a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    /// Routes whose pattern matches, in creation (fan-out) order.
    pub routes: Vec<Route>,
    /// Where a message goes that none of `routes` delivers (none matches, or their header
    /// conditions do not hold).
    pub otherwise: Otherwise,
}

/// The fate of a published message that no route delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Otherwise {
    /// The queue named like the topic (`[router] implicit_routes`).
    Implicit(String),
    /// `[router] unroutable_queue`.
    Unroutable(String),
    /// The publish is refused with `no_route`; nothing is stored.
    Refused,
}

/// Counters since the server started (per-route delivered counts live in the store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub published: u64,
    pub unroutable: u64,
    pub filters: BTreeMap<String, FilterStats>,
}

/// The routes, and an index of their patterns giving positions in `routes`.
#[derive(Debug, Default)]
struct Table {
    index: RouteIndex<usize>,
    routes: Vec<Route>,
}

impl Table {
    /// Positions of the routes whose pattern matches `topic`, in creation order (so fan-out
    /// order is stable).
    fn matching(&self, topic: &str) -> Vec<usize> {
        let mut ids: Vec<usize> = self.index.matches(topic).into_iter().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Routes published messages into queues. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    options: RouterOptions,
    filters: Filters,
    table: RwLock<Option<Arc<Table>>>,
    /// The plugin threads and their slots, once the dispatcher that owns them exists.
    plugin_threads: OnceLock<(Handle, ExecutionSlots)>,
    /// Queues known to exist (implicit routes and filter redirects check before writing).
    known_queues: RwLock<HashSet<String>>,
    counters: FilterCounters,
    published: AtomicU64,
    unroutable: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Where one message goes before the store writes it.
struct Plan {
    deliveries: Vec<Delivery>,
    unroutable: bool,
}

impl Router {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        options: RouterOptions,
    ) -> Self {
        Router {
            inner: Arc::new(Inner {
                filters: Filters::new(registry, &options),
                store,
                options,
                table: RwLock::new(None),
                plugin_threads: OnceLock::new(),
                known_queues: RwLock::new(HashSet::new()),
                counters: FilterCounters::default(),
                published: AtomicU64::new(0),
                unroutable: AtomicU64::new(0),
            }),
        }
    }

    pub fn options(&self) -> &RouterOptions {
        &self.inner.options
    }

    /// Gives the router the plugin threads its filters run on (the dispatcher owns them).
    pub fn attach(&self, plugin_threads: Handle, slots: ExecutionSlots) {
        let _ = self.inner.plugin_threads.set((plugin_threads, slots));
    }

    // --- routes -------------------------------------------------------------------------------

    /// Checks and creates a route (or finds the identical one: then `false`).
    pub async fn add_route(&self, mut route: NewRoute) -> Result<(Route, bool), RouteError> {
        let pattern = Pattern::parse(&route.pattern)
            .map_err(|e| RouteError::InvalidRoute(format!("pattern {:?}: {e}", route.pattern)))?;
        route.pattern = pattern.to_string();
        check_route_headers(&route.headers)?;
        check_limits(&route)?;
        let created = self.inner.store.create_route(route).await?;
        self.reload().await?;
        Ok(created)
    }

    pub async fn routes(&self) -> Result<Vec<Route>, RouteError> {
        Ok(self.inner.store.list_routes().await?)
    }

    pub async fn delete_route(&self, id: RouteId) -> Result<Route, RouteError> {
        let route = self.inner.store.delete_route(id).await?;
        self.reload().await?;
        Ok(route)
    }

    /// Reads the routes from the store again (after a change, or a queue deletion that took
    /// routes with it).
    pub async fn reload(&self) -> Result<(), RouteError> {
        let routes = self.inner.store.list_routes().await?;
        let mut compiled = Vec::with_capacity(routes.len());
        let mut patterns = Vec::with_capacity(routes.len());
        for route in routes {
            // The store holds what `add_route` accepted; a pattern it cannot parse now would be
            // a route from a newer Spool, which matches nothing here rather than everything.
            match Pattern::parse(&route.pattern) {
                Ok(p) => patterns.push((p, compiled.len())),
                Err(e) => {
                    tracing::warn!(route = route.id, pattern = %route.pattern, error = %e, "route ignored: unreadable pattern");
                }
            }
            compiled.push(route);
        }
        let table = Table {
            index: RouteIndex::new(patterns),
            routes: compiled,
        };
        *self.inner.table.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(table));
        self.inner
            .known_queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    async fn table(&self) -> Result<Arc<Table>, RouteError> {
        if let Some(t) = self
            .inner
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(t);
        }
        self.reload().await?;
        Ok(self
            .inner
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default())
    }

    /// Where a message published to `topic` would go, without running filters or writing
    /// anything: the routes whose pattern matches (their header conditions and filters still
    /// decide per message), and what happens to a message none of them takes.
    pub async fn reach(&self, topic: &str) -> Result<Reach, RouteError> {
        validate_topic(topic).map_err(|e| RouteError::InvalidTopic(e.to_string()))?;
        let table = self.table().await?;
        let routes = table
            .matching(topic)
            .into_iter()
            .map(|i| table.routes[i].clone())
            .collect();
        let options = &self.inner.options;
        let otherwise = if options.implicit_routes && self.queue_exists(topic).await? {
            Otherwise::Implicit(topic.to_owned())
        } else if let Some(q) = &options.unroutable_queue {
            Otherwise::Unroutable(q.clone())
        } else {
            Otherwise::Refused
        };
        Ok(Reach { routes, otherwise })
    }

    // --- publishing ---------------------------------------------------------------------------

    /// Publishes `messages` to `topic` (from a producer): routes each, runs the filters on the
    /// plugin threads, and writes every delivery in one transaction. One entry per delivery.
    pub async fn publish(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Published>, RouteError> {
        let resolved = self.route(topic, messages).await?;
        let shape = Shape::of(&resolved.deliveries);
        let written = match self.inner.store.publish(resolved.deliveries).await {
            Err(StoreError::QueueNotFound(q)) => {
                // A queue this router believed in is gone: forget what it knew.
                self.forget_queues();
                return Err(RouteError::Store(StoreError::QueueNotFound(q)));
            }
            r => r?,
        };
        self.inner
            .published
            .fetch_add(written.len() as u64, Ordering::Relaxed);
        self.inner
            .unroutable
            .fetch_add(resolved.unroutable, Ordering::Relaxed);
        Ok(shape.published(written))
    }

    /// Decides where `messages` published to `topic` go, running filters on the plugin
    /// threads, without writing anything: the caller writes the deliveries (in its own
    /// transaction, as the scheduler does with a schedule's advance) and then calls
    /// [`Router::count_written`]. A refusal for want of a route is counted here.
    pub async fn route(
        &self,
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Resolved, RouteError> {
        validate_topic(topic).map_err(|e| RouteError::InvalidTopic(e.to_string()))?;
        let table = self.table().await?;
        let matched = table.matching(topic);
        let needs_plugins =
            !messages.is_empty() && matched.iter().any(|i| table.routes[*i].filter.is_some());
        let resolved = match self.inner.plugin_threads.get() {
            Some((threads, slots)) if needs_plugins => {
                let router = self.clone();
                let topic = topic.to_owned();
                let slots = slots.clone();
                // One slot for the whole request: taking one per message costs more than the
                // filter call itself, and the epoch ticks inside each call still hand the slot
                // over when another queue waits.
                threads
                    .spawn(async move {
                        let slot = slots.acquire(&format!("publish {topic}")).await;
                        slot.run(router.resolve(&table, &matched, &topic, messages), |_| {
                            false
                        })
                        .await
                    })
                    .await
                    .map_err(|e| {
                        RouteError::Store(StoreError::Database(format!(
                            "the plugin threads failed while routing: {e}"
                        )))
                    })?
            }
            _ => self.resolve(&table, &matched, topic, messages).await,
        };
        match resolved {
            Err(e @ RouteError::NoRoute { .. }) => {
                // Refused for want of a route: counted too, so a producer sending to a topic
                // nobody reads shows up in the metrics, not only in its own error log.
                self.inner.unroutable.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            r => r,
        }
    }

    /// Counts deliveries of [`Router::route`] that a caller wrote itself.
    pub fn count_written(&self, deliveries: u64, unroutable: u64) {
        self.inner
            .published
            .fetch_add(deliveries, Ordering::Relaxed);
        self.inner
            .unroutable
            .fetch_add(unroutable, Ordering::Relaxed);
    }

    /// Routes a message a handler publishes while it handles `parent` (already on a plugin
    /// thread, holding the handler's slot): the deliveries to write with the parent's ack.
    pub async fn resolve_chained(
        &self,
        topic: &str,
        message: NewMessage,
    ) -> Result<Resolved, RouteError> {
        validate_topic(topic).map_err(|e| RouteError::InvalidTopic(e.to_string()))?;
        let limit = self.inner.options.max_chain_depth;
        if message.depth > limit {
            return Err(RouteError::ChainTooDeep {
                depth: message.depth,
                limit,
            });
        }
        let table = self.table().await?;
        let matched = table.matching(topic);
        let resolved = self.resolve(&table, &matched, topic, vec![message]).await?;
        self.inner
            .unroutable
            .fetch_add(resolved.unroutable, Ordering::Relaxed);
        Ok(resolved)
    }

    /// Where each message goes. Filters run right here: the caller holds an execution slot on
    /// the plugin threads when a matching route has one (a producer's publish takes one for the
    /// request; a handler's publish runs inside the handler's).
    async fn resolve(
        &self,
        table: &Table,
        matched: &[usize],
        topic: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Resolved, RouteError> {
        let matched: Vec<&Route> = matched.iter().map(|i| &table.routes[*i]).collect();
        let mut out = Resolved::default();
        for mut message in messages {
            message.topic.get_or_insert_with(|| topic.to_owned());
            let plan = self.plan(&matched, topic, message).await?;
            out.unroutable += u64::from(plan.unroutable);
            out.deliveries.extend(plan.deliveries);
        }
        Ok(out)
    }

    /// Routes one message.
    async fn plan(
        &self,
        matched: &[&Route],
        topic: &str,
        message: NewMessage,
    ) -> Result<Plan, RouteError> {
        // The common case, one plain route: the message moves into its delivery uncopied.
        if let [only] = matched
            && only.filter.is_none()
            && headers_match(&only.headers, &message.headers)
        {
            return Ok(Plan {
                deliveries: vec![Delivery {
                    queue: only.queue.clone(),
                    message,
                    route: Some(only.id),
                    filter_error: None,
                }],
                unroutable: false,
            });
        }
        let mut deliveries: Vec<Delivery> = Vec::new();
        let mut any = false;
        for route in matched {
            if !headers_match(&route.headers, &message.headers) {
                continue;
            }
            any = true;
            let Some(filter) = &route.filter else {
                push_once(&mut deliveries, plain(route, &message));
                continue;
            };
            let (result, version) = self
                .inner
                .filters
                .run(filter, topic, &message, &route.limits)
                .await;
            let label = version.unwrap_or_else(|| filter.clone());
            match result {
                Ok(decision) => {
                    self.inner
                        .counters
                        .decided(filter, FilterOutcome::of(&decision));
                    for d in self.apply(route, &label, &message, decision).await? {
                        push_once(&mut deliveries, d);
                    }
                }
                Err(f) => {
                    self.inner.counters.failed(filter, f.category);
                    tracing::warn!(route = route.id, filter = %label, category = %f.category, error = %f.message, "filter failed; the delivery is dead-lettered");
                    let mut d = plain(route, &message);
                    d.filter_error = Some(format!(
                        "filter {label} of route {} failed ({}): {}",
                        route.id, f.category, f.message
                    ));
                    push_once(&mut deliveries, d);
                }
            }
        }
        if any {
            return Ok(Plan {
                deliveries,
                unroutable: false,
            });
        }
        let options = &self.inner.options;
        if options.implicit_routes && self.queue_exists(topic).await? {
            return Ok(Plan {
                deliveries: vec![Delivery {
                    queue: topic.to_owned(),
                    message,
                    route: None,
                    filter_error: None,
                }],
                unroutable: false,
            });
        }
        match &options.unroutable_queue {
            Some(q) => Ok(Plan {
                deliveries: vec![Delivery {
                    queue: q.clone(),
                    message,
                    route: None,
                    filter_error: None,
                }],
                unroutable: true,
            }),
            None => Err(RouteError::NoRoute {
                topic: topic.to_owned(),
                implicit: options.implicit_routes,
            }),
        }
    }

    /// What a filter's decision delivers. A redirect to a queue that does not exist is the
    /// filter's mistake: the message is kept as a dead letter of the route's queue.
    async fn apply(
        &self,
        route: &Route,
        filter: &str,
        message: &NewMessage,
        decision: RouteDecision,
    ) -> Result<Vec<Delivery>, RouteError> {
        let (queues, rewritten) = match decision {
            RouteDecision::Drop => return Ok(Vec::new()),
            RouteDecision::Deliver(queues) => (queues, None),
            RouteDecision::Transform {
                queues,
                payload,
                headers,
            } => (queues, Some((payload, headers))),
        };
        let mut message = message.clone();
        if let Some((payload, headers)) = rewritten {
            message.payload = payload;
            message.headers = headers;
        }
        if queues.is_empty() {
            return Ok(vec![plain(route, &message)]);
        }
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            if !self.queue_exists(&q).await? {
                let mut d = plain(route, &message);
                d.filter_error = Some(format!(
                    "filter {filter} of route {} sent the message to queue {q:?}, which does \
                     not exist; create it and replay this dead letter",
                    route.id
                ));
                return Ok(vec![d]);
            }
            out.push(Delivery {
                queue: q,
                message: message.clone(),
                route: Some(route.id),
                filter_error: None,
            });
        }
        Ok(out)
    }

    async fn queue_exists(&self, name: &str) -> Result<bool, RouteError> {
        if self
            .inner
            .known_queues
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
        {
            return Ok(true);
        }
        if crate::model::validate_name("queue", name).is_err() {
            return Ok(false);
        }
        match self.inner.store.get_queue(name).await {
            Ok(_) => {
                self.inner
                    .known_queues
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_owned());
                Ok(true)
            }
            Err(StoreError::QueueNotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets which queues exist (one was deleted).
    pub fn forget_queues(&self) {
        self.inner
            .known_queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    // --- replay -------------------------------------------------------------------------------

    /// Replays dead letter `id`. A delivery whose filter failed runs its route's filter again
    /// (unless `skip_filter`) and goes where it decides now; anything else (or with
    /// `skip_filter`, or when the route is gone) goes back to its queue as `ready`.
    pub async fn replay(
        &self,
        id: MessageId,
        skip_filter: bool,
    ) -> Result<Vec<Published>, RouteError> {
        let store = &self.inner.store;
        let m = store.get_message(id).await?;
        if m.state != MessageState::Dead {
            return Err(StoreError::DeadLetterNotFound(id).into());
        }
        let table = self.table().await?;
        let route = m
            .route_id
            .filter(|_| m.error_category == Some(ErrorCategory::Filter) && !skip_filter)
            .and_then(|r| table.routes.iter().find(|route| route.id == r))
            .cloned();
        let (Some(route), Some(filter), Some(topic)) = (
            route.clone(),
            route.as_ref().and_then(|r| r.filter.clone()),
            m.topic.clone(),
        ) else {
            return self.replay_in_place(id, m.queue).await;
        };
        let message = NewMessage {
            payload: m.payload.clone().unwrap_or_default(),
            priority: m.priority,
            headers: m.headers.clone(),
            topic: Some(topic.clone()),
            correlation_id: m.correlation_id.clone(),
            producer: m.producer.clone(),
            parent_id: m.parent_id,
            depth: m.depth,
            ..NewMessage::default()
        };
        let slots = self.inner.plugin_threads.get().map(|(_, s)| s.clone());
        let run = {
            let router = self.clone();
            let route = route.clone();
            let message = message.clone();
            async move {
                let filters = &router.inner.filters;
                match &slots {
                    Some(slots) => {
                        let slot = slots.acquire(&format!("filter {filter}")).await;
                        slot.run(
                            filters.run(&filter, &topic, &message, &route.limits),
                            wasted_slot,
                        )
                        .await
                    }
                    None => filters.run(&filter, &topic, &message, &route.limits).await,
                }
            }
        };
        let (result, version) = match self.inner.plugin_threads.get() {
            Some((threads, _)) => threads.spawn(run).await.map_err(|e| {
                RouteError::Store(StoreError::Database(format!(
                    "the plugin threads failed while routing: {e}"
                )))
            })?,
            None => run.await,
        };
        let label = version.unwrap_or_else(|| route.filter.clone().unwrap_or_default());
        let decision = match result {
            Ok(d) => d,
            Err(f) => {
                if let Some(name) = &route.filter {
                    self.inner.counters.failed(name, f.category);
                }
                return Err(RouteError::FilterFailed(format!(
                    "filter {label} ({}): {}",
                    f.category, f.message
                )));
            }
        };
        let filter_name = route.filter.clone().unwrap_or_default();
        self.inner
            .counters
            .decided(&filter_name, FilterOutcome::of(&decision));
        let unchanged = matches!(&decision, RouteDecision::Deliver(q) if q.is_empty());
        if unchanged {
            return self.replay_in_place(id, m.queue).await;
        }
        let mut deliveries = Vec::new();
        for d in self.apply(&route, &label, &message, decision).await? {
            push_once(&mut deliveries, d);
        }
        let shape = Shape::of(&deliveries);
        let written = store.replace_dead(id, deliveries).await?;
        Ok(shape.published(written))
    }

    /// The dead letter goes back to its own queue, `ready`, keeping its id.
    async fn replay_in_place(
        &self,
        id: MessageId,
        queue: String,
    ) -> Result<Vec<Published>, RouteError> {
        self.inner.store.replay_dead(id).await?;
        Ok(vec![Published {
            queue,
            id,
            existing: true,
            dead: false,
        }])
    }

    pub fn stats(&self) -> RouterStats {
        RouterStats {
            published: self.inner.published.load(Ordering::Relaxed),
            unroutable: self.inner.unroutable.load(Ordering::Relaxed),
            filters: self.inner.counters.snapshot(),
        }
    }
}

/// Whether a filter call's slot time achieved nothing (see [`PluginFailure::wastes_slot`]).
fn wasted_slot(
    (result, _): &(
        Result<RouteDecision, crate::runtime::PluginFailure>,
        Option<String>,
    ),
) -> bool {
    result
        .as_ref()
        .is_err_and(crate::runtime::PluginFailure::wastes_slot)
}

/// What the answer to a publish needs of its deliveries once the store has taken them: each
/// one's queue and whether it went in as a filter's dead letter.
struct Shape(Vec<(String, bool)>);

impl Shape {
    fn of(deliveries: &[Delivery]) -> Shape {
        Shape(
            deliveries
                .iter()
                .map(|d| (d.queue.clone(), d.filter_error.is_some()))
                .collect(),
        )
    }

    /// Pairs the store's answers (one per delivery, in order) with their queues.
    fn published(self, written: Vec<crate::model::Enqueued>) -> Vec<Published> {
        written
            .into_iter()
            .zip(self.0)
            .map(|(e, (queue, dead))| Published {
                queue,
                id: e.id,
                existing: e.existing,
                dead,
            })
            .collect()
    }
}

/// The route's own delivery of `message`.
fn plain(route: &Route, message: &NewMessage) -> Delivery {
    Delivery {
        queue: route.queue.clone(),
        message: message.clone(),
        route: Some(route.id),
        filter_error: None,
    }
}

/// Adds `d` unless its queue already gets this message: a queue matched by several routes
/// gets it once (the first route's delivery).
fn push_once(deliveries: &mut Vec<Delivery>, d: Delivery) {
    if !deliveries.iter().any(|x| x.queue == d.queue) {
        deliveries.push(d);
    }
}

/// Every condition holds: the message has a header of that name (case-insensitive, as HTTP
/// header names) with exactly that value.
fn headers_match(conditions: &[(String, String)], headers: &[(String, String)]) -> bool {
    conditions.iter().all(|(name, value)| {
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    })
}

fn check_route_headers(headers: &[(String, String)]) -> Result<(), RouteError> {
    if headers.len() > MAX_ROUTE_HEADERS {
        return Err(RouteError::InvalidRoute(format!(
            "{} header conditions (limit {MAX_ROUTE_HEADERS})",
            headers.len()
        )));
    }
    for (name, value) in headers {
        let name_ok = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(RouteError::InvalidRoute(format!(
                "header condition name {name:?} must be 1 to 256 characters from A-Z a-z 0-9 - _ ."
            )));
        }
        if value.len() > 4096 || value.chars().any(char::is_control) {
            return Err(RouteError::InvalidRoute(format!(
                "header condition {name:?}: the value must be one line of at most 4096 bytes"
            )));
        }
    }
    Ok(())
}

fn check_limits(route: &NewRoute) -> Result<(), RouteError> {
    let l = &route.limits;
    if route.filter.is_none() && *l != crate::model::FilterLimits::default() {
        return Err(RouteError::InvalidRoute(
            "timeout_ms, fuel and memory_mb limit a route's filter; this route has none".to_owned(),
        ));
    }
    if l.timeout_ms.is_some_and(|t| !(1..=60_000).contains(&t)) {
        return Err(RouteError::InvalidRoute(
            "timeout_ms must be 1 to 60000".to_owned(),
        ));
    }
    if l.fuel.is_some_and(|f| f == 0) {
        return Err(RouteError::InvalidRoute(
            "fuel must be at least 1".to_owned(),
        ));
    }
    if l.memory_mb.is_some_and(|m| !(1..=4096).contains(&m)) {
        return Err(RouteError::InvalidRoute(
            "memory_mb must be 1 to 4096".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
