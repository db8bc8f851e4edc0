//! The watch loop against skiff's real in-process API server: objects created and changed
//! through kube reach fake maps shared with the test (nothing touches the kernel).

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures_util::{StreamExt as _, stream};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use skiff_apiserver::testing::LocalServer;
use skiff_datapath::{FakeLbMaps, Frontend, LbMaps, LbTable, MapsError};
use skiff_ebpf_common::{Backend4, Lb4Key, Lb4Service, Maglev4Key};
use skiff_proxy::{NodeIdentity, Proxy, WatchConfig, WatchHandle};
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
    time::{Instant, timeout},
};

const STEP: Duration = Duration::from_secs(10);

/// Fake maps the proxy owns and the test reads: every write bumps a counter the test waits on,
/// and the first write of each backend address is timed (the service slots naming it follow in
/// the same sync, microseconds later).
#[derive(Clone)]
struct SharedMaps {
    fake: Arc<Mutex<FakeLbMaps>>,
    writes: Arc<watch::Sender<u64>>,
    first_seen: Arc<Mutex<HashMap<Ipv4Addr, Instant>>>,
}

impl SharedMaps {
    fn new() -> Self {
        Self {
            fake: Arc::default(),
            writes: Arc::new(watch::channel(0).0),
            first_seen: Arc::default(),
        }
    }

    fn first_seen(&self, ip: Ipv4Addr) -> Option<Instant> {
        self.first_seen.lock().unwrap().get(&ip).copied()
    }

    fn lock(&self) -> MutexGuard<'_, FakeLbMaps> {
        self.fake.lock().unwrap()
    }

    fn written<T>(&self, result: Result<T, MapsError>) -> Result<T, MapsError> {
        self.writes.send_modify(|n| *n += 1);
        result
    }

    /// What the maps hold, read back the way the agent would after a restart.
    fn table(&self) -> LbTable<FakeLbMaps> {
        LbTable::open(self.lock().clone()).unwrap()
    }

    /// The backends of a frontend as "ip:port", or `None` when the maps lack it.
    fn backends(&self, frontend: &str) -> Option<Vec<String>> {
        let frontend: Frontend = frontend.parse().unwrap();
        self.table().get(&frontend).map(|service| {
            service
                .backends
                .iter()
                .map(|b| b.address.to_string())
                .collect()
        })
    }

    /// Waits (on map writes, not by sleeping) until `done` holds for what the maps hold.
    async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let mut writes = self.writes.subscribe();
        let wait = async {
            while !done(self) {
                writes.changed().await.unwrap();
            }
        };
        if timeout(STEP, wait).await.is_err() {
            panic!(
                "maps never got to: {what}; they hold {:?}",
                self.table().list()
            );
        }
    }
}

impl LbMaps for SharedMaps {
    fn update_service(&mut self, key: &Lb4Key, value: &Lb4Service) -> Result<(), MapsError> {
        let r = self.lock().update_service(key, value);
        self.written(r)
    }
    fn delete_service(&mut self, key: &Lb4Key) -> Result<(), MapsError> {
        let r = self.lock().delete_service(key);
        self.written(r)
    }
    fn update_backend(&mut self, id: u32, value: &Backend4) -> Result<(), MapsError> {
        let ip = Ipv4Addr::from(value.address.to_ne_bytes());
        self.first_seen
            .lock()
            .unwrap()
            .entry(ip)
            .or_insert_with(Instant::now);
        let r = self.lock().update_backend(id, value);
        self.written(r)
    }
    fn delete_backend(&mut self, id: u32) -> Result<(), MapsError> {
        let r = self.lock().delete_backend(id);
        self.written(r)
    }
    fn dump_services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, MapsError> {
        self.lock().dump_services()
    }
    fn dump_backends(&self) -> Result<Vec<(u32, Backend4)>, MapsError> {
        self.lock().dump_backends()
    }
    fn update_maglev(&mut self, key: &Maglev4Key, backend_id: u32) -> Result<(), MapsError> {
        let r = self.lock().update_maglev(key, backend_id);
        self.written(r)
    }
    fn delete_maglev(&mut self, key: &Maglev4Key) -> Result<(), MapsError> {
        let r = self.lock().delete_maglev(key);
        self.written(r)
    }
    fn dump_maglev(&self) -> Result<Vec<(Maglev4Key, u32)>, MapsError> {
        self.lock().dump_maglev()
    }
}

/// A running watch loop; `stop` hands its proxy back.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Proxy<SharedMaps>>,
    handle: WatchHandle,
}

impl Running {
    fn start(client: &Client, mut proxy: Proxy<SharedMaps>, config: WatchConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = WatchHandle::new();
        let client = client.clone();
        let loop_handle = handle.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            skiff_proxy::run(client, &mut proxy, config, loop_handle, shutdown)
                .await
                .unwrap();
            proxy
        });
        Self { stop, task, handle }
    }

    async fn ready(&self) {
        timeout(STEP, self.handle.ready())
            .await
            .expect("the first full sync in time");
    }

    async fn stop(self) -> Proxy<SharedMaps> {
        self.stop.send(()).unwrap();
        timeout(STEP, self.task).await.unwrap().unwrap()
    }
}

fn fresh_proxy(maps: &SharedMaps, node: NodeIdentity) -> Proxy<SharedMaps> {
    Proxy::new(LbTable::open(maps.clone()).unwrap(), node)
}

async fn start() -> (LocalServer, Client) {
    let server = LocalServer::start().await.unwrap();
    let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    (server, client)
}

fn service_json(name: &str, ip: &str, extra: &Value) -> Service {
    let mut value = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    });
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Endpoints as (ip, ready, node).
fn endpoints(eps: &[(&str, bool, Option<&str>)]) -> Value {
    eps.iter()
        .map(|(ip, ready, node)| {
            let mut ep = json!({"addresses": [ip], "conditions": {"ready": ready}});
            if let Some(node) = node {
                ep["nodeName"] = json!(node);
            }
            ep
        })
        .collect()
}

fn slice_json(name: &str, service: &str, eps: &[(&str, bool, Option<&str>)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(eps),
    }))
    .unwrap()
}

async fn create_web(client: &Client, name: &str, ip: &str, eps: &[(&str, bool, Option<&str>)]) {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    services
        .create(&pp, &service_json(name, ip, &json!({})))
        .await
        .unwrap();
    slices
        .create(&pp, &slice_json(&format!("{name}-1"), name, eps))
        .await
        .unwrap();
}

async fn set_endpoints(client: &Client, slice: &str, eps: &[(&str, bool, Option<&str>)]) {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .patch(
            slice,
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": endpoints(eps)})),
        )
        .await
        .unwrap();
}

async fn delete_web(client: &Client, name: &str) {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    services
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    slices
        .delete(&format!("{name}-1"), &DeleteParams::default())
        .await
        .unwrap();
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn cluster_ip_service_follows_the_api() {
    let (_server, client) = start().await;
    // Objects that exist before the loop starts come through the initial list.
    create_web(
        &client,
        "web",
        "10.96.0.50",
        &[("10.244.0.5", true, None), ("10.244.0.6", true, None)],
    )
    .await;
    let maps = SharedMaps::new();
    let running = Running::start(
        &client,
        fresh_proxy(&maps, NodeIdentity::default()),
        WatchConfig::default(),
    );
    running.ready().await;
    // Ready means the initial state is in the maps already, not on its way.
    assert_eq!(
        maps.backends("10.96.0.50:80/tcp").map(sorted),
        Some(vec![
            "10.244.0.5:8080".to_owned(),
            "10.244.0.6:8080".to_owned()
        ])
    );

    // A pod turns unready: out of the backends.
    set_endpoints(
        &client,
        "web-1",
        &[("10.244.0.5", true, None), ("10.244.0.6", false, None)],
    )
    .await;
    maps.until("10.244.0.6 removed", |m| {
        m.backends("10.96.0.50:80/tcp") == Some(vec!["10.244.0.5:8080".to_owned()])
    })
    .await;

    // And ready again, plus a new one.
    set_endpoints(
        &client,
        "web-1",
        &[
            ("10.244.0.5", true, None),
            ("10.244.0.6", true, None),
            ("10.244.0.7", true, None),
        ],
    )
    .await;
    maps.until("three backends", |m| {
        m.backends("10.96.0.50:80/tcp").map(|b| b.len()) == Some(3)
    })
    .await;

    // A second Service created while running.
    create_web(&client, "api", "10.96.0.51", &[("10.244.1.1", true, None)]).await;
    maps.until("api frontend", |m| {
        m.backends("10.96.0.51:80/tcp") == Some(vec!["10.244.1.1:8080".to_owned()])
    })
    .await;

    // Service deleted: its frontend goes, the other stays.
    delete_web(&client, "web").await;
    maps.until("web frontend removed", |m| {
        m.backends("10.96.0.50:80/tcp").is_none()
    })
    .await;
    assert!(maps.backends("10.96.0.51:80/tcp").is_some());
    maps.lock().assert_consistent();

    let metrics = running.handle.metrics();
    assert!(metrics.ready && metrics.syncs >= 4, "{metrics:?}");
    assert_eq!(metrics.frontends_pending, 0);
    assert_eq!(metrics.watch_errors, 0, "{metrics:?}");
    running.stop().await;
}

/// The frontends of this test's Services (10.96.1.0/24): the server also has `kubernetes`.
fn test_frontends(maps: &SharedMaps) -> usize {
    maps.table()
        .frontends()
        .iter()
        .filter(|f| f.address.octets()[..3] == [10, 96, 1])
        .count()
}

#[tokio::test]
async fn restarts_relist_and_drop_what_was_deleted_meanwhile() {
    let (_server, client) = start().await;
    let maps = SharedMaps::new();
    let running = Running::start(
        &client,
        fresh_proxy(&maps, NodeIdentity::default()),
        WatchConfig::default(),
    );
    running.ready().await;
    for (name, ip, ep) in [
        ("a", "10.96.1.1", "10.244.2.1"),
        ("b", "10.96.1.2", "10.244.2.2"),
        ("c", "10.96.1.3", "10.244.2.3"),
    ] {
        create_web(&client, name, ip, &[(ep, true, None)]).await;
    }
    maps.until("a, b and c", |m| test_frontends(m) == 3).await;

    // The watches go down (same proxy, same maps); meanwhile b goes and a gains a backend.
    let proxy = running.stop().await;
    delete_web(&client, "b").await;
    set_endpoints(
        &client,
        "a-1",
        &[("10.244.2.1", true, None), ("10.244.2.9", true, None)],
    )
    .await;
    // Nothing watches: the maps still hold b.
    assert!(maps.backends("10.96.1.2:80/tcp").is_some());

    let running = Running::start(&client, proxy, WatchConfig::default());
    running.ready().await;
    assert_eq!(
        maps.backends("10.96.1.2:80/tcp"),
        None,
        "b dropped by the relist"
    );
    assert_eq!(
        maps.backends("10.96.1.1:80/tcp").map(sorted),
        Some(vec![
            "10.244.2.1:8080".to_owned(),
            "10.244.2.9:8080".to_owned()
        ])
    );
    assert!(maps.backends("10.96.1.3:80/tcp").is_some());
    running.stop().await;

    // The agent restarts: a new proxy over the maps as they are. c goes meanwhile.
    delete_web(&client, "c").await;
    let before = maps.lock().writes;
    let running = Running::start(
        &client,
        fresh_proxy(&maps, NodeIdentity::default()),
        WatchConfig::default(),
    );
    running.ready().await;
    assert_eq!(maps.backends("10.96.1.3:80/tcp"), None, "c removed");
    assert_eq!(test_frontends(&maps), 1, "{:?}", maps.table().list());
    // a was already right: removing c is the only thing written (a service with one backend:
    // its slot, its record, its backend).
    let written = maps.lock().writes - before;
    assert!(written <= 3, "{written} writes; a was rewritten?");
    running.stop().await;

    // And once more with nothing changed: not a single write.
    let before = maps.lock().writes;
    let running = Running::start(
        &client,
        fresh_proxy(&maps, NodeIdentity::default()),
        WatchConfig::default(),
    );
    running.ready().await;
    assert_eq!(
        maps.lock().writes,
        before,
        "an unchanged restart writes nothing"
    );
    running.stop().await;
}

#[tokio::test]
async fn node_addresses_and_local_traffic_policy() {
    let (_server, client) = start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({"status": {"addresses": [
        {"type": "Hostname", "address": "n1"},
        {"type": "InternalIP", "address": "192.168.77.2"},
    ]}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let svc = service_json(
        "np",
        "10.96.2.1",
        &json!({"spec": {
            "type": "NodePort",
            "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
        }}),
    );
    services.create(&PostParams::default(), &svc).await.unwrap();
    slices
        .create(
            &PostParams::default(),
            &slice_json(
                "np-1",
                "np",
                &[
                    ("10.244.3.1", true, Some("n1")),
                    ("10.244.3.2", true, Some("n2")),
                ],
            ),
        )
        .await
        .unwrap();

    let maps = SharedMaps::new();
    let config = WatchConfig {
        node_name: Some("n1".to_owned()),
        ..WatchConfig::default()
    };
    // The identity the proxy starts with is replaced by the Node's.
    let running = Running::start(&client, fresh_proxy(&maps, NodeIdentity::default()), config);
    running.ready().await;
    // From outside: local backends only.
    assert_eq!(
        maps.backends("192.168.77.2:30080/tcp"),
        Some(vec!["10.244.3.1:8080".to_owned()])
    );
    assert_eq!(
        maps.backends("10.96.2.1:80/tcp").map(|b| b.len()),
        Some(2),
        "ClusterIP keeps both"
    );

    // The node gains an address: a node port appears on it.
    let status = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "192.168.77.2"},
        {"type": "ExternalIP", "address": "203.0.113.9"},
    ]}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    maps.until("node port on the new address", |m| {
        m.backends("203.0.113.9:30080/tcp") == Some(vec!["10.244.3.1:8080".to_owned()])
    })
    .await;
    running.stop().await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(what: &str, latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    let p99 = percentile(latencies, 0.99);
    println!(
        "{what}: {} changes, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.90),
        p99,
        latencies.last().unwrap(),
    );
    p99
}

fn nth_ip(base: [u8; 4], n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + u32::try_from(n).unwrap())
}

/// API write to map write for endpoint changes: the time from sending the PATCH of an
/// EndpointSlice until the maps hold the new backend (timed by the fake maps' write hook).
/// Two runs over 201 Services: 1,000 changes one after another, then 1,000 changes to 100
/// Services sent 16 at a time (bursts a sync batches; a change that a later one to the same
/// Service supersedes within one batch counts as reached when that later one is). Run with
/// `cargo test -p skiff-proxy --test watch -- --ignored --nocapture bench`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints API-to-map latency percentiles"]
async fn bench_api_to_map_latency() {
    const CHANGES: usize = 1_000;
    const SERVICES: usize = 200;
    let (_server, client) = start().await;
    for i in 0..SERVICES {
        let ip = nth_ip([10, 96, 10, 0], i).to_string();
        let ep = nth_ip([10, 245, 0, 1], i).to_string();
        create_web(&client, &format!("bg{i}"), &ip, &[(&ep, true, None)]).await;
    }
    create_web(&client, "web", "10.96.0.50", &[("10.244.0.1", true, None)]).await;
    let maps = SharedMaps::new();
    let running = Running::start(
        &client,
        fresh_proxy(&maps, NodeIdentity::default()),
        WatchConfig::default(),
    );
    running.ready().await;

    // One at a time.
    let mut latencies = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let ip = nth_ip([10, 244, 100, 1], i);
        let started = Instant::now();
        set_endpoints(&client, "web-1", &[(&ip.to_string(), true, None)]).await;
        maps.until("the new backend", |m| m.first_seen(ip).is_some())
            .await;
        latencies.push(maps.first_seen(ip).unwrap() - started);
    }
    let syncs_before = running.handle.metrics().syncs;
    let sequential_p99 = report("API write -> map write, one at a time", &mut latencies);

    // Bursts: change i goes to Service bg(i % 100), 16 requests in flight.
    let changes: Vec<(usize, Ipv4Addr)> = (0..CHANGES)
        .map(|i| (i % 100, nth_ip([10, 246, 0, 1], i)))
        .collect();
    let timed: Vec<(Instant, Instant)> = stream::iter(changes.iter().copied())
        .map(|(service, ip)| {
            let client = client.clone();
            async move {
                let started = Instant::now();
                let eps = [(ip.to_string(), true, None)];
                let eps: Vec<(&str, bool, Option<&str>)> =
                    eps.iter().map(|(a, r, n)| (a.as_str(), *r, *n)).collect();
                set_endpoints(&client, &format!("bg{service}-1"), &eps).await;
                (started, Instant::now())
            }
        })
        .buffered(16)
        .collect()
        .await;
    // Every Service ends at its last change.
    let last: Vec<Ipv4Addr> = changes[CHANGES - 100..].iter().map(|c| c.1).collect();
    maps.until("every last change", |m| {
        last.iter().all(|ip| m.first_seen(*ip).is_some())
    })
    .await;
    // A change is reached when it or a later change to the same Service is in the maps.
    let mut reached: Vec<Option<Instant>> = vec![None; 100];
    let mut latencies = vec![Duration::ZERO; CHANGES];
    // From the API server's answer instead: what the watch and the proxy add.
    let mut after_ack = vec![Duration::ZERO; CHANGES];
    let mut requests: Vec<Duration> = timed.iter().map(|(s, a)| *a - *s).collect();
    for (i, (service, ip)) in changes.iter().enumerate().rev() {
        if let Some(seen) = maps.first_seen(*ip) {
            reached[*service] = Some(reached[*service].map_or(seen, |r| r.min(seen)));
        }
        let reached = reached[*service].unwrap();
        latencies[i] = reached - timed[i].0;
        after_ack[i] = reached.saturating_duration_since(timed[i].1);
    }
    report("  PATCH round trips themselves", &mut requests);
    report("  API answer -> map write", &mut after_ack);
    let metrics = running.handle.metrics();
    running.stop().await;
    let burst_p99 = report(
        "API write -> map write, bursts (16 in flight over 100 Services)",
        &mut latencies,
    );
    println!(
        "bursts took {} syncs for {CHANGES} changes; mean sync {:?}",
        metrics.syncs - syncs_before,
        metrics.sync_duration_total / u32::try_from(metrics.syncs.max(1)).unwrap(),
    );
    // A benchmark, not a timed test: the numbers depend on the build and the machine's load.
    println!(
        "target p99 < 100 ms: {}",
        if sequential_p99.max(burst_p99) < Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
}

#[tokio::test]
async fn node_name_and_fixed_addresses_work_before_the_node_registers() {
    let (_server, client) = start().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let svc = service_json(
        "np",
        "10.96.2.1",
        &json!({"spec": {
            "type": "NodePort",
            "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}],
        }}),
    );
    services.create(&PostParams::default(), &svc).await.unwrap();
    let eps = [
        ("10.244.3.1", true, Some("n1")),
        ("10.244.3.2", true, Some("n2")),
    ];
    slices
        .create(&PostParams::default(), &slice_json("np-1", "np", &eps))
        .await
        .unwrap();
    let maps = SharedMaps::new();
    let config = WatchConfig {
        node_name: Some("n1".to_owned()),
        node_addresses: Some(vec![Ipv4Addr::new(192, 168, 88, 1)]),
        ..WatchConfig::default()
    };
    // No Node object exists: the name and the fixed addresses are all there is.
    let running = Running::start(&client, fresh_proxy(&maps, NodeIdentity::default()), config);
    running.ready().await;
    assert_eq!(
        maps.backends("192.168.88.1:30080/tcp"),
        Some(vec!["10.244.3.1:8080".to_owned()])
    );
    running.stop().await;
}
