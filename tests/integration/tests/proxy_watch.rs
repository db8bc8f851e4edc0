//! The proxy's watch loop on the real, pinned maps: Services and EndpointSlices written to the
//! in-process API server reach the datapath, and connections from the test cgroup follow them.
//! Also measures API write to pinned-map write (printed).

mod common;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use common::{BACKEND_PORT, Lab};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use skiff_apiserver::testing::LocalServer;
use skiff_datapath::{LbMaps as _, PinnedLbMaps};
use skiff_proxy::{NodeIdentity, Proxy, WatchConfig, WatchHandle};
use skiff_test_support::require_root;

const VIP: &str = "10.96.0.20:80";

fn slice_patch(addresses: &[Ipv4Addr]) -> Patch<serde_json::Value> {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|a| json!({"addresses": [a.to_string()], "conditions": {"ready": true}}))
        .collect();
    Patch::Merge(json!({"endpoints": endpoints}))
}

/// Polls the pinned backend map (a few bpf() calls) until `ip` is in it.
fn wait_for_backend(maps: &PinnedLbMaps, ip: Ipv4Addr) -> Instant {
    let want = u32::from_ne_bytes(ip.octets());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let backends = maps.dump_backends().expect("dumping the backend map");
        if backends.iter().any(|(_, b)| b.address == want) {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{ip} never reached the maps");
        std::thread::yield_now();
    }
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf()"]
fn api_changes_reach_the_pinned_maps_and_traffic_follows() {
    require_root();
    let lab = Lab::new(2);
    lab.attach();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(LocalServer::start()).unwrap();
    let client = {
        let _guard = runtime.enter();
        Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap()
    };
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let be = |i: usize| lab.backends[i].addr;
    runtime.block_on(async {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"port": 80, "targetPort": BACKEND_PORT, "protocol": "TCP"}]},
        }))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"port": BACKEND_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [be(0).to_string()], "conditions": {"ready": true}}],
        }))
        .unwrap();
        slices.create(&PostParams::default(), &slice).await.unwrap();
    });

    let handle = WatchHandle::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let mut proxy = Proxy::new(lab.table(), NodeIdentity::default());
        let (client, handle) = (client.clone(), handle.clone());
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            skiff_proxy::run(client, &mut proxy, WatchConfig::default(), handle, shutdown)
                .await
                .unwrap();
        })
    };
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), handle.ready())
            .await
            .expect("first sync in time");
    });
    let reply = lab.probe(&["tcp", VIP]);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(Lab::backend_of(&reply), lab.backends[0].name);

    // The endpoint moves to the other backend: new connections follow.
    let maps = PinnedLbMaps::open(lab.pins.path()).unwrap();
    runtime
        .block_on(slices.patch("web-1", &PatchParams::default(), &slice_patch(&[be(1)])))
        .unwrap();
    wait_for_backend(&maps, be(1));
    for _ in 0..5 {
        let reply = lab.probe(&["tcp", VIP]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(Lab::backend_of(&reply), lab.backends[1].name);
    }

    // API write to pinned-map write, one change at a time (addresses nobody connects to).
    let mut latencies = Vec::with_capacity(1_000);
    for i in 0..1_000u32 {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 200, 1)) + i);
        let started = Instant::now();
        runtime
            .block_on(slices.patch("web-1", &PatchParams::default(), &slice_patch(&[ip])))
            .unwrap();
        latencies.push(wait_for_backend(&maps, ip) - started);
    }
    latencies.sort();
    let at = |p: usize| latencies[(latencies.len() * p).div_ceil(100).max(1) - 1];
    println!(
        "API write -> pinned map write, 1000 endpoint changes one at a time: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        at(50),
        at(90),
        at(99),
        latencies.last().unwrap()
    );
    let metrics = handle.metrics();
    assert_eq!(metrics.frontends_pending, 0, "{metrics:?}");

    stop.send(()).unwrap();
    runtime.block_on(task).unwrap();
}
