//! The DNS server's settings.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;

/// The kube-dns Service ClusterIP the server creates by default; pods' resolv.conf points here.
pub const DEFAULT_DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10));

/// How pod records (`A-B-C-D.NAMESPACE.pod.DOMAIN`) are answered, as CoreDNS' `pods` option.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PodRecords {
    /// No pod records: such names are NXDOMAIN.
    Disabled,
    /// Any well-formed address in any namespace answers with itself (kubeadm's CoreDNS default;
    /// needs no Pod watch, which keeps the agent small).
    #[default]
    Insecure,
    /// Only addresses of Pods that exist in that namespace (needs the Pod watch).
    Verified,
}

/// Settings of the cluster DNS server. `Default` is what the agent runs with.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Address to answer on, UDP and TCP on the same port (the agent binds the kube-dns
    /// ClusterIP inside its node's network namespace).
    pub listen: SocketAddr,
    /// The cluster domain whose `svc` and `pod` subdomains are answered from the cache.
    pub cluster_domain: String,
    /// TTL in seconds of every answer from the cache, and the SOA negative-caching TTL. The
    /// CoreDNS kubernetes plugin defaults to 5 s (kubeadm's Corefile raises it to 30): short,
    /// because Services and endpoints change and clients cache what they get.
    pub ttl: u32,
    /// resolv.conf whose `nameserver` lines are the upstream resolvers for every other name.
    /// On systemd-resolved hosts point this at /run/systemd/resolve/resolv.conf: the stub at
    /// 127.0.0.53 is not reachable from the node's network namespace.
    pub resolv_conf: PathBuf,
    /// Pod record mode.
    pub pod_records: PodRecords,
    /// How long one upstream resolver gets to answer before the next is tried.
    #[serde(with = "secs")]
    pub upstream_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(DEFAULT_DNS_IP, 53),
            cluster_domain: "cluster.local".to_owned(),
            ttl: 5,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            pod_records: PodRecords::default(),
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        f64::deserialize(d)
            .and_then(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
    }
}
