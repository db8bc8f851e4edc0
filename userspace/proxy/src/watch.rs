//! The API side of the proxy: kube-runtime watchers on Services, EndpointSlices and this node's
//! Node feed a [`Proxy`], and one loop decides when it syncs.
//!
//! ```text
//!  watcher(Service) ──┐                    apply every event that has arrived,
//!  watcher(Slice)   ──┼── select_all ──▶   buffer relists until their InitDone,   ──▶ Proxy::sync
//!  watcher(Node)    ──┘                    then one sync (once all three listed)
//! ```
//!
//! Bursts cost one sync: after the first event the loop drains whatever else the streams
//! already hold before syncing. A relist (the watcher's `Init` .. `InitDone`, after a restart
//! or an expired resource version) is buffered and swapped in whole, so objects deleted while
//! the watch was down disappear and the maps never see a half-listed state. No sync happens
//! before all three kinds have been listed once: the first sync removes every frontend nobody
//! wants, and a restarted agent must not remove Services whose slices it has not read yet.

use std::{
    fmt::{self, Write as _},
    future::Future,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _, stream::BoxStream};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use skiff_datapath::LbMaps;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{NodeIdentity, Proxy, SyncReport};

/// How the watch loop runs. The default works for an agent that knows its node's name only
/// through [`WatchConfig::node_name`].
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The Node this proxy runs on. When set, that Node is watched: its name tells local
    /// endpoints (traffic policy Local) and its IPv4 InternalIP/ExternalIP addresses become the
    /// NodePort addresses (unless [`WatchConfig::node_addresses`] fixes them). `None`: the
    /// proxy keeps the [`NodeIdentity`] it was built with and no Node is watched.
    pub node_name: Option<String>,
    /// NodePort addresses to use instead of the Node's own (e.g. from a `--nodeport-addresses`
    /// flag). `None`: take them from the Node.
    pub node_addresses: Option<Vec<Ipv4Addr>>,
    /// The least time between two syncs. Zero syncs as soon as a burst has been drained,
    /// which is what keeps the API-to-map latency low; a few milliseconds merge bursts further
    /// at that cost.
    pub min_sync_interval: Duration,
    /// Wait before retrying frontends whose write failed; doubles per failing sync up to
    /// [`WatchConfig::max_retry_interval`].
    pub retry_interval: Duration,
    pub max_retry_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            node_addresses: None,
            min_sync_interval: Duration::ZERO,
            retry_interval: Duration::from_millis(250),
            max_retry_interval: Duration::from_secs(30),
        }
    }
}

/// The watch loop stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    // The watchers retry with backoff forever; ending means kube-runtime gave up.
    #[error("the {kind} watch ended")]
    Ended { kind: &'static str },
}

/// Readiness and counters of a watch loop, shared with whoever serves `/readyz` and
/// `/metrics`. Cheap to clone; survives restarts of the loop (the maps keep their state, so a
/// proxy that was ready stays ready).
#[derive(Clone, Debug, Default)]
pub struct WatchHandle {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    ready: tokio::sync::Notify,
    is_ready: std::sync::atomic::AtomicBool,
    syncs: AtomicU64,
    sync_nanos_total: AtomicU64,
    last_sync_nanos: AtomicU64,
    events: AtomicU64,
    relists: AtomicU64,
    watch_errors: AtomicU64,
    frontends_upserted: AtomicU64,
    frontends_deleted: AtomicU64,
    frontends_failed: AtomicU64,
    frontends_pending: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of a [`WatchHandle`]'s counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchMetrics {
    /// Whether the first full sync (after Services, EndpointSlices and the Node were listed)
    /// is done.
    pub ready: bool,
    pub syncs: u64,
    pub sync_duration_total: Duration,
    pub last_sync_duration: Duration,
    /// Watch events handled (each object of a relist counts).
    pub events: u64,
    /// Relists swapped in (the initial lists included).
    pub relists: u64,
    /// Watch errors (each is retried with backoff).
    pub watch_errors: u64,
    pub frontends_upserted: u64,
    pub frontends_deleted: u64,
    /// Frontend writes or removals that failed, over all syncs.
    pub frontends_failed: u64,
    /// Frontends failing as of the last sync (to be retried).
    pub frontends_pending: u64,
    /// The last watch error or frontend failure, as text.
    pub last_error: Option<String>,
}

impl WatchHandle {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the first full sync is done: every Service listed at start is in the maps.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready.load(Ordering::Acquire)
    }

    /// Waits until [`WatchHandle::is_ready`].
    pub async fn ready(&self) {
        loop {
            let notified = self.inner.ready.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    #[must_use]
    pub fn metrics(&self) -> WatchMetrics {
        let s = &self.inner;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WatchMetrics {
            ready: self.is_ready(),
            syncs: load(&s.syncs),
            sync_duration_total: Duration::from_nanos(load(&s.sync_nanos_total)),
            last_sync_duration: Duration::from_nanos(load(&s.last_sync_nanos)),
            events: load(&s.events),
            relists: load(&s.relists),
            watch_errors: load(&s.watch_errors),
            frontends_upserted: load(&s.frontends_upserted),
            frontends_deleted: load(&s.frontends_deleted),
            frontends_failed: load(&s.frontends_failed),
            frontends_pending: load(&s.frontends_pending),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        }
    }

    /// The counters in the Prometheus text exposition format.
    #[must_use]
    pub fn render_prometheus(&self) -> String {
        self.metrics().to_string()
    }

    fn mark_ready(&self) {
        if !self.inner.is_ready.swap(true, Ordering::AcqRel) {
            self.inner.ready.notify_waiters();
        }
    }

    fn record_sync(&self, report: SyncReport, took: Duration, pending: usize) {
        let s = &self.inner;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        s.syncs.fetch_add(1, Ordering::Relaxed);
        s.sync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        s.last_sync_nanos.store(nanos, Ordering::Relaxed);
        s.frontends_upserted
            .fetch_add(report.upserted as u64, Ordering::Relaxed);
        s.frontends_deleted
            .fetch_add(report.deleted as u64, Ordering::Relaxed);
        s.frontends_failed
            .fetch_add(report.failed as u64, Ordering::Relaxed);
        s.frontends_pending.store(pending as u64, Ordering::Relaxed);
    }

    fn record_error(&self, error: String) {
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }
}

impl fmt::Display for WatchMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "skiff_proxy_ready",
            "gauge",
            "1 once the first full sync after listing Services, EndpointSlices and the Node is done.",
            u8::from(self.ready).to_string(),
        );
        metric(
            "skiff_proxy_syncs_total",
            "counter",
            "Syncs of the datapath maps.",
            self.syncs.to_string(),
        );
        metric(
            "skiff_proxy_sync_duration_seconds_total",
            "counter",
            "Time spent in syncs.",
            self.sync_duration_total.as_secs_f64().to_string(),
        );
        metric(
            "skiff_proxy_last_sync_duration_seconds",
            "gauge",
            "Duration of the last sync.",
            self.last_sync_duration.as_secs_f64().to_string(),
        );
        metric(
            "skiff_proxy_watch_events_total",
            "counter",
            "Watch events handled.",
            self.events.to_string(),
        );
        metric(
            "skiff_proxy_relists_total",
            "counter",
            "Full relists swapped in.",
            self.relists.to_string(),
        );
        metric(
            "skiff_proxy_watch_errors_total",
            "counter",
            "Watch errors (retried with backoff).",
            self.watch_errors.to_string(),
        );
        metric(
            "skiff_proxy_frontends_upserted_total",
            "counter",
            "Frontends written.",
            self.frontends_upserted.to_string(),
        );
        metric(
            "skiff_proxy_frontends_deleted_total",
            "counter",
            "Frontends removed.",
            self.frontends_deleted.to_string(),
        );
        metric(
            "skiff_proxy_frontend_failures_total",
            "counter",
            "Frontend writes or removals that failed.",
            self.frontends_failed.to_string(),
        );
        metric(
            "skiff_proxy_frontends_pending",
            "gauge",
            "Frontends failing as of the last sync, to be retried.",
            self.frontends_pending.to_string(),
        );
        f.write_str(&out)
    }
}

/// One event of one of the three watches.
#[derive(Debug)]
// Boxed: the objects are large and of very different sizes.
enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Node(Box<watcher::Event<Node>>),
}

#[derive(Debug)]
enum Item {
    Change(Change),
    Error(&'static str, watcher::Error),
    /// A watch stream ended (kube-runtime's never do while retrying with backoff).
    Ended(&'static str),
}

/// Applies watch events to the proxy, buffering relists until they are complete.
#[derive(Debug)]
struct Feed {
    node_name: Option<String>,
    node_addresses: Option<Vec<Ipv4Addr>>,
    /// `Some` while a relist of that kind is under way.
    services: Option<Vec<Service>>,
    slices: Option<Vec<EndpointSlice>>,
    nodes: Option<Vec<Node>>,
    services_listed: bool,
    slices_listed: bool,
    node_listed: bool,
}

impl Feed {
    fn new(config: &WatchConfig) -> Self {
        Self {
            node_name: config.node_name.clone(),
            node_addresses: config.node_addresses.clone(),
            services: None,
            slices: None,
            nodes: None,
            services_listed: false,
            slices_listed: false,
            // Without a node name there is no Node watch to wait for.
            node_listed: config.node_name.is_none(),
        }
    }

    /// Whether every kind has been listed once, so a sync sees the whole picture.
    const fn listed(&self) -> bool {
        self.services_listed && self.slices_listed && self.node_listed
    }

    /// Applies one event; returns the objects refused, as text.
    fn handle<M: LbMaps>(&mut self, proxy: &mut Proxy<M>, change: Change) -> Vec<String> {
        let mut refused = Vec::new();
        let mut note = |r: Result<(), crate::InputError>| {
            if let Err(e) = r {
                refused.push(e.to_string());
            }
        };
        match change {
            Change::Service(event) => match *event {
                watcher::Event::Apply(s) => note(proxy.apply_service(&s)),
                watcher::Event::Delete(s) => note(proxy.delete_service(&s)),
                watcher::Event::Init => self.services = Some(Vec::new()),
                watcher::Event::InitApply(s) => self.services.get_or_insert_default().push(s),
                watcher::Event::InitDone => {
                    let all = self.services.take().unwrap_or_default();
                    refused.extend(proxy.replace_services(&all).iter().map(ToString::to_string));
                    debug!(count = all.len(), "Services listed");
                    self.services_listed = true;
                }
            },
            Change::Slice(event) => match *event {
                watcher::Event::Apply(s) => note(proxy.apply_endpoint_slice(&s)),
                watcher::Event::Delete(s) => note(proxy.delete_endpoint_slice(&s)),
                watcher::Event::Init => self.slices = Some(Vec::new()),
                watcher::Event::InitApply(s) => self.slices.get_or_insert_default().push(s),
                watcher::Event::InitDone => {
                    let all = self.slices.take().unwrap_or_default();
                    refused.extend(
                        proxy
                            .replace_endpoint_slices(&all)
                            .iter()
                            .map(ToString::to_string),
                    );
                    debug!(count = all.len(), "EndpointSlices listed");
                    self.slices_listed = true;
                }
            },
            Change::Node(event) => match *event {
                watcher::Event::Apply(n) => self.apply_node(proxy, &n),
                // The agent re-registers its Node; until then the last addresses stay valid
                // (and node ports keep working for traffic already aimed at them).
                watcher::Event::Delete(_) => {}
                watcher::Event::Init => self.nodes = Some(Vec::new()),
                watcher::Event::InitApply(n) => self.nodes.get_or_insert_default().push(n),
                watcher::Event::InitDone => {
                    for node in self.nodes.take().unwrap_or_default() {
                        self.apply_node(proxy, &node);
                    }
                    self.node_listed = true;
                }
            },
        }
        refused
    }

    fn apply_node<M: LbMaps>(&self, proxy: &mut Proxy<M>, node: &Node) {
        let Some(name) = self.node_name.as_deref() else {
            return;
        };
        // The field selector already filters; this guards against a server that ignores it.
        if node.metadata.name.as_deref() != Some(name) {
            return;
        }
        let addresses = self
            .node_addresses
            .clone()
            .unwrap_or_else(|| node_addresses(node));
        let identity = NodeIdentity::new(name, addresses);
        if &identity != proxy.node() {
            info!(node = name, addresses = ?identity.addresses, "node identity changed");
            proxy.set_node(identity);
        }
    }
}

/// The IPv4 InternalIP and ExternalIP addresses of a Node, in its order, without repeats: the
/// addresses clients reach the node on, so where its node ports listen.
#[must_use]
pub fn node_addresses(node: &Node) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for address in addresses.into_iter().flatten() {
        if !matches!(address.type_.as_str(), "InternalIP" | "ExternalIP") {
            continue;
        }
        if let Ok(ip) = address.address.parse::<Ipv4Addr>()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

fn stream<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    wrap: fn(Box<watcher::Event<K>>) -> Change,
) -> BoxStream<'static, Item>
where
    K: kube::Resource + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |event| match event {
            Ok(event) => Item::Change(wrap(Box::new(event))),
            Err(error) => Item::Error(kind, error),
        })
        .chain(futures_util::stream::once(async move { Item::Ended(kind) }))
        .boxed()
}

/// Watches Services and EndpointSlices in all namespaces (and the Node named in `config`) and
/// keeps `proxy`'s maps in step until `shutdown` completes, then returns (`Ok`). The proxy
/// keeps its state, so calling `run` again with it resumes: the new watches relist and
/// anything deleted meanwhile goes. Syncs happen on this task; with pinned maps a sync is a
/// few bpf() calls per changed frontend.
pub async fn run<M: LbMaps>(
    client: Client,
    proxy: &mut Proxy<M>,
    config: WatchConfig,
    handle: WatchHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatchError> {
    let mut streams = vec![
        stream(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            "Service",
            Change::Service,
        ),
        stream(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
            "EndpointSlice",
            Change::Slice,
        ),
    ];
    if let Some(name) = &config.node_name {
        streams.push(stream(
            Api::<Node>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            "Node",
            Change::Node,
        ));
    }
    // Until the Node is listed (or registered at all), its name alone already tells local
    // endpoints.
    if let Some(name) = &config.node_name {
        let addresses = config
            .node_addresses
            .clone()
            .unwrap_or_else(|| proxy.node().addresses.clone());
        proxy.set_node(NodeIdentity::new(name.clone(), addresses));
    }
    let mut events = futures_util::stream::select_all(streams);
    let mut feed = Feed::new(&config);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut retry_delay = config.retry_interval;
    // When the next sync may happen (min_sync_interval, or the retry of failed frontends).
    let mut not_before = Instant::now();
    loop {
        let wake = if proxy.needs_sync() && feed.listed() {
            not_before
        } else {
            // Nothing to do until an event arrives.
            Instant::now() + Duration::from_secs(3600)
        };
        let first = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            item = events.next() => item,
            () = tokio::time::sleep_until(wake) => None,
        };
        if let Some(item) = first {
            handle_item(&mut feed, proxy, &handle, item)?;
            // The rest of the burst: everything the streams already hold.
            while let Some(Some(item)) = events.next().now_or_never() {
                handle_item(&mut feed, proxy, &handle, item)?;
            }
        }
        if !(feed.listed() && proxy.needs_sync()) || Instant::now() < not_before {
            continue;
        }
        let started = Instant::now();
        let report = proxy.sync();
        let took = started.elapsed();
        let pending = proxy.failures().count();
        handle.record_sync(report, took, pending);
        handle.mark_ready();
        not_before = started + config.min_sync_interval;
        if pending > 0 {
            if let Some(failure) = proxy.failures().next() {
                handle.record_error(format!("frontend {}: {}", failure.frontend, failure.error));
            }
            warn!(pending, ?retry_delay, "frontends failing; retrying");
            not_before = not_before.max(Instant::now() + retry_delay);
            retry_delay = (retry_delay * 2).min(config.max_retry_interval);
        } else {
            retry_delay = config.retry_interval;
        }
    }
}

fn handle_item<M: LbMaps>(
    feed: &mut Feed,
    proxy: &mut Proxy<M>,
    handle: &WatchHandle,
    item: Item,
) -> Result<(), WatchError> {
    match item {
        Item::Change(change) => {
            handle.inner.events.fetch_add(1, Ordering::Relaxed);
            let init_done = match &change {
                Change::Service(e) => matches!(**e, watcher::Event::InitDone),
                Change::Slice(e) => matches!(**e, watcher::Event::InitDone),
                Change::Node(e) => matches!(**e, watcher::Event::InitDone),
            };
            if init_done {
                handle.inner.relists.fetch_add(1, Ordering::Relaxed);
            }
            for refused in feed.handle(proxy, change) {
                warn!(%refused, "object ignored");
                handle.record_error(refused);
            }
            Ok(())
        }
        Item::Ended(kind) => Err(WatchError::Ended { kind }),
        Item::Error(kind, error) => {
            handle.inner.watch_errors.fetch_add(1, Ordering::Relaxed);
            warn!(kind, %error, "watch failed; retrying with backoff");
            handle.record_error(format!("{kind} watch: {error}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
