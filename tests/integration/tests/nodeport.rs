//! The per-packet (north-south) load balancer: an external client reaches a NodePort through
//! the node's interface; SNAT by default, the client's own address with traffic policy Local;
//! conntrack keeps flows on their backend; Maglev services work end to end.

mod common;

use std::{collections::BTreeMap, net::SocketAddrV4};

use common::{EXT_CLIENT_IP, Lab, NODE_IP};
use skiff_datapath::{Algorithm, Backend, Frontend, Protocol, Service, ServiceKind, read_stats};
use skiff_test_support::require_root;

const NODE_PORT: u16 = 30080;

fn nodeport(lab: &Lab, protocol: Protocol, local: bool) -> Service {
    let mut s = Service::new(
        Frontend::new(NODE_IP, NODE_PORT, protocol),
        lab.backends
            .iter()
            .map(|b| Backend {
                local,
                ..Backend::active(b.endpoint())
            })
            .collect(),
    );
    s.kind = ServiceKind::NodePort;
    s.local_only = local;
    s
}

fn target() -> String {
    SocketAddrV4::new(NODE_IP, NODE_PORT).to_string()
}

#[test]
#[ignore = "needs root: netns, bpf(), tc"]
fn nodeport_from_outside_is_snated_to_the_node() {
    require_root();
    let lab = Lab::new(2);
    lab.attach();
    lab.table()
        .upsert(&nodeport(&lab, Protocol::Tcp, false))
        .unwrap();

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let reply = lab.probe_ext(&["tcp", &target()]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(
            reply["peer"],
            target(),
            "replies come back from the NodePort: {reply}"
        );
        let seen = Lab::seen_peer(&reply);
        assert!(
            seen.starts_with(&format!("{NODE_IP}:")),
            "the backend sees the node's address, not the client's: {seen}"
        );
        *counts.entry(Lab::backend_of(&reply)).or_default() += 1;
    }
    assert_eq!(counts.len(), 2, "both backends serve: {counts:?}");

    let udp = lab.probe_ext(&["udp", &target()]);
    assert_eq!(udp["ok"], false, "no UDP frontend on this port: {udp}");
    lab.table()
        .upsert(&nodeport(&lab, Protocol::Udp, false))
        .unwrap();
    let udp = lab.probe_ext(&["udp", &target()]);
    assert_eq!(udp["ok"], true, "{udp}");
    assert_eq!(udp["from"], target());

    let stats = read_stats(lab.pins.path()).unwrap();
    assert!(
        stats.tc_translated >= 40 && stats.tc_revnat >= 40,
        "{stats:?}"
    );
}

#[test]
#[ignore = "needs root: netns, bpf(), tc"]
fn traffic_policy_local_preserves_the_client_address() {
    require_root();
    let lab = Lab::new(2);
    lab.attach();
    lab.table()
        .upsert(&nodeport(&lab, Protocol::Tcp, true))
        .unwrap();
    for _ in 0..10 {
        let reply = lab.probe_ext(&["tcp", &target()]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["peer"], target());
        let seen = Lab::seen_peer(&reply);
        assert!(
            seen.starts_with(&format!("{EXT_CLIENT_IP}:")),
            "the backend sees the real client: {seen}"
        );
    }
}

#[test]
#[ignore = "needs root: netns, bpf(), tc"]
fn maglev_nodeport_keeps_flows_and_spreads_clients() {
    require_root();
    let lab = Lab::new(3);
    lab.attach();
    let mut s = nodeport(&lab, Protocol::Tcp, false);
    s.algorithm = Algorithm::Maglev;
    lab.table().upsert(&s).unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..60 {
        let reply = lab.probe_ext(&["tcp", &target()]);
        assert_eq!(reply["ok"], true, "{reply}");
        *counts.entry(Lab::backend_of(&reply)).or_default() += 1;
    }
    // Every new connection has a new source port, so a new Maglev slot.
    assert!(counts.len() >= 2, "{counts:?}");
    assert!(lab.table().get(&s.frontend).unwrap().algorithm == Algorithm::Maglev);
}

#[test]
#[ignore = "needs root: netns, bpf(), tc"]
fn conntrack_keeps_a_flow_on_its_backend_while_the_set_changes() {
    require_root();
    let lab = Lab::new(2);
    lab.attach();
    let mut s = nodeport(&lab, Protocol::Tcp, false);
    lab.table().upsert(&s).unwrap();

    let mut cmd = lab.ext.command(common::netprobe());
    cmd.args(["session", &target(), "40", "50"])
        .stdout(std::process::Stdio::piped());
    let mut session = skiff_test_support::ChildGuard::spawn(cmd, "netprobe session");
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(session.child().stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    let pinned = Lab::backend_of(&serde_json::from_str(&first).unwrap());
    let index: usize = pinned.trim_start_matches("be").parse().unwrap();

    // The flow's backend starts terminating: new flows avoid it, the tracked one stays.
    s.backends[index].state = skiff_datapath::BackendState::Terminating;
    lab.table().upsert(&s).unwrap();
    for _ in 0..20 {
        let reply = lab.probe_ext(&["tcp", &target()]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_ne!(
            Lab::backend_of(&reply),
            pinned,
            "a terminating backend got a new flow"
        );
    }
    session.wait_timeout(std::time::Duration::from_secs(10));
    let mut rest = String::new();
    std::io::Read::read_to_string(session.child().stdout.as_mut().unwrap(), &mut rest).unwrap();
    let done: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(done["ok"], true, "the tracked flow survived: {done}");
    assert_eq!(done["echoed"], 40);
}
