//! skiff-dns: cluster DNS for *.svc.cluster.local from the agent's watch cache, with hickory.
//!
//! `DnsCache` holds what the DNS answers from; `watch` fills it from the API server (or the
//! agent feeds it from its own watches); `serve` (or `DnsServer::bind` + `run_until`) answers
//! on UDP and TCP. Names outside the cluster domain go to the resolvers of a resolv.conf.
//! `pod_dns` builds a pod's resolv.conf for its dnsPolicy.
#![forbid(unsafe_code)]

mod cache;
mod config;
mod error;
mod forward;
mod resolvconf;
mod resolve;
mod server;
mod watch;

#[cfg(test)]
mod tests;

pub use cache::DnsCache;
pub use config::{DEFAULT_DNS_IP, DnsConfig, PodRecords};
pub use error::DnsError;
pub use resolvconf::{
    ClusterDns, MAX_NAMESERVERS, MAX_SEARCH_CHARS, MAX_SEARCH_DOMAINS, PodDnsError, ResolvConf,
    pod_dns,
};
pub use server::DnsServer;
pub use watch::watch;

/// Binds `config.listen` (UDP and TCP) and answers from `cache` until an error stops the
/// server. Use `DnsServer::bind` and `run_until` for the bound address or a graceful stop.
pub async fn serve(config: &DnsConfig, cache: DnsCache) -> Result<(), DnsError> {
    DnsServer::bind(config, cache).await?.run().await
}
