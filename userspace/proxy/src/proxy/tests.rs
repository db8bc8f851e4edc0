use std::net::Ipv4Addr;

use k8s_openapi::api::{
    core::v1::{ClientIPConfig, SessionAffinityConfig},
    discovery::v1::{Endpoint, EndpointPort},
};
use skiff_datapath::{Algorithm, BackendState, FakeLbMaps, LbTable, Scope, ServiceKind};

use super::*;
use crate::{ALGORITHM_ANNOTATION, DEFAULT_AFFINITY_TIMEOUT, testutil::*};

fn states_of<M: LbMaps>(proxy: &Proxy<M>, frontend: &str) -> Vec<(String, BackendState)> {
    proxy
        .table()
        .get(&fe(frontend))
        .unwrap_or_else(|| panic!("no frontend {frontend}"))
        .backends
        .iter()
        .map(|b| (b.address.to_string(), b.state))
        .collect()
}

fn entry<M: LbMaps>(proxy: &Proxy<M>, frontend: Frontend) -> LbService {
    proxy
        .table()
        .get(&frontend)
        .unwrap_or_else(|| panic!("no frontend {frontend}"))
}

fn internal(frontend: &str) -> Frontend {
    Frontend {
        scope: Scope::Internal,
        ..fe(frontend)
    }
}

fn report(recomputed: usize, upserted: usize, deleted: usize, unchanged: usize) -> SyncReport {
    SyncReport {
        recomputed,
        upserted,
        deleted,
        unchanged,
        failed: 0,
    }
}

#[test]
fn cluster_ip_with_three_endpoints() {
    let mut p = proxy();
    p.apply_service(&web("web", "10.96.0.10")).unwrap();
    let endpoints = vec![ep("10.244.0.3"), ep("10.244.0.1"), ep("10.244.0.2")];
    p.apply_endpoint_slice(&web_slice("web-1", "web", endpoints))
        .unwrap();
    assert_eq!(p.sync(), report(1, 1, 0, 0));

    assert_eq!(frontends(&p), ["10.96.0.10:80/TCP"]);
    let svc = entry(&p, fe("10.96.0.10:80/tcp"));
    assert_eq!(svc.kind, ServiceKind::ClusterIp);
    assert_eq!(svc.algorithm, Algorithm::Random);
    assert_eq!(svc.affinity_timeout, 0);
    assert!(!svc.local_only && !svc.two_scopes);
    assert_eq!(
        backends_of(&p, "10.96.0.10:80/tcp"),
        ["10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"]
    );
    let status = p.status(&key("web")).unwrap();
    assert!(status.is_ok(), "{status:?}");
    assert_eq!(status.frontends, [fe("10.96.0.10:80/tcp")]);
}

#[test]
fn ports_match_by_name_and_protocol_and_take_the_slice_port() {
    let mut p = proxy();
    let ports = vec![port("http", 80, "TCP"), port("metrics", 9090, "TCP")];
    p.apply_service(&service("app", "10.96.0.11", ports))
        .unwrap();
    let slice_ports = vec![
        slice_port("metrics", 9091, "TCP"),
        slice_port("http", 8080, "TCP"),
        slice_port("admin", 7000, "TCP"),
    ];
    let endpoints = vec![ep("10.244.1.1"), ep("10.244.1.2")];
    p.apply_endpoint_slice(&slice("app-1", "app", slice_ports, endpoints))
        .unwrap();
    // A slice whose only port is named differently gives nothing to either service port.
    let other = vec![slice_port("admin", 7000, "TCP")];
    p.apply_endpoint_slice(&slice("app-2", "app", other, vec![ep("10.244.1.9")]))
        .unwrap();
    // Unnamed matches unnamed only.
    p.apply_service(&web("plain", "10.96.0.12")).unwrap();
    p.apply_endpoint_slice(&web_slice("plain-1", "plain", vec![ep("10.244.1.3")]))
        .unwrap();
    let named = vec![slice_port("http", 8081, "TCP")];
    p.apply_endpoint_slice(&slice("plain-2", "plain", named, vec![ep("10.244.1.4")]))
        .unwrap();
    assert_eq!(p.sync(), report(2, 3, 0, 0));

    assert_eq!(
        backends_of(&p, "10.96.0.11:80/tcp"),
        ["10.244.1.1:8080", "10.244.1.2:8080"]
    );
    assert_eq!(
        backends_of(&p, "10.96.0.11:9090/tcp"),
        ["10.244.1.1:9091", "10.244.1.2:9091"]
    );
    assert_eq!(backends_of(&p, "10.96.0.12:80/tcp"), ["10.244.1.3:8080"]);
}

#[test]
fn tcp_and_udp_on_the_same_port_number_are_two_frontends() {
    let mut p = proxy();
    let ports = vec![port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP")];
    p.apply_service(&service("kube-dns", "10.96.0.10", ports))
        .unwrap();
    let slice_ports = vec![
        slice_port("dns", 5353, "UDP"),
        slice_port("dns-tcp", 5354, "TCP"),
    ];
    p.apply_endpoint_slice(&slice(
        "dns-1",
        "kube-dns",
        slice_ports,
        vec![ep("10.244.0.5")],
    ))
    .unwrap();
    // Right name, wrong protocol: matches neither.
    let wrong = vec![slice_port("dns", 6000, "TCP")];
    p.apply_endpoint_slice(&slice("dns-2", "kube-dns", wrong, vec![ep("10.244.0.6")]))
        .unwrap();
    assert_eq!(p.sync(), report(1, 2, 0, 0));

    assert_eq!(frontends(&p), ["10.96.0.10:53/TCP", "10.96.0.10:53/UDP"]);
    assert_eq!(backends_of(&p, "10.96.0.10:53/udp"), ["10.244.0.5:5353"]);
    assert_eq!(backends_of(&p, "10.96.0.10:53/tcp"), ["10.244.0.5:5354"]);
}

#[test]
fn endpoints_in_two_slices_are_deduplicated_and_ready_wins() {
    let mut p = proxy();
    p.apply_service(&web("web", "10.96.0.10")).unwrap();
    let terminating = cond(ep("10.244.0.2"), Some(false), Some(true), Some(true));
    p.apply_endpoint_slice(&web_slice(
        "web-a",
        "web",
        vec![ep("10.244.0.1"), terminating],
    ))
    .unwrap();
    p.apply_endpoint_slice(&web_slice(
        "web-b",
        "web",
        vec![ep("10.244.0.2"), ep("10.244.0.3")],
    ))
    .unwrap();
    p.sync();

    let active = BackendState::Active;
    assert_eq!(
        states_of(&p, "10.96.0.10:80/tcp"),
        [
            ("10.244.0.1:8080".to_owned(), active),
            ("10.244.0.2:8080".to_owned(), active),
            ("10.244.0.3:8080".to_owned(), active),
        ]
    );
    assert_eq!(p.table().maps().backends.len(), 3);
}

#[test]
fn readiness_and_terminating_conditions() {
    let mut p = proxy();
    p.apply_service(&web("web", "10.96.0.10")).unwrap();
    let endpoints = vec![
        ep("10.244.0.1"),
        cond(ep("10.244.0.2"), Some(true), None, None),
        cond(ep("10.244.0.3"), Some(false), Some(true), Some(true)),
        // Terminating and no longer serving: gone.
        cond(ep("10.244.0.4"), Some(false), Some(false), Some(true)),
        // Not ready and not terminating (starting, or failing its probe): gone.
        cond(ep("10.244.0.5"), Some(false), None, None),
        // Serving unset means serving.
        cond(ep("10.244.0.6"), Some(false), None, Some(true)),
    ];
    p.apply_endpoint_slice(&web_slice("web-1", "web", endpoints))
        .unwrap();
    p.sync();

    let (active, terminating) = (BackendState::Active, BackendState::Terminating);
    assert_eq!(
        states_of(&p, "10.96.0.10:80/tcp"),
        [
            ("10.244.0.1:8080".to_owned(), active),
            ("10.244.0.2:8080".to_owned(), active),
            ("10.244.0.3:8080".to_owned(), terminating),
            ("10.244.0.6:8080".to_owned(), terminating),
        ]
    );
    // Terminating backends keep their flows but are not picked for new ones.
    let record = p.table().maps().services[&fe("10.96.0.10:80/tcp").key()];
    assert_eq!((record.count, record.qcount), (2, 2));
}

#[test]
fn node_ports_listen_on_every_node_address() {
    let mut p = proxy();
    let ports = vec![
        node_port(port("http", 80, "TCP"), 30080),
        port("https", 443, "TCP"),
    ];
    let mut svc = service("np", "10.96.0.20", ports);
    spec(&mut svc).type_ = Some("NodePort".into());
    p.apply_service(&svc).unwrap();
    let slice_ports = vec![
        slice_port("http", 8080, "TCP"),
        slice_port("https", 8443, "TCP"),
    ];
    p.apply_endpoint_slice(&slice("np-1", "np", slice_ports, vec![ep("10.244.0.1")]))
        .unwrap();
    p.sync();

    assert_eq!(
        frontends(&p),
        [
            "10.96.0.20:80/TCP",
            "10.96.0.20:443/TCP",
            "172.18.0.2:30080/TCP",
            "192.168.1.10:30080/TCP",
        ]
    );
    let np = entry(&p, fe("192.168.1.10:30080/tcp"));
    assert_eq!(np.kind, ServiceKind::NodePort);
    assert!(!np.local_only && !np.two_scopes);
    assert_eq!(backends_of(&p, "172.18.0.2:30080/tcp"), ["10.244.0.1:8080"]);

    // The node loses an address: only its node port goes.
    p.set_node(NodeIdentity::new(NODE, vec![Ipv4Addr::new(172, 18, 0, 2)]));
    assert_eq!(p.sync(), report(1, 0, 1, 0));
    assert!(!frontends(&p).contains(&"192.168.1.10:30080/TCP".to_owned()));

    // Back to ClusterIP: no node ports at all.
    spec(&mut svc).type_ = Some("ClusterIP".into());
    p.apply_service(&svc).unwrap();
    p.sync();
    assert_eq!(frontends(&p), ["10.96.0.20:80/TCP", "10.96.0.20:443/TCP"]);
}

#[test]
fn external_traffic_policy_local_makes_two_scopes() {
    let mut p = proxy();
    let mut svc = service(
        "etp",
        "10.96.0.21",
        vec![node_port(port("", 80, "TCP"), 30081)],
    );
    spec(&mut svc).type_ = Some("NodePort".into());
    spec(&mut svc).external_traffic_policy = Some("Local".into());
    spec(&mut svc).external_ips = Some(vec!["203.0.113.5".into()]);
    p.apply_service(&svc).unwrap();
    let endpoints = vec![on(ep("10.244.0.1"), NODE), on(ep("10.244.1.1"), "node-b")];
    p.apply_endpoint_slice(&web_slice("etp-1", "etp", endpoints))
        .unwrap();
    p.sync();

    for (frontend, kind) in [
        ("192.168.1.10:30081/tcp", ServiceKind::NodePort),
        ("172.18.0.2:30081/tcp", ServiceKind::NodePort),
        ("203.0.113.5:80/tcp", ServiceKind::ExternalIp),
    ] {
        let external = entry(&p, fe(frontend));
        assert_eq!(external.kind, kind);
        assert!(external.local_only && external.two_scopes, "{frontend}");
        assert_eq!(backends_of(&p, frontend), ["10.244.0.1:8080"]);
        assert!(external.backends[0].local);

        let inside = entry(&p, internal(frontend));
        assert_eq!(inside.kind, kind);
        assert!(!inside.local_only && !inside.two_scopes, "{frontend}");
        let all: Vec<String> = inside
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(all, ["10.244.0.1:8080", "10.244.1.1:8080"]);
    }
    // The ClusterIP is in-cluster only: one entry, every backend.
    let cluster = entry(&p, fe("10.96.0.21:80/tcp"));
    assert!(!cluster.local_only && !cluster.two_scopes);
    assert_eq!(cluster.backends.len(), 2);
    assert_eq!(p.table().list().len(), 7);

    // Cluster policy: a single External entry per frontend with every backend.
    spec(&mut svc).external_traffic_policy = Some("Cluster".into());
    p.apply_service(&svc).unwrap();
    assert_eq!(p.sync(), report(1, 3, 3, 0));
    let external = entry(&p, fe("203.0.113.5:80/tcp"));
    assert!(!external.local_only && !external.two_scopes);
    assert_eq!(external.backends.len(), 2);
    assert!(p.table().get(&internal("203.0.113.5:80/tcp")).is_none());
}

#[test]
fn internal_traffic_policy_local_limits_the_cluster_ip() {
    let mut p = proxy();
    let mut svc = service(
        "itp",
        "10.96.0.22",
        vec![node_port(port("", 80, "TCP"), 30082)],
    );
    spec(&mut svc).type_ = Some("NodePort".into());
    spec(&mut svc).internal_traffic_policy = Some("Local".into());
    p.apply_service(&svc).unwrap();
    let endpoints = vec![on(ep("10.244.0.1"), NODE), on(ep("10.244.1.1"), "node-b")];
    p.apply_endpoint_slice(&web_slice("itp-1", "itp", endpoints))
        .unwrap();
    p.sync();

    let cluster = entry(&p, fe("10.96.0.22:80/tcp"));
    assert!(cluster.local_only && !cluster.two_scopes);
    assert_eq!(backends_of(&p, "10.96.0.22:80/tcp"), ["10.244.0.1:8080"]);
    // Node ports are external traffic: internalTrafficPolicy does not apply.
    assert_eq!(entry(&p, fe("172.18.0.2:30082/tcp")).backends.len(), 2);

    // With externalTrafficPolicy=Local too, the Internal entry follows internalTrafficPolicy.
    spec(&mut svc).external_traffic_policy = Some("Local".into());
    p.apply_service(&svc).unwrap();
    p.sync();
    let inside = entry(&p, internal("172.18.0.2:30082/tcp"));
    assert!(inside.local_only && !inside.two_scopes);
    assert_eq!(inside.backends.len(), 1);
}

#[test]
fn external_ips_and_load_balancer_ingress() {
    let mut p = proxy();
    let mut svc = web("lb", "10.96.0.23");
    spec(&mut svc).type_ = Some("LoadBalancer".into());
    spec(&mut svc).external_ips = Some(vec!["203.0.113.5".into(), "2001:db8::5".into()]);
    ingress(&mut svc, Some("198.51.100.7"), Some("VIP"));
    ingress(&mut svc, None, None);
    ingress(&mut svc, Some("198.51.100.8"), Some("Proxy"));
    ingress(&mut svc, Some("2001:db8::7"), None);
    p.apply_service(&svc).unwrap();
    p.apply_endpoint_slice(&web_slice("lb-1", "lb", vec![ep("10.244.0.1")]))
        .unwrap();
    p.sync();

    // No nodePort set (allocateLoadBalancerNodePorts=false): no node ports.
    assert_eq!(
        frontends(&p),
        [
            "10.96.0.23:80/TCP",
            "198.51.100.7:80/TCP",
            "203.0.113.5:80/TCP"
        ]
    );
    assert_eq!(
        entry(&p, fe("203.0.113.5:80/tcp")).kind,
        ServiceKind::ExternalIp
    );
    let lb = entry(&p, fe("198.51.100.7:80/tcp"));
    assert_eq!(lb.kind, ServiceKind::LoadBalancer);
    assert_eq!(backends_of(&p, "198.51.100.7:80/tcp"), ["10.244.0.1:8080"]);
    // IPv6 addresses belong to the other family's proxy: skipped, not a problem.
    assert!(p.status(&key("lb")).unwrap().is_ok());
}

#[test]
fn headless_external_name_ipv6_and_unallocated_services_produce_nothing() {
    let mut p = proxy();
    p.apply_service(&web("headless", "None")).unwrap();
    let mut external_name = web("ext", "");
    spec(&mut external_name).type_ = Some("ExternalName".into());
    spec(&mut external_name).external_name = Some("db.example".into());
    spec(&mut external_name).cluster_ips = None;
    p.apply_service(&external_name).unwrap();
    p.apply_service(&web("v6", "fd00::10")).unwrap();
    p.apply_service(&web("pending", "")).unwrap();
    for name in ["headless", "ext", "v6", "pending"] {
        let slice = web_slice(&format!("{name}-1"), name, vec![ep("10.244.0.1")]);
        p.apply_endpoint_slice(&slice).unwrap();
    }
    let mut v6_slice = web_slice("v6-2", "v6", vec![ep("fd00::1:1")]);
    v6_slice.address_type = "IPv6".into();
    p.apply_endpoint_slice(&v6_slice).unwrap();
    assert_eq!(p.sync(), report(4, 0, 0, 0));
    assert!(p.table().list().is_empty());
    assert_eq!(p.table().maps().writes, 0);
    for name in ["headless", "ext", "v6", "pending"] {
        let status = p.status(&key(name)).unwrap();
        assert!(status.is_ok() && status.frontends.is_empty(), "{name}");
    }
}

#[test]
fn session_affinity_default_explicit_and_invalid() {
    let mut p = proxy();
    let cases = [
        ("none", None, None),
        ("default", Some("ClientIP"), None),
        ("explicit", Some("ClientIP"), Some(600)),
        ("invalid", Some("ClientIP"), Some(0)),
    ];
    for (i, (name, affinity, timeout)) in (10u8..).zip(cases) {
        let mut svc = web(name, &format!("10.96.1.{i}"));
        spec(&mut svc).session_affinity = affinity.map(str::to_owned);
        spec(&mut svc).session_affinity_config = timeout.map(|t| SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(t),
            }),
        });
        p.apply_service(&svc).unwrap();
    }
    p.sync();
    let timeout = |i: u8| entry(&p, fe(&format!("10.96.1.{i}:80/tcp"))).affinity_timeout;
    assert_eq!(timeout(10), 0);
    assert_eq!(timeout(11), DEFAULT_AFFINITY_TIMEOUT);
    assert_eq!(DEFAULT_AFFINITY_TIMEOUT, 10_800);
    assert_eq!(timeout(12), 600);
    assert_eq!(timeout(13), DEFAULT_AFFINITY_TIMEOUT);
    let problems = p.status(&key("invalid")).unwrap().problems;
    assert!(
        matches!(
            problems.as_slice(),
            [InputError::BadAffinityTimeout { value: 0, .. }]
        ),
        "{problems:?}"
    );
}

#[test]
fn maglev_annotation_and_unknown_algorithms() {
    let mut p = proxy();
    let mut maglev = web("maglev", "10.96.0.30");
    annotate(&mut maglev, ALGORITHM_ANNOTATION, "maglev");
    let mut unknown = web("unknown", "10.96.0.31");
    annotate(&mut unknown, ALGORITHM_ANNOTATION, "ring-hash");
    p.apply_service(&maglev).unwrap();
    p.apply_service(&unknown).unwrap();
    p.apply_service(&web("plain", "10.96.0.32")).unwrap();
    p.sync();

    assert_eq!(
        entry(&p, fe("10.96.0.30:80/tcp")).algorithm,
        Algorithm::Maglev
    );
    assert_eq!(
        entry(&p, fe("10.96.0.31:80/tcp")).algorithm,
        Algorithm::Random
    );
    assert_eq!(
        entry(&p, fe("10.96.0.32:80/tcp")).algorithm,
        Algorithm::Random
    );
    let status = p.status(&key("unknown")).unwrap();
    assert_eq!(status.frontends, [fe("10.96.0.31:80/tcp")]);
    match status.problems.as_slice() {
        [problem @ InputError::UnknownAlgorithm { value, .. }] => {
            assert_eq!(value, "ring-hash");
            assert!(problem.to_string().contains("using random"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert!(p.status(&key("maglev")).unwrap().is_ok());
}

#[test]
fn deleting_the_slice_leaves_a_frontend_without_backends() {
    let mut p = proxy();
    p.apply_service(&web("web", "10.96.0.10")).unwrap();
    let slice = web_slice("web-1", "web", vec![ep("10.244.0.1"), ep("10.244.0.2")]);
    p.apply_endpoint_slice(&slice).unwrap();
    p.sync();
    p.delete_endpoint_slice(&slice).unwrap();
    assert_eq!(p.sync(), report(1, 1, 0, 0));

    // Still a frontend, so connections are refused at once instead of leaving the node.
    assert_eq!(backends_of(&p, "10.96.0.10:80/tcp"), Vec::<String>::new());
    let record = p.table().maps().services[&fe("10.96.0.10:80/tcp").key()];
    assert_eq!((record.count, record.qcount), (0, 0));
    assert!(p.table().maps().backends.is_empty());
}

#[test]
fn deleting_a_service_removes_all_its_frontends() {
    let mut p = proxy();
    let mut svc = service(
        "np",
        "10.96.0.20",
        vec![node_port(port("", 80, "TCP"), 30080)],
    );
    spec(&mut svc).type_ = Some("LoadBalancer".into());
    spec(&mut svc).external_traffic_policy = Some("Local".into());
    ingress(&mut svc, Some("198.51.100.7"), None);
    p.apply_service(&svc).unwrap();
    p.apply_service(&web("other", "10.96.0.21")).unwrap();
    let endpoints = vec![on(ep("10.244.0.1"), NODE), ep("10.244.0.2")];
    p.apply_endpoint_slice(&web_slice("np-1", "np", endpoints))
        .unwrap();
    p.sync();
    // ClusterIP + (2 node ports + 1 ingress) x 2 scopes, and the other service.
    assert_eq!(p.table().list().len(), 8);

    p.delete_service(&svc).unwrap();
    assert_eq!(p.sync(), report(1, 0, 7, 0));
    assert_eq!(frontends(&p), ["10.96.0.21:80/TCP"]);
    assert!(p.table().maps().backends.is_empty());
    assert!(p.status(&key("np")).is_none());
}

#[test]
fn a_sync_without_changes_writes_nothing() {
    let mut p = proxy();
    let mut svc = web("web", "10.96.0.10");
    p.apply_service(&svc).unwrap();
    let mut slice = web_slice("web-1", "web", vec![ep("10.244.0.1")]);
    p.apply_endpoint_slice(&slice).unwrap();
    assert!(p.needs_sync());
    p.sync();
    assert!(!p.needs_sync());
    let writes = p.table().maps().writes;

    assert_eq!(p.sync(), SyncReport::default());
    // A relist or a status-only update delivers the same content again.
    svc.metadata.resource_version = Some("42".into());
    slice.metadata.resource_version = Some("43".into());
    p.apply_service(&svc).unwrap();
    p.apply_endpoint_slice(&slice).unwrap();
    assert!(!p.needs_sync());
    assert_eq!(p.sync(), SyncReport::default());
    assert_eq!(p.table().maps().writes, writes);
}

#[test]
fn the_first_sync_removes_stale_frontends_and_keeps_identical_ones() {
    // What a previous agent left pinned: "keep" (still wanted) and "gone" (deleted meanwhile).
    let mut before = proxy();
    before.apply_service(&web("keep", "10.96.0.10")).unwrap();
    // A terminating backend with the lower address: the entry is compared in slot order.
    let terminating = cond(ep("10.244.0.1"), Some(false), Some(true), Some(true));
    let keep_slice = web_slice("keep-1", "keep", vec![terminating, ep("10.244.0.2")]);
    before.apply_endpoint_slice(&keep_slice).unwrap();
    before.apply_service(&web("gone", "10.96.0.11")).unwrap();
    before
        .apply_endpoint_slice(&web_slice("gone-1", "gone", vec![ep("10.244.0.9")]))
        .unwrap();
    before.sync();
    let pinned = before.table().maps().clone();
    let keep_key = fe("10.96.0.10:80/tcp").key();

    let mut p = Proxy::new(LbTable::open(pinned.clone()).unwrap(), node());
    p.apply_service(&web("keep", "10.96.0.10")).unwrap();
    p.apply_endpoint_slice(&keep_slice).unwrap();
    assert_eq!(p.sync(), report(1, 0, 1, 1));

    assert_eq!(frontends(&p), ["10.96.0.10:80/TCP"]);
    let maps = p.table().maps();
    // Only the stale service's record, slot and backend were written (deleted).
    assert_eq!(maps.writes - pinned.writes, 3);
    assert_eq!(maps.services[&keep_key], pinned.services[&keep_key]);
    assert_eq!(maps.backends.len(), 2);
}

#[test]
fn a_failed_write_is_reported_and_retried() {
    let mut p = proxy();
    p.apply_service(&web("a", "10.96.0.1")).unwrap();
    p.apply_service(&web("b", "10.96.0.2")).unwrap();
    p.apply_endpoint_slice(&web_slice("a-1", "a", vec![ep("10.244.0.1")]))
        .unwrap();
    p.apply_endpoint_slice(&web_slice("b-1", "b", vec![ep("10.244.0.2")]))
        .unwrap();
    // Frontends go in address order: a's backend, slot and record fit, b's first write fails.
    fail_after(&mut p, Some(3));
    let first = p.sync();
    assert_eq!((first.upserted, first.failed), (1, 1));
    assert_eq!(frontends(&p), ["10.96.0.1:80/TCP"]);
    assert!(p.status(&key("a")).unwrap().is_ok());
    let status = p.status(&key("b")).unwrap();
    match status.failures.as_slice() {
        [failure] => {
            assert_eq!(failure.frontend, fe("10.96.0.2:80/tcp"));
            assert_eq!(failure.service, Some(key("b")));
            let text = failure.error.to_string();
            assert!(
                text.contains("10.96.0.2:80/TCP") && text.contains("injected fault"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(p.needs_sync());

    fail_after(&mut p, None);
    // Only the failed frontend is retried.
    assert_eq!(p.sync(), report(0, 1, 0, 0));
    assert_eq!(frontends(&p), ["10.96.0.1:80/TCP", "10.96.0.2:80/TCP"]);
    assert!(p.status(&key("b")).unwrap().is_ok());
    assert_eq!(p.failures().count(), 0);

    // A failed removal stays visible under the deleted Service until it succeeds.
    p.delete_service(&web("b", "10.96.0.2")).unwrap();
    fail_after(&mut p, Some(0));
    assert_eq!(p.sync().failed, 1);
    let status = p.status(&key("b")).unwrap();
    assert!(
        matches!(
            &*status.failures[0].error,
            ReconcileError::Delete { frontend, .. } if *frontend == fe("10.96.0.2:80/tcp")
        ),
        "{status:?}"
    );
    fail_after(&mut p, None);
    assert_eq!(p.sync(), report(0, 0, 1, 0));
    assert!(p.status(&key("b")).is_none());
    assert_eq!(frontends(&p), ["10.96.0.1:80/TCP"]);
}

#[test]
fn too_many_backends_fails_that_service_only() {
    let mut p = proxy();
    p.apply_service(&web("big", "10.96.0.1")).unwrap();
    p.apply_service(&web("small", "10.96.0.2")).unwrap();
    // More than one service's slots can hold (32767).
    let many = (0..40_000u32)
        .map(|i| ep(&Ipv4Addr::from(0x0af4_0000 + i).to_string()))
        .collect();
    p.apply_endpoint_slice(&web_slice("big-1", "big", many))
        .unwrap();
    p.apply_endpoint_slice(&web_slice("small-1", "small", vec![ep("10.243.0.1")]))
        .unwrap();
    let first = p.sync();
    assert_eq!((first.upserted, first.failed), (1, 1));
    assert_eq!(frontends(&p), ["10.96.0.2:80/TCP"]);
    let status = p.status(&key("big")).unwrap();
    assert!(
        matches!(
            &*status.failures[0].error,
            ReconcileError::Upsert {
                source: TableError::TooManyBackends { count: 40_000, .. },
                ..
            }
        ),
        "{status:?}"
    );

    // Retried each sync (still too many), without touching the healthy service.
    assert_eq!(p.sync().failed, 1);
    let few = vec![ep("10.244.0.1"), ep("10.244.0.2")];
    p.apply_endpoint_slice(&web_slice("big-1", "big", few))
        .unwrap();
    assert_eq!(p.sync(), report(1, 1, 0, 0));
    assert!(p.status(&key("big")).unwrap().is_ok());
}

#[test]
fn one_change_among_1000_services_touches_only_that_service() {
    let mut p = proxy();
    let address = |base: u32, i: u32| Ipv4Addr::from(base + i).to_string();
    let slice_of = |i: u32, count: u32| {
        let endpoints = (0..count)
            .map(|n| ep(&address(0x0af4_0000, i * 4 + n)))
            .collect();
        web_slice(&format!("svc-{i}-1"), &format!("svc-{i}"), endpoints)
    };
    for i in 0..1000 {
        p.apply_service(&web(&format!("svc-{i}"), &address(0x0a60_0100, i)))
            .unwrap();
        p.apply_endpoint_slice(&slice_of(i, 3)).unwrap();
    }
    assert_eq!(p.sync(), report(1000, 1000, 0, 0));
    let before = p.table().maps().clone();

    p.apply_endpoint_slice(&slice_of(500, 4)).unwrap();
    assert_eq!(p.sync(), report(1, 1, 0, 0));

    let after = p.table().maps();
    let changed_address = fe(&format!("{}:80", address(0x0a60_0100, 500)))
        .key()
        .address;
    let others = |maps: &FakeLbMaps| -> Vec<_> {
        maps.services
            .iter()
            .filter(|(key, _)| key.address != changed_address)
            .map(|(key, value)| (*key, *value))
            .collect()
    };
    assert_eq!(others(after), others(&before));
    assert_eq!(others(after).len(), 999 * 4);
    // The new backend, its 4 slots in the idle bank, the record, the 3 old slots removed.
    assert_eq!(after.writes - before.writes, 9);

    // A change to the Service object itself is just as local.
    let mut svc = web("svc-7", &address(0x0a60_0100, 7));
    spec(&mut svc).session_affinity = Some("ClientIP".into());
    p.apply_service(&svc).unwrap();
    assert_eq!(p.sync(), report(1, 1, 0, 0));
}

#[test]
fn malformed_objects_are_skipped_and_reported() {
    let mut p = proxy();
    let mut nameless = web("x", "10.96.0.1");
    nameless.metadata.name = None;
    assert!(matches!(
        p.apply_service(&nameless),
        Err(InputError::MissingName {
            kind: "Service",
            ..
        })
    ));
    let mut nameless_slice = web_slice("x", "web", vec![ep("10.244.0.1")]);
    nameless_slice.metadata.name = Some(String::new());
    assert!(matches!(
        p.apply_endpoint_slice(&nameless_slice),
        Err(InputError::MissingName {
            kind: "EndpointSlice",
            ..
        })
    ));
    let mut no_spec = web("nospec", "10.96.0.1");
    no_spec.spec = None;
    p.apply_service(&no_spec).unwrap();
    let mut unlabelled = web_slice("stray", "web", vec![ep("10.244.0.1")]);
    unlabelled.metadata.labels = None;
    p.apply_endpoint_slice(&unlabelled).unwrap();

    let ports = vec![
        node_port(port("http", 80, "TCP"), 99_999),
        port("neg", -1, "TCP"),
        port("icmp", 7, "ICMP"),
    ];
    let mut svc = service("web", "10.96.0.10", ports);
    spec(&mut svc).type_ = Some("NodePort".into());
    // The clusterIP doubles as an external IP: one frontend, reported.
    spec(&mut svc).external_ips = Some(vec!["bogus".into(), "10.96.0.10".into()]);
    p.apply_service(&svc).unwrap();
    let slice_ports = vec![
        slice_port("http", 8080, "TCP"),
        EndpointPort {
            port: None,
            ..slice_port("none", 1, "TCP")
        },
        slice_port("zero", 0, "TCP"),
    ];
    let endpoints = vec![
        ep("10.244.0.1"),
        ep("fe80::1"),
        ep("999.1.1.1"),
        Endpoint::default(),
    ];
    p.apply_endpoint_slice(&slice("web-1", "web", slice_ports, endpoints))
        .unwrap();
    p.sync();

    // What was valid works.
    assert_eq!(frontends(&p), ["10.96.0.10:80/TCP"]);
    assert_eq!(backends_of(&p, "10.96.0.10:80/tcp"), ["10.244.0.1:8080"]);
    let problems: Vec<String> = p
        .status(&key("web"))
        .unwrap()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    for expected in [
        "nodePort 99999",
        "port \"neg\" has port -1",
        "protocol \"ICMP\"",
        "spec.externalIPs \"bogus\"",
        "frontend 10.96.0.10:80/TCP comes out twice; the first (ClusterIP)",
        "EndpointSlice default/web-1: port \"none\" has no port number",
        "port \"zero\" has port 0",
        "\"fe80::1\" is not an IPv4 address",
        "\"999.1.1.1\" is not an IPv4 address",
        "\"\" is not an IPv4 address",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected:?} not in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 10, "{problems:#?}");
    assert!(p.status(&key("nospec")).unwrap().frontends.is_empty());
}

#[test]
fn slices_follow_their_label_and_namespace_whatever_the_order() {
    let mut p = proxy();
    // The slice arrives before its Service.
    let slice = web_slice("s-1", "first", vec![ep("10.244.0.1")]);
    p.apply_endpoint_slice(&slice).unwrap();
    let mut elsewhere = web_slice("s-2", "first", vec![ep("10.244.0.2")]);
    elsewhere.metadata.namespace = Some("other".into());
    p.apply_endpoint_slice(&elsewhere).unwrap();
    p.apply_service(&web("first", "10.96.0.1")).unwrap();
    p.apply_service(&web("second", "10.96.0.2")).unwrap();
    p.sync();
    assert_eq!(backends_of(&p, "10.96.0.1:80/tcp"), ["10.244.0.1:8080"]);
    assert!(backends_of(&p, "10.96.0.2:80/tcp").is_empty());

    // Relabelled to the other Service: moves with its endpoints.
    let moved = web_slice("s-1", "second", vec![ep("10.244.0.1")]);
    p.apply_endpoint_slice(&moved).unwrap();
    assert_eq!(p.sync(), report(2, 2, 0, 0));
    assert!(backends_of(&p, "10.96.0.1:80/tcp").is_empty());
    assert_eq!(backends_of(&p, "10.96.0.2:80/tcp"), ["10.244.0.1:8080"]);
}

#[test]
fn a_frontend_wanted_twice_goes_to_the_first_service_by_name() {
    let mut p = proxy();
    let with_external_ip = |name: &str, cluster_ip: &str| {
        let mut svc = web(name, cluster_ip);
        spec(&mut svc).external_ips = Some(vec!["203.0.113.9".into()]);
        svc
    };
    let shared = "203.0.113.9:80/tcp";
    p.apply_service(&with_external_ip("b", "10.96.0.2"))
        .unwrap();
    p.apply_endpoint_slice(&web_slice("a-1", "a", vec![ep("10.244.0.1")]))
        .unwrap();
    p.apply_endpoint_slice(&web_slice("b-1", "b", vec![ep("10.244.0.2")]))
        .unwrap();
    p.sync();
    assert_eq!(backends_of(&p, shared), ["10.244.0.2:8080"]);

    let a = with_external_ip("a", "10.96.0.1");
    p.apply_service(&a).unwrap();
    p.sync();
    assert_eq!(backends_of(&p, shared), ["10.244.0.1:8080"]);
    let b = p.status(&key("b")).unwrap();
    assert!(!b.frontends.contains(&fe(shared)));
    assert!(
        matches!(
            b.problems.as_slice(),
            [InputError::FrontendConflict { owner, .. }] if *owner == key("a")
        ),
        "{b:?}"
    );

    p.delete_service(&a).unwrap();
    p.sync();
    assert_eq!(backends_of(&p, shared), ["10.244.0.2:8080"]);
    assert!(p.status(&key("b")).unwrap().is_ok());
}
