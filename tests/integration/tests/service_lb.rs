//! The socket-level (east-west) load balancer against real servers in test namespaces:
//! spread, service address as the peer, UDP, backend churn, zero backends, session affinity.

mod common;

use std::{collections::BTreeMap, io::BufRead as _, time::Duration};

use common::{ECONNREFUSED, Lab};
use skiff_datapath::{Backend, BackendState, Frontend, Protocol, Service, map_usage};
use skiff_ebpf_common::MAP_SOCK_REVNAT4;
use skiff_test_support::require_root;

const VIP: &str = "10.96.0.10:80";

fn service(lab: &Lab, protocol: Protocol, backends: &[usize]) -> Service {
    let frontend = Frontend::new("10.96.0.10".parse().unwrap(), 80, protocol);
    Service::new(
        frontend,
        backends
            .iter()
            .map(|&i| Backend::active(lab.backends[i].endpoint()))
            .collect(),
    )
}

/// Which backend answered each of `n` connections.
fn spread(lab: &Lab, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = lab.probe(&["tcp", VIP]);
        assert_eq!(reply["ok"], true, "{reply}");
        *counts.entry(Lab::backend_of(&reply)).or_default() += 1;
    }
    counts
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf()"]
fn clusterip_spreads_over_backends_and_shows_the_service_as_peer() {
    require_root();
    let lab = Lab::new(3);
    lab.attach();
    lab.table()
        .upsert(&service(&lab, Protocol::Tcp, &[0, 1, 2]))
        .unwrap();

    let reply = lab.probe(&["tcp", VIP]);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        reply["peer"], VIP,
        "getpeername() shows the service address: {reply}"
    );

    // 300 connections over 3 backends: each count is Binomial(300, 1/3), mean 100, sd 8.2.
    // [55, 145] is more than 5 sd either way: a false failure is rarer than 1 in 10^6.
    let counts = spread(&lab, 300);
    assert_eq!(counts.len(), 3, "every backend answered: {counts:?}");
    for (backend, n) in &counts {
        assert!(
            (55..=145).contains(n),
            "{backend} got {n} of 300: {counts:?}"
        );
    }

    // Every one of those 301 sockets is closed: their reverse entries went with them
    // (sock_release), so the LRU map holds live sockets only.
    let revnat = map_usage(lab.pins.path())
        .unwrap()
        .into_iter()
        .find(|m| m.name == MAP_SOCK_REVNAT4)
        .unwrap();
    assert_eq!(revnat.entries, 0, "{revnat:?}");
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf()"]
fn udp_request_gets_its_reply_from_the_service_address() {
    require_root();
    let lab = Lab::new(2);
    lab.attach();
    lab.table()
        .upsert(&service(&lab, Protocol::Udp, &[0, 1]))
        .unwrap();
    for _ in 0..10 {
        let reply = lab.probe(&["udp", VIP]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(
            reply["from"], VIP,
            "recvfrom() shows the service address: {reply}"
        );
        assert!(Lab::backend_of(&reply).starts_with("be"));
    }
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf()"]
fn backend_churn_affects_new_connections_only_and_zero_backends_refuse_fast() {
    require_root();
    let mut lab = Lab::new(3);
    lab.attach();
    let mut table = lab.table();
    table
        .upsert(&service(&lab, Protocol::Tcp, &[0, 1, 2]))
        .unwrap();

    // An established connection, echoing every 50 ms for 3 s.
    let mut session = lab.spawn_probe(&["session", VIP, "60", "50"]);
    let mut first = String::new();
    std::io::BufReader::new(session.child().stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let connected: serde_json::Value = serde_json::from_str(&first).unwrap();
    let pinned = Lab::backend_of(&connected);
    let pinned_index: usize = pinned.trim_start_matches("be").parse().unwrap();

    // Take its backend out: new connections never reach it, at once.
    let rest: Vec<usize> = (0..3).filter(|&i| i != pinned_index).collect();
    table.upsert(&service(&lab, Protocol::Tcp, &rest)).unwrap();
    let counts = spread(&lab, 60);
    assert!(
        !counts.contains_key(&pinned),
        "{pinned} was removed but answered: {counts:?}"
    );

    // ... while the established connection keeps working to the end.
    let status = session.wait_timeout(Duration::from_secs(10));
    assert!(status.success());
    let mut rest_out = String::new();
    std::io::Read::read_to_string(session.child().stdout.as_mut().unwrap(), &mut rest_out).unwrap();
    let done: serde_json::Value = serde_json::from_str(rest_out.trim()).unwrap();
    assert_eq!(
        done["ok"], true,
        "the established connection survived: {done}"
    );
    assert_eq!(done["echoed"], 60);

    // A new backend starts receiving connections.
    let added = lab.add_backend().name.clone();
    lab.attach();
    let mut with_new = rest.clone();
    with_new.push(3);
    let mut s = service(&lab, Protocol::Tcp, &with_new);
    // A terminating backend keeps its place in the map but gets no new connections.
    s.backends.push(Backend {
        state: BackendState::Terminating,
        ..Backend::active(lab.backends[pinned_index].endpoint())
    });
    table.upsert(&s).unwrap();
    let counts = spread(&lab, 90);
    assert!(
        counts.get(&added).copied().unwrap_or(0) > 5,
        "{added} gets traffic: {counts:?}"
    );
    assert!(
        !counts.contains_key(&pinned),
        "terminating {pinned} got new connections: {counts:?}"
    );

    // Zero backends: connect() fails at once with ECONNREFUSED, no timeout.
    table.upsert(&service(&lab, Protocol::Tcp, &[])).unwrap();
    let started = std::time::Instant::now();
    let refused = lab.probe(&["tcp", VIP]);
    assert_eq!(refused["errno"], ECONNREFUSED, "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused fast, not timed out"
    );
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf()"]
fn session_affinity_pins_a_client_to_one_backend() {
    require_root();
    let lab = Lab::new(3);
    lab.attach();
    let mut s = service(&lab, Protocol::Tcp, &[0, 1, 2]);
    s.affinity_timeout = 60;
    lab.table().upsert(&s).unwrap();
    let counts = spread(&lab, 40);
    assert_eq!(
        counts.len(),
        1,
        "all connections of one client go to one backend: {counts:?}"
    );

    // Without affinity the same client is spread again.
    s.affinity_timeout = 0;
    lab.table().upsert(&s).unwrap();
    let counts = spread(&lab, 60);
    assert!(counts.len() > 1, "{counts:?}");
}
