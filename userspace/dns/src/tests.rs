//! Name resolution over a cache filled by hand, and pod resolv.conf rendering.

use std::net::IpAddr;

use hickory_server::proto::{
    op::ResponseCode,
    rr::{Name, RData, Record, RecordType},
};
use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::json;

use crate::{
    cache::DnsCache,
    config::PodRecords,
    resolvconf::{ClusterDns, PodDnsError, ResolvConf, pod_dns},
    resolve::{Answer, Outcome, Zone, resolve},
};

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    endpoints: serde_json::Value,
    ports: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }))
    .unwrap()
}

/// A cluster: a ClusterIP service with named ports, a dual-stack one, a headless one with a
/// hostname endpoint, a plain one and a not-ready one, and an ExternalName.
fn filled() -> DnsCache {
    let cache = DnsCache::new();
    cache.replace_services(&[
        service("default", "web", json!({
            "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]
        })),
        service("default", "dual", json!({
            "clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21", "fd00::21"]
        })),
        service("db", "pg", json!({
            "clusterIP": "None",
            "ports": [{"name": "pg", "port": 5432}]
        })),
        service("default", "ext", json!({"type": "ExternalName", "externalName": "example.com"})),
        service("default", "alias", json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local"})),
    ]);
    cache.replace_endpoint_slices(&[
        slice(
            "db",
            "pg-abc",
            "pg",
            json!([
                {"addresses": ["10.244.0.5"], "hostname": "pg-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"]},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false}},
            ]),
            json!([{"name": "pg", "port": 5433, "protocol": "TCP"}]),
        ),
        slice(
            "default",
            "web-abc",
            "web",
            json!([
                {"addresses": ["10.244.0.9"], "conditions": {"ready": true}},
            ]),
            json!([{"name": "http", "port": 8080}]),
        ),
    ]);
    cache
}

fn zone() -> Zone {
    Zone::new("cluster.local", 5, PodRecords::Insecure).unwrap()
}

fn ask_in(zone: &Zone, cache: &DnsCache, name: &str, qtype: RecordType) -> Answer {
    let state = cache.read();
    match resolve(zone, &state, &Name::from_ascii(name).unwrap(), qtype) {
        Outcome::Local(answer) => answer,
        other => panic!("{name} {qtype}: expected a local answer, got {other:?}"),
    }
}

fn ask(cache: &DnsCache, name: &str, qtype: RecordType) -> Answer {
    ask_in(&zone(), cache, name, qtype)
}

fn ips(records: &[Record]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn assert_nxdomain(answer: &Answer) {
    assert_eq!(answer.rcode, ResponseCode::NXDomain, "{answer:?}");
    assert!(answer.answers.is_empty());
    assert!(
        matches!(answer.authorities[0].data, RData::SOA(_)),
        "SOA in authority"
    );
}

fn assert_nodata(answer: &Answer) {
    assert_eq!(answer.rcode, ResponseCode::NoError, "{answer:?}");
    assert!(answer.answers.is_empty(), "{answer:?}");
    assert!(
        matches!(answer.authorities[0].data, RData::SOA(_)),
        "SOA in authority"
    );
}

#[test]
fn clusterip_service_a_with_ttl_and_case_kept() {
    let cache = filled();
    let answer = ask(&cache, "Web.Default.svc.cluster.local.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert_eq!(ips(&answer.answers), [ip("10.96.0.20")]);
    assert_eq!(answer.answers[0].ttl, 5);
    assert_eq!(
        answer.answers[0].name.to_string(),
        "Web.Default.svc.cluster.local."
    );
}

#[test]
fn aaaa_of_ipv4_only_service_is_nodata_and_dual_stack_answers_both() {
    let cache = filled();
    assert_nodata(&ask(
        &cache,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
    ));
    let v6 = ask(&cache, "dual.default.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&v6.answers), [ip("fd00::21")]);
    let v4 = ask(&cache, "dual.default.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&v4.answers), [ip("10.96.0.21")]);
}

#[test]
fn headless_answers_ready_endpoints_only() {
    let cache = filled();
    let answer = ask(&cache, "pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&answer.answers), [ip("10.244.0.5"), ip("10.244.0.6")]);
}

#[test]
fn headless_publish_not_ready_answers_all() {
    let cache = filled();
    cache.apply_service(&service(
        "db",
        "pg",
        json!({"clusterIP": "None", "publishNotReadyAddresses": true}),
    ));
    let answer = ask(&cache, "pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(
        ips(&answer.answers),
        [ip("10.244.0.5"), ip("10.244.0.6"), ip("10.244.0.7")]
    );
}

#[test]
fn endpoint_hostname_and_dashed_ip_names() {
    let cache = filled();
    let by_host = ask(&cache, "pg-0.pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&by_host.answers), [ip("10.244.0.5")]);
    let by_ip = ask(&cache, "10-244-0-6.pg.db.svc.cluster.local.", RecordType::A);
    assert_eq!(ips(&by_ip.answers), [ip("10.244.0.6")]);
    // Not ready, and the hostname endpoint is not named by its address.
    assert_nxdomain(&ask(
        &cache,
        "10-244-0-7.pg.db.svc.cluster.local.",
        RecordType::A,
    ));
    assert_nxdomain(&ask(
        &cache,
        "10-244-0-5.pg.db.svc.cluster.local.",
        RecordType::A,
    ));
    // ClusterIP services do not name their endpoints.
    assert_nxdomain(&ask(
        &cache,
        "10-244-0-9.web.default.svc.cluster.local.",
        RecordType::A,
    ));
}

fn srvs(answer: &Answer) -> Vec<(u16, String)> {
    let mut out: Vec<_> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.port, srv.target.to_string())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[test]
fn srv_for_named_ports() {
    let cache = filled();
    let answer = ask(
        &cache,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        srvs(&answer),
        [(80, "web.default.svc.cluster.local.".to_owned())]
    );
    assert_eq!(ips(&answer.additionals), [ip("10.96.0.20")]);
    let udp = ask(
        &cache,
        "_dns._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        srvs(&udp),
        [(53, "web.default.svc.cluster.local.".to_owned())]
    );
    // Wrong protocol, unknown port name.
    assert_nxdomain(&ask(
        &cache,
        "_http._udp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    assert_nxdomain(&ask(
        &cache,
        "_nope._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    // Headless: one per ready endpoint, the endpoint port, targets named per endpoint.
    let headless = ask(&cache, "_pg._tcp.pg.db.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        srvs(&headless),
        [
            (5433, "10-244-0-6.pg.db.svc.cluster.local.".to_owned()),
            (5433, "pg-0.pg.db.svc.cluster.local.".to_owned()),
        ]
    );
    assert_eq!(
        ips(&headless.additionals),
        [ip("10.244.0.5"), ip("10.244.0.6")]
    );
}

#[test]
fn ptr_for_cluster_ips_and_headless_endpoints() {
    let cache = filled();
    let zone = zone();
    let state = cache.read();
    let ptr = |name: &str| match resolve(
        &zone,
        &state,
        &Name::from_ascii(name).unwrap(),
        RecordType::PTR,
    ) {
        Outcome::Local(a) => a
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Outcome::Forward => vec!["<forward>".to_owned()],
        Outcome::NotSynced => vec!["<not synced>".to_owned()],
    };
    assert_eq!(
        ptr("20.0.96.10.in-addr.arpa."),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        ptr("5.0.244.10.in-addr.arpa."),
        ["pg-0.pg.db.svc.cluster.local."]
    );
    assert_eq!(
        ptr("6.0.244.10.in-addr.arpa."),
        ["10-244-0-6.pg.db.svc.cluster.local."]
    );
    let v6 = "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(ptr(v6), ["dual.default.svc.cluster.local."]);
    // Unknown addresses go upstream.
    assert_eq!(ptr("1.1.168.192.in-addr.arpa."), ["<forward>"]);
}

#[test]
fn external_name_is_a_cname_chased_upstream_or_locally() {
    let cache = filled();
    let cname = ask(&cache, "ext.default.svc.cluster.local.", RecordType::CNAME);
    assert!(
        matches!(&cname.answers[..], [r] if matches!(&r.data, RData::CNAME(c) if c.0.to_string() == "example.com."))
    );
    assert!(cname.chase.is_none());
    let a = ask(&cache, "ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.chase.unwrap().to_string(), "example.com.");
    // A target inside the zone is resolved here.
    let alias = ask(&cache, "alias.default.svc.cluster.local.", RecordType::A);
    assert!(alias.chase.is_none());
    assert!(matches!(alias.answers[0].data, RData::CNAME(_)));
    assert_eq!(ips(&alias.answers), [ip("10.96.0.20")]);
}

#[test]
fn external_name_loop_ends() {
    let cache = filled();
    cache.apply_service(&service(
        "default",
        "loop",
        json!({"type": "ExternalName", "externalName": "loop.default.svc.cluster.local"}),
    ));
    let answer = ask(&cache, "loop.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::ServFail);
}

#[test]
fn unknown_names_in_zone_are_nxdomain_and_existing_parents_nodata() {
    let cache = filled();
    for name in [
        "nope.default.svc.cluster.local.",
        "web.nope.svc.cluster.local.",
        "nope.svc.cluster.local.",
        "www.google.com.cluster.local.",
        "a.b.c.d.e.f.svc.cluster.local.",
        "x.cluster.local.",
    ] {
        assert_nxdomain(&ask(&cache, name, RecordType::A));
    }
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "default.svc.cluster.local.",
    ] {
        assert_nodata(&ask(&cache, name, RecordType::A));
    }
    // TXT on a service name: the name exists, without such records.
    assert_nodata(&ask(
        &cache,
        "web.default.svc.cluster.local.",
        RecordType::TXT,
    ));
}

#[test]
fn apex_soa_and_dns_version() {
    let cache = filled();
    let soa = ask(&cache, "cluster.local.", RecordType::SOA);
    assert!(matches!(&soa.answers[..], [r] if matches!(&r.data, RData::SOA(s) if s.minimum == 5)));
    let txt = ask(&cache, "dns-version.cluster.local.", RecordType::TXT);
    assert!(matches!(&txt.answers[..], [r] if r.data.to_string().contains("1.1.0")));
}

#[test]
fn pod_records_by_mode() {
    let cache = filled();
    let insecure = ask(&cache, "10-244-1-7.any.pod.cluster.local.", RecordType::A);
    assert_eq!(ips(&insecure.answers), [ip("10.244.1.7")]);
    let v6 = ask(&cache, "fd00--7.any.pod.cluster.local.", RecordType::AAAA);
    assert_eq!(ips(&v6.answers), [ip("fd00::7")]);
    assert_nxdomain(&ask(
        &cache,
        "not-an-ip.any.pod.cluster.local.",
        RecordType::A,
    ));

    let verified = Zone::new("cluster.local", 5, PodRecords::Verified).unwrap();
    assert_nxdomain(&ask_in(
        &verified,
        &cache,
        "10-244-1-7.default.pod.cluster.local.",
        RecordType::A,
    ));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "p"},
        "status": {"podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}]}
    }))
    .unwrap();
    cache.apply_pod(&pod);
    let found = ask_in(
        &verified,
        &cache,
        "10-244-1-7.default.pod.cluster.local.",
        RecordType::A,
    );
    assert_eq!(ips(&found.answers), [ip("10.244.1.7")]);
    assert_nxdomain(&ask_in(
        &verified,
        &cache,
        "10-244-1-7.other.pod.cluster.local.",
        RecordType::A,
    ));
    cache.delete_pod(&pod);
    assert_nxdomain(&ask_in(
        &verified,
        &cache,
        "10-244-1-7.default.pod.cluster.local.",
        RecordType::A,
    ));

    let disabled = Zone::new("cluster.local", 5, PodRecords::Disabled).unwrap();
    assert_nxdomain(&ask_in(
        &disabled,
        &cache,
        "10-244-1-7.default.pod.cluster.local.",
        RecordType::A,
    ));
}

#[test]
fn custom_domain_and_outside_names_forward() {
    let cache = filled();
    let zone = Zone::new("Corp.Example.", 30, PodRecords::Insecure).unwrap();
    let answer = ask_in(
        &zone,
        &cache,
        "web.default.svc.corp.example.",
        RecordType::A,
    );
    assert_eq!(ips(&answer.answers), [ip("10.96.0.20")]);
    assert_eq!(answer.answers[0].ttl, 30);
    let state = cache.read();
    for name in ["web.default.svc.cluster.local.", "example.com.", "local."] {
        assert!(matches!(
            resolve(
                &zone,
                &state,
                &Name::from_ascii(name).unwrap(),
                RecordType::A
            ),
            Outcome::Forward
        ));
    }
    assert!(Zone::new("", 5, PodRecords::Insecure).is_err());
}

#[test]
fn updates_and_deletes_are_seen_and_unsynced_cache_does_not_answer() {
    let cache = DnsCache::new();
    let zone = zone();
    let name = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
    assert!(matches!(
        resolve(&zone, &cache.read(), &name, RecordType::A),
        Outcome::NotSynced
    ));
    cache.replace_services(&[]);
    cache.replace_endpoint_slices(&[]);
    assert_nxdomain(&ask(
        &cache,
        "web.default.svc.cluster.local.",
        RecordType::A,
    ));
    let svc = service("default", "web", json!({"clusterIP": "10.96.0.30"}));
    cache.apply_service(&svc);
    assert_eq!(
        ips(&ask(&cache, "web.default.svc.cluster.local.", RecordType::A).answers),
        [ip("10.96.0.30")]
    );
    cache.delete_service(&svc);
    assert_nxdomain(&ask(
        &cache,
        "web.default.svc.cluster.local.",
        RecordType::A,
    ));

    // A slice moving to another service leaves the old one's index.
    cache.apply_service(&service("default", "h1", json!({"clusterIP": "None"})));
    cache.apply_service(&service("default", "h2", json!({"clusterIP": "None"})));
    cache.apply_endpoint_slice(&slice(
        "default",
        "s",
        "h1",
        json!([{"addresses": ["10.244.0.1"]}]),
        json!([]),
    ));
    assert_eq!(
        ips(&ask(&cache, "h1.default.svc.cluster.local.", RecordType::A).answers),
        [ip("10.244.0.1")]
    );
    cache.apply_endpoint_slice(&slice(
        "default",
        "s",
        "h2",
        json!([{"addresses": ["10.244.0.2"]}]),
        json!([]),
    ));
    assert_nodata(&ask(&cache, "h1.default.svc.cluster.local.", RecordType::A));
    assert_eq!(
        ips(&ask(&cache, "h2.default.svc.cluster.local.", RecordType::A).answers),
        [ip("10.244.0.2")]
    );
}

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"namespace": "team", "name": "p"}, "spec": spec}))
        .unwrap()
}

fn host() -> ResolvConf {
    ResolvConf::parse(
        "# generated\nnameserver 192.0.2.1\nnameserver 192.0.2.2 ; second\ndomain ignored.example\nsearch corp.example\noptions edns0 timeout:2\n",
    )
}

fn cluster() -> ClusterDns {
    ClusterDns {
        nameservers: vec![ip("10.96.0.10")],
        domain: "cluster.local".to_owned(),
    }
}

#[test]
fn resolv_conf_parse() {
    let host = host();
    assert_eq!(host.nameservers, ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(host.searches, ["corp.example"]);
    assert_eq!(host.options, ["edns0", "timeout:2"]);
    assert_eq!(
        ResolvConf::parse("nameserver fe80::1%eth0\nnameserver bogus\n").nameserver_ips(),
        [ip("fe80::1")]
    );
}

#[test]
fn cluster_first_pod_resolv_conf() {
    let conf = pod_dns(&pod(json!({"containers": []})), &cluster(), &host()).unwrap();
    assert_eq!(
        conf.render(),
        "search team.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    // hostNetwork pods get the node's unless ClusterFirstWithHostNet.
    let host_net = pod_dns(
        &pod(json!({"containers": [], "hostNetwork": true})),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert_eq!(host_net, host());
    let with_host_net = pod_dns(
        &pod(
            json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
        ),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert_eq!(with_host_net.nameservers, ["10.96.0.10"]);
    // No cluster DNS: the node's.
    let no_dns = ClusterDns {
        nameservers: vec![],
        domain: "cluster.local".to_owned(),
    };
    assert_eq!(
        pod_dns(&pod(json!({"containers": []})), &no_dns, &host()).unwrap(),
        host()
    );
}

#[test]
fn default_none_and_dns_config_merge() {
    let default = pod_dns(
        &pod(json!({"containers": [], "dnsPolicy": "Default"})),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert_eq!(default, host());
    let none = pod_dns(
        &pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
        }})),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert_eq!(
        none.render(),
        "search a.example\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
    );
    assert_eq!(
        pod_dns(
            &pod(json!({"containers": [], "dnsPolicy": "None"})),
            &cluster(),
            &host()
        ),
        Err(PodDnsError::NoNameserver)
    );
    // Merge into ClusterFirst: appended, deduplicated, options overridden by name, trimmed to 3.
    let merged = pod_dns(
        &pod(json!({"containers": [], "dnsConfig": {
            "nameservers": ["10.96.0.10", "1.1.1.1", "8.8.8.8", "9.9.9.9"],
            "searches": ["cluster.local", "x.example"],
            "options": [{"name": "ndots", "value": "1"}]
        }})),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert_eq!(merged.nameservers, ["10.96.0.10", "1.1.1.1", "8.8.8.8"]);
    assert_eq!(
        merged.searches,
        [
            "team.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example",
            "x.example"
        ]
    );
    assert_eq!(merged.options, ["ndots:1"]);
    assert_eq!(
        pod_dns(
            &pod(json!({"containers": [], "dnsPolicy": "Bogus"})),
            &cluster(),
            &host()
        ),
        Err(PodDnsError::UnknownPolicy("Bogus".to_owned()))
    );
}

#[test]
fn search_list_is_trimmed_to_the_kubelet_limits() {
    let searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let conf = pod_dns(
        &pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": searches}})),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert_eq!(conf.searches.len(), crate::MAX_SEARCH_DOMAINS);
    let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "a".repeat(250))).collect();
    let conf = pod_dns(
        &pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": long}})),
        &cluster(),
        &host(),
    )
    .unwrap();
    assert!(conf.searches.join(" ").len() <= crate::MAX_SEARCH_CHARS);
    assert_eq!(conf.searches.len(), 8);
}
