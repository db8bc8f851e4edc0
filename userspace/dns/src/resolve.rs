//! Name resolution over the cache, without IO: a query name and type in, the records, response
//! code and authority out. Follows the Kubernetes DNS-based service discovery specification
//! (schema 1.1.0) the way CoreDNS' kubernetes plugin implements it.

use std::net::IpAddr;

use hickory_server::proto::{
    op::ResponseCode,
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT},
    },
};

use crate::{
    cache::{EndpointRecord, ServiceKind, ServiceRecord, State},
    config::PodRecords,
    error::DnsError,
};

/// Schema version of the Kubernetes DNS specification answered at `dns-version.DOMAIN` TXT.
const SCHEMA_VERSION: &str = "1.1.0";
/// ExternalName services may point at each other; a loop must end.
const MAX_CNAME_CHAIN: usize = 8;

/// The cluster zone: domain, TTL and pod-record mode.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    labels: Vec<String>,
    name: Name,
    ttl: u32,
    pod_records: PodRecords,
}

impl Zone {
    pub fn new(domain: &str, ttl: u32, pod_records: PodRecords) -> Result<Self, DnsError> {
        let invalid = |reason: String| DnsError::InvalidDomain {
            domain: domain.to_owned(),
            reason,
        };
        let trimmed = domain.trim_end_matches('.').to_ascii_lowercase();
        if trimmed.is_empty() {
            return Err(invalid("empty".to_owned()));
        }
        let mut name = Name::from_ascii(&trimmed).map_err(|e| invalid(e.to_string()))?;
        name.set_fqdn(true);
        Ok(Self {
            labels: trimmed.split('.').map(str::to_owned).collect(),
            name,
            ttl,
            pod_records,
        })
    }

    /// The labels of `labels` in front of the zone, if it is inside the zone.
    fn relative<'a>(&self, labels: &'a [String]) -> Option<&'a [String]> {
        let cut = labels.len().checked_sub(self.labels.len())?;
        (labels[cut..] == self.labels[..]).then_some(&labels[..cut])
    }

    fn fqdn(&self, prefix: &[&str]) -> Option<Name> {
        let mut name = Name::from_ascii(prefix.join(".")).ok()?;
        name = name.append_domain(&self.name).ok()?;
        Some(name)
    }

    fn soa(&self, serial: u32) -> Record {
        let mname = self
            .fqdn(&["ns", "dns"])
            .unwrap_or_else(|| self.name.clone());
        let rname = self
            .fqdn(&["hostmaster"])
            .unwrap_or_else(|| self.name.clone());
        Record::from_rdata(
            self.name.clone(),
            self.ttl,
            RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, self.ttl)),
        )
    }
}

/// What the handler does with a query.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answered from the cache.
    Local(Answer),
    /// Not ours: ask the upstream resolvers.
    Forward,
    /// Inside the zone but the cache has not listed everything yet.
    NotSynced,
}

#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// A CNAME target outside the zone whose records of the query type are to be fetched
    /// upstream and appended.
    pub chase: Option<Name>,
}

/// One SRV answer: target name, port, the target's addresses (for the additional section).
#[derive(Debug)]
struct SrvTarget {
    target: Name,
    port: u16,
    addrs: Vec<IpAddr>,
}

/// Everything a name inside the zone holds.
#[derive(Debug, Default)]
struct Node {
    exists: bool,
    apex: bool,
    addrs: Vec<IpAddr>,
    cname: Option<Name>,
    srv: Vec<SrvTarget>,
    txt: Option<&'static str>,
}

impl Node {
    fn exists() -> Self {
        Self {
            exists: true,
            ..Self::default()
        }
    }
}

fn lowercase_labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

/// Answers `qname`/`qtype` from the cache, or says to forward it.
pub(crate) fn resolve(zone: &Zone, state: &State, qname: &Name, qtype: RecordType) -> Outcome {
    let labels = lowercase_labels(qname);
    if zone.relative(&labels).is_some() {
        if !(state.services_synced && state.slices_synced) {
            return Outcome::NotSynced;
        }
        let mut answer = Answer::default();
        resolve_in_zone(zone, state, qname, qtype, &mut answer, 0);
        return Outcome::Local(answer);
    }
    if qtype == RecordType::PTR
        && let Some(ip) = arpa_ip(qname)
    {
        let names = reverse(zone, state, ip);
        if !names.is_empty() {
            let answers = names
                .into_iter()
                .map(|n| Record::from_rdata(qname.clone(), zone.ttl, RData::PTR(PTR(n))))
                .collect();
            return Outcome::Local(Answer {
                answers,
                ..Answer::default()
            });
        }
    }
    // Unknown reverse names fall through to upstream, as CoreDNS' default Corefile
    // (`fallthrough in-addr.arpa ip6.arpa`) does.
    Outcome::Forward
}

fn resolve_in_zone(
    zone: &Zone,
    state: &State,
    qname: &Name,
    qtype: RecordType,
    answer: &mut Answer,
    depth: usize,
) {
    let labels = lowercase_labels(qname);
    let node = zone
        .relative(&labels)
        .map_or_else(Node::default, |rel| lookup(zone, state, rel));
    let ttl = zone.ttl;
    if !node.exists {
        answer.rcode = ResponseCode::NXDomain;
        answer.authorities.push(zone.soa(state.revision));
        return;
    }
    if let Some(target) = node.cname {
        answer.answers.push(Record::from_rdata(
            qname.clone(),
            ttl,
            RData::CNAME(CNAME(target.clone())),
        ));
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return;
        }
        let target_labels = lowercase_labels(&target);
        if zone.relative(&target_labels).is_some() {
            if depth < MAX_CNAME_CHAIN {
                resolve_in_zone(zone, state, &target, qtype, answer, depth + 1);
            } else {
                answer.rcode = ResponseCode::ServFail;
            }
        } else {
            answer.chase = Some(target);
        }
        return;
    }
    let before = answer.answers.len();
    let want_a = matches!(qtype, RecordType::A | RecordType::ANY);
    let want_aaaa = matches!(qtype, RecordType::AAAA | RecordType::ANY);
    for ip in &node.addrs {
        let rdata = match ip {
            IpAddr::V4(v4) if want_a => RData::A(A(*v4)),
            IpAddr::V6(v6) if want_aaaa => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        answer
            .answers
            .push(Record::from_rdata(qname.clone(), ttl, rdata));
    }
    if qtype == RecordType::SRV && !node.srv.is_empty() {
        // Equal shares of 100, as CoreDNS splits the weight among a name's SRV records.
        let weight = u16::try_from(100 / node.srv.len()).unwrap_or(1).max(1);
        for srv in &node.srv {
            answer.answers.push(Record::from_rdata(
                qname.clone(),
                ttl,
                RData::SRV(SRV::new(0, weight, srv.port, srv.target.clone())),
            ));
            for ip in &srv.addrs {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                let record = Record::from_rdata(srv.target.clone(), ttl, rdata);
                if !answer.additionals.contains(&record) {
                    answer.additionals.push(record);
                }
            }
        }
    }
    if let Some(txt) = node.txt
        && matches!(qtype, RecordType::TXT | RecordType::ANY)
    {
        answer.answers.push(Record::from_rdata(
            qname.clone(),
            ttl,
            RData::TXT(TXT::new(vec![txt.to_owned()])),
        ));
    }
    if node.apex {
        match qtype {
            RecordType::SOA => answer.answers.push(zone.soa(state.revision)),
            RecordType::NS => {
                if let Some(ns) = zone.fqdn(&["ns", "dns"]) {
                    answer
                        .answers
                        .push(Record::from_rdata(qname.clone(), ttl, RData::NS(NS(ns))));
                }
            }
            _ => {}
        }
    }
    if answer.answers.len() == before && depth == 0 {
        // NODATA: the name exists without records of this type; the SOA bounds negative caching.
        answer.authorities.push(zone.soa(state.revision));
    }
}

/// The node at `rel` (labels in front of the zone, lowercase).
fn lookup(zone: &Zone, state: &State, rel: &[String]) -> Node {
    let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
    match rel.as_slice() {
        [] => Node {
            apex: true,
            ..Node::exists()
        },
        ["dns-version"] => Node {
            txt: Some(SCHEMA_VERSION),
            ..Node::exists()
        },
        ["svc"] => Node::exists(),
        [ns, "svc"] if state.namespace_has_services(ns) => Node::exists(),
        [svc, ns, "svc"] => service_node(zone, state, ns, svc),
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            srv_node(zone, state, ns, svc, &port[1..], &proto[1..])
        }
        [host, svc, ns, "svc"] => endpoint_node(state, ns, svc, host),
        ["pod"] | [_, "pod"] if zone.pod_records != PodRecords::Disabled => Node::exists(),
        [ip, ns, "pod"] => pod_node(zone, state, ns, ip),
        _ => Node::default(),
    }
}

/// Endpoints a headless service publishes: the ready ones, or all with publishNotReadyAddresses.
fn published<'a>(
    state: &'a State,
    service: &'a ServiceRecord,
    ns: &str,
    svc: &str,
) -> impl Iterator<Item = (&'a EndpointRecord, &'a [crate::cache::NamedPort])> + 'a {
    state
        .endpoints(ns, svc)
        .filter(move |(e, _)| e.ready || service.publish_not_ready)
}

fn push_unique(addrs: &mut Vec<IpAddr>, ip: IpAddr) {
    if !addrs.contains(&ip) {
        addrs.push(ip);
    }
}

/// `A-B-C-D` for 10.0.0.1-style addresses, colons to dashes for IPv6 (as CoreDNS).
pub(crate) fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn undashed(label: &str) -> Option<IpAddr> {
    if label.split('-').count() == 4
        && let Ok(ip) = label.replace('-', ".").parse::<std::net::Ipv4Addr>()
    {
        return Some(IpAddr::V4(ip));
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The DNS name of an endpoint of a headless service: its hostname, else its dashed address.
fn endpoint_name(
    zone: &Zone,
    ns: &str,
    svc: &str,
    endpoint: &EndpointRecord,
    ip: IpAddr,
) -> Option<Name> {
    let host = endpoint.hostname.clone().unwrap_or_else(|| dashed(ip));
    zone.fqdn(&[&host, svc, ns, "svc"])
}

fn service_node(zone: &Zone, state: &State, ns: &str, svc: &str) -> Node {
    let Some(service) = state.service(ns, svc) else {
        return Node::default();
    };
    let mut node = Node::exists();
    let own_name = zone.fqdn(&[svc, ns, "svc"]);
    match &service.kind {
        ServiceKind::ClusterIp(ips) => {
            node.addrs.clone_from(ips);
            if let Some(own) = own_name {
                node.srv = service
                    .ports
                    .iter()
                    .map(|p| SrvTarget {
                        target: own.clone(),
                        port: p.port,
                        addrs: ips.clone(),
                    })
                    .collect();
            }
        }
        ServiceKind::Headless => {
            for (endpoint, ports) in published(state, service, ns, svc) {
                for ip in &endpoint.addresses {
                    push_unique(&mut node.addrs, *ip);
                    let Some(target) = endpoint_name(zone, ns, svc, endpoint, *ip) else {
                        continue;
                    };
                    for port in ports {
                        node.srv.push(SrvTarget {
                            target: target.clone(),
                            port: port.port,
                            addrs: vec![*ip],
                        });
                    }
                }
            }
        }
        ServiceKind::ExternalName(target) => {
            node.cname = Name::from_ascii(target).ok().map(|mut n| {
                n.set_fqdn(true);
                n
            });
        }
        ServiceKind::Pending => {}
    }
    node
}

fn srv_node(zone: &Zone, state: &State, ns: &str, svc: &str, port: &str, proto: &str) -> Node {
    let Some(service) = state.service(ns, svc) else {
        return Node::default();
    };
    let Some(service_port) = service
        .ports
        .iter()
        .find(|p| p.name == port && p.protocol == proto)
    else {
        return Node::default();
    };
    let mut node = Node::exists();
    match &service.kind {
        ServiceKind::ClusterIp(ips) => {
            if let Some(target) = zone.fqdn(&[svc, ns, "svc"]) {
                node.srv.push(SrvTarget {
                    target,
                    port: service_port.port,
                    addrs: ips.clone(),
                });
            }
        }
        ServiceKind::Headless => {
            for (endpoint, ports) in published(state, service, ns, svc) {
                let Some(endpoint_port) =
                    ports.iter().find(|p| p.name == port && p.protocol == proto)
                else {
                    continue;
                };
                for ip in &endpoint.addresses {
                    if let Some(target) = endpoint_name(zone, ns, svc, endpoint, *ip) {
                        node.srv.push(SrvTarget {
                            target,
                            port: endpoint_port.port,
                            addrs: vec![*ip],
                        });
                    }
                }
            }
        }
        ServiceKind::ExternalName(target) => {
            if let Ok(mut target) = Name::from_ascii(target) {
                target.set_fqdn(true);
                node.srv.push(SrvTarget {
                    target,
                    port: service_port.port,
                    addrs: Vec::new(),
                });
            }
        }
        ServiceKind::Pending => {}
    }
    node
}

fn endpoint_node(state: &State, ns: &str, svc: &str, host: &str) -> Node {
    let Some(service) = state.service(ns, svc) else {
        return Node::default();
    };
    // Per the DNS spec only headless services name their endpoints.
    if service.kind != ServiceKind::Headless {
        return Node::default();
    }
    let mut node = Node::default();
    for (endpoint, _) in published(state, service, ns, svc) {
        if endpoint.hostname.as_deref() == Some(host) {
            node.exists = true;
            for ip in &endpoint.addresses {
                push_unique(&mut node.addrs, *ip);
            }
        } else if endpoint.hostname.is_none() {
            for ip in &endpoint.addresses {
                if dashed(*ip) == host {
                    node.exists = true;
                    push_unique(&mut node.addrs, *ip);
                }
            }
        }
    }
    node
}

fn pod_node(zone: &Zone, state: &State, ns: &str, label: &str) -> Node {
    let Some(ip) = undashed(label) else {
        return Node::default();
    };
    let known = match zone.pod_records {
        PodRecords::Disabled => false,
        PodRecords::Insecure => true,
        PodRecords::Verified => state.pod_has_ip(ns, ip),
    };
    if !known {
        return Node::default();
    }
    Node {
        addrs: vec![ip],
        ..Node::exists()
    }
}

/// The address a full-length `in-addr.arpa`/`ip6.arpa` name stands for.
fn arpa_ip(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// Names that own `ip`: Services by ClusterIP, endpoints of headless services.
fn reverse(zone: &Zone, state: &State, ip: IpAddr) -> Vec<Name> {
    let mut names = Vec::new();
    for ((ns, svc), service) in &state.services {
        if let ServiceKind::ClusterIp(ips) = &service.kind
            && ips.contains(&ip)
            && let Some(name) = zone.fqdn(&[svc, ns, "svc"])
        {
            names.push(name);
        }
    }
    for (ns, svc, endpoint) in state.all_endpoints() {
        if !endpoint.addresses.contains(&ip) {
            continue;
        }
        let Some(service) = state.service(ns, svc) else {
            continue;
        };
        if service.kind == ServiceKind::Headless
            && (endpoint.ready || service.publish_not_ready)
            && let Some(name) = endpoint_name(zone, ns, svc, endpoint, ip)
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}
