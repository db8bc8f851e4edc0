//! resolv.conf: reading the node's (the upstream resolvers, dnsPolicy Default) and rendering a
//! pod's for its dnsPolicy, the way the kubelet does (pkg/kubelet/network/dns).

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use k8s_openapi::api::core::v1::Pod;

/// resolv.conf(5) reads at most this many nameservers; the kubelet trims to it too.
pub const MAX_NAMESERVERS: usize = 3;
/// The kubelet's limits on the search list (Kubernetes 1.28+).
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// Total characters of the search line the kubelet allows.
pub const MAX_SEARCH_CHARS: usize = 2048;

/// The parts of a resolv.conf the cluster cares about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` list (or the `domain`, whichever came last).
    pub searches: Vec<String>,
    /// `options`, each `name` or `name:value`.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text. Unknown lines are ignored, as the libc resolver does.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                // Later search/domain lines override earlier ones (resolv.conf(5)).
                Some("search" | "domain") => {
                    conf.searches = words.map(str::to_owned).collect();
                }
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// Nameservers that are IP addresses (a resolv.conf may carry a zone suffix like `%eth0`).
    pub fn nameserver_ips(&self) -> Vec<IpAddr> {
        self.nameservers
            .iter()
            .filter_map(|n| n.split('%').next()?.parse().ok())
            .collect()
    }

    /// resolv.conf text (search, nameservers, options; containerd's order).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            let _ = writeln!(out, "search {}", self.searches.join(" "));
        }
        for ns in &self.nameservers {
            let _ = writeln!(out, "nameserver {ns}");
        }
        if !self.options.is_empty() {
            let _ = writeln!(out, "options {}", self.options.join(" "));
        }
        out
    }
}

/// The cluster side of a pod's DNS settings (the kubelet's --cluster-dns/--cluster-domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The kube-dns Service IP(s); empty when the cluster has no DNS.
    pub nameservers: Vec<IpAddr>,
    /// The cluster domain, e.g. "cluster.local".
    pub domain: String,
}

/// Why a pod's DNS settings cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodDnsError {
    /// An unknown dnsPolicy.
    #[error("unsupported dnsPolicy {0:?}")]
    UnknownPolicy(String),
    /// dnsPolicy None without any nameserver in dnsConfig.
    #[error("dnsPolicy None needs at least one nameserver in dnsConfig")]
    NoNameserver,
}

/// A pod's resolv.conf for its dnsPolicy and dnsConfig: what the kubelet hands to the runtime
/// (CRI `DNSConfig`) or writes itself (`ResolvConf::render`). `host` is the node's resolv.conf
/// (dnsPolicy Default, and the extra search domains of ClusterFirst).
///
/// ClusterFirst (the default) uses the cluster DNS, search `NS.svc.DOMAIN svc.DOMAIN DOMAIN`
/// plus the host's search list, and `ndots:5`; for hostNetwork pods it behaves as Default unless
/// the policy is ClusterFirstWithHostNet. Without a cluster DNS it falls back to Default. None
/// starts empty. dnsConfig is then merged in: nameservers and searches appended (duplicates
/// dropped), options overriding by name. Lists are trimmed to the resolver's limits.
pub fn pod_dns(
    pod: &Pod,
    cluster: &ClusterDns,
    host: &ResolvConf,
) -> Result<ResolvConf, PodDnsError> {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");

    let cluster_first = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        "Default" | "None" => false,
        other => return Err(PodDnsError::UnknownPolicy(other.to_owned())),
    };
    let mut conf = if policy == "None" {
        ResolvConf::default()
    } else if cluster_first && !cluster.nameservers.is_empty() {
        let domain = cluster.domain.trim_end_matches('.');
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_owned(),
        ];
        searches.extend(host.searches.iter().cloned());
        ResolvConf {
            nameservers: cluster.nameservers.iter().map(IpAddr::to_string).collect(),
            searches,
            options: vec!["ndots:5".to_owned()],
        }
    } else {
        host.clone()
    };

    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(extra.nameservers.iter().flatten().cloned());
        conf.searches
            .extend(extra.searches.iter().flatten().cloned());
        let mut options: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut order = Vec::new();
        let parsed = conf.options.iter().map(|o| match o.split_once(':') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (o.clone(), None),
        });
        let added = extra
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())));
        for (name, value) in parsed.chain(added) {
            if options.insert(name.clone(), value).is_none() {
                order.push(name);
            }
        }
        conf.options = order
            .into_iter()
            .map(|name| match &options[&name] {
                Some(value) => format!("{name}:{value}"),
                None => name,
            })
            .collect();
    }

    dedup(&mut conf.nameservers);
    dedup(&mut conf.searches);
    conf.nameservers.truncate(MAX_NAMESERVERS);
    let mut chars = 0;
    let mut keep = 0;
    for search in conf.searches.iter().take(MAX_SEARCH_DOMAINS) {
        chars += search.len() + usize::from(keep > 0);
        if chars > MAX_SEARCH_CHARS {
            break;
        }
        keep += 1;
    }
    conf.searches.truncate(keep);
    if policy == "None" && conf.nameservers.is_empty() {
        return Err(PodDnsError::NoNameserver);
    }
    Ok(conf)
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|x| seen.insert(x.clone()));
}
