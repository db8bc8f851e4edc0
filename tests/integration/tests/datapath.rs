//! The datapath end to end: the embedded eBPF objects load, attach to a test-made cgroup and a
//! veth in a test-made network namespace, act on real sockets and packets, survive their loader
//! and are removed without a trace.
//!
//! Network safety: every address used here exists only inside namespaces these tests create.
//! The node namespace has no default route, so if a program failed to attach, a connect() to
//! the service address fails with ENETUNREACH instead of leaving the namespace.

mod common;

use common::{ECONNREFUSED, ENETUNREACH, Lab, Server, netprobe, run_probe};
use serde_json::Value;
use skiff_datapath::{
    Attachment, Backend, Datapath, DatapathConfig, LbTable, PinnedLbMaps, Service, detach_all,
    read_stats,
};
use skiff_test_support::{BpffsDir, Cgroup, NetNs, require_root, veth_pair};

const VIP: &str = "10.96.0.10:80";

/// Runs netprobe in `ns` (and in `cgroup` when given) and returns its JSON report.
fn probe(ns: &NetNs, cgroup: Option<&Cgroup>, args: &[&str]) -> Value {
    let cmd = match cgroup {
        Some(cg) => ns.command_in_cgroup(cg, netprobe()),
        None => ns.command(netprobe()),
    };
    run_probe(cmd, args)
}

fn attach(
    node: &NetNs,
    config: &DatapathConfig,
    cgroup: &Cgroup,
    iface: &str,
) -> (Attachment, Attachment) {
    node.run(|| {
        let mut datapath = Datapath::load(config.clone()).expect("loading the eBPF objects");
        let sock = datapath
            .attach_cgroup(cgroup.path())
            .expect("attaching connect4");
        let tc = datapath.attach_tc(iface).expect("attaching tc");
        (sock, tc)
    })
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf()"]
fn datapath_loads_attaches_and_acts_in_test_namespaces_only() {
    require_root();
    let node = NetNs::new("node");
    let peer = NetNs::new("peer");
    let (node_if, _) = veth_pair(&node, "198.18.0.1/24", &peer, "198.18.0.2/24");
    let cgroup = Cgroup::new("cg");
    let pins = BpffsDir::new("pins");
    let _server = Server::start(&node, "backend-a", 8080);
    let backend = "127.0.0.1:8080".parse().unwrap();

    let before = probe(&node, Some(&cgroup), &["tcp", VIP]);
    assert_eq!(
        before["errno"], ENETUNREACH,
        "no route to the VIP before attaching: {before}"
    );

    let config = DatapathConfig {
        bpffs: pins.path().to_owned(),
        ..DatapathConfig::default()
    };
    let attached = attach(&node, &config, &cgroup, &node_if);
    assert_eq!(attached, (Attachment::Attached, Attachment::Attached));
    // The loader is gone now: from here on the programs run from their pinned links alone.

    let mut table = LbTable::open(PinnedLbMaps::open(pins.path()).unwrap()).unwrap();
    let vip = VIP.parse().unwrap();
    table
        .upsert(&Service::new(vip, vec![Backend::active(backend)]))
        .unwrap();

    let inside = probe(&node, Some(&cgroup), &["tcp", VIP]);
    assert_eq!(inside["ok"], true, "connect from the cgroup: {inside}");
    assert_eq!(Lab::backend_of(&inside), "backend-a");
    let outside = probe(&node, None, &["tcp", VIP]);
    assert_eq!(
        outside["errno"], ENETUNREACH,
        "outside the cgroup nothing changes: {outside}"
    );
    assert!(read_stats(pins.path()).unwrap().sock4_translated >= 1);

    table.upsert(&Service::new(vip, vec![])).unwrap();
    let refused = probe(&node, Some(&cgroup), &["tcp", VIP]);
    assert_eq!(
        refused["errno"], ECONNREFUSED,
        "zero backends fails fast: {refused}"
    );
    assert!(read_stats(pins.path()).unwrap().sock4_no_backend >= 1);

    let stats_before = read_stats(pins.path()).unwrap();
    let sent = probe(&peer, None, &["udp-send", "198.18.0.1:9", "5"]);
    assert_eq!(sent["sent"], 5, "{sent}");
    let stats_after = read_stats(pins.path()).unwrap();
    assert!(
        stats_after.tc_ipv4 - stats_before.tc_ipv4 >= 5,
        "the tc program saw the datagrams: {stats_before:?} -> {stats_after:?}"
    );

    // A restarted loader finds the pinned links and leaves them running.
    let adopted = attach(&node, &config, &cgroup, &node_if);
    assert_eq!(adopted, (Attachment::Adopted, Attachment::Adopted));
    table
        .upsert(&Service::new(vip, vec![Backend::active(backend)]))
        .unwrap();
    let again = probe(&node, Some(&cgroup), &["tcp", VIP]);
    assert_eq!(Lab::backend_of(&again), "backend-a");

    drop(table);
    let removed = detach_all(pins.path()).unwrap();
    assert!(
        removed.len() >= 5,
        "links and maps were pinned: {removed:?}"
    );
    assert!(
        !pins.path().exists(),
        "every pin and the directory are gone"
    );
    let detached = probe(&node, Some(&cgroup), &["tcp", VIP]);
    assert_eq!(
        detached["errno"], ENETUNREACH,
        "detached programs no longer act: {detached}"
    );
}

#[test]
#[ignore = "needs root: bpf()"]
fn a_full_service_map_is_refused_with_the_option_that_sizes_it() {
    require_root();
    let pins = BpffsDir::new("pins");
    // One record and its slots in two banks fit; a second service does not.
    let config = DatapathConfig {
        bpffs: pins.path().to_owned(),
        services_max: 4,
        ..DatapathConfig::default()
    };
    drop(Datapath::load(config).expect("loading the eBPF objects"));
    let mut table = LbTable::open(PinnedLbMaps::open(pins.path()).unwrap()).unwrap();
    let backend = Backend::active("10.244.0.2:8080".parse().unwrap());
    table
        .upsert(&Service::new(
            "10.96.0.10:80".parse().unwrap(),
            vec![backend],
        ))
        .unwrap();
    let err = table
        .upsert(&Service::new(
            "10.96.0.11:80".parse().unwrap(),
            ["10.244.0.3:8080", "10.244.0.4:8080", "10.244.0.5:8080"]
                .iter()
                .map(|b| Backend::active(b.parse().unwrap()))
                .collect(),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is full") && err.contains("--services-max"),
        "{err}"
    );
    // The service that fitted is intact.
    assert_eq!(table.list().len(), 1);
}
