//! The watch cache the DNS answers from: a small projection of Services, EndpointSlices and
//! (for verified pod records) Pods, filled by the watchers in `watch` or directly by tests and
//! by an agent that already watches these kinds.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A named port, as DNS SRV records need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamedPort {
    pub name: String,
    /// Lowercase: "tcp", "udp" or "sctp".
    pub protocol: String,
    pub port: u16,
}

/// What DNS needs of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    /// Has ClusterIPs (A/AAAA answer them).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: A/AAAA answer the ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME.
    ExternalName(String),
    /// No address yet (not allocated): the name exists, without records.
    Pending,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceRecord {
    pub kind: ServiceKind,
    pub ports: Vec<NamedPort>,
    pub publish_not_ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointRecord {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceRecord {
    pub service: String,
    pub endpoints: Vec<EndpointRecord>,
    pub ports: Vec<NamedPort>,
}

/// (namespace, name)
type Key = (String, String);

#[derive(Default)]
pub(crate) struct State {
    pub services: BTreeMap<Key, ServiceRecord>,
    slices: HashMap<Key, SliceRecord>,
    /// (namespace, service) -> slice names
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    /// (namespace, pod) -> pod IPs
    pods: HashMap<Key, Vec<IpAddr>>,
    /// Bumped on every change; the zone's SOA serial.
    pub revision: u32,
    pub services_synced: bool,
    pub slices_synced: bool,
}

impl State {
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceRecord> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Whether any Service lives in the namespace (`NS.svc.DOMAIN` then exists as a name).
    pub fn namespace_has_services(&self, namespace: &str) -> bool {
        self.services
            .range((namespace.to_owned(), String::new())..)
            .next()
            .is_some_and(|((ns, _), _)| ns == namespace)
    }

    /// The endpoints of a Service across its slices, each with the slice's ports.
    pub fn endpoints<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = (&'a EndpointRecord, &'a [NamedPort])> + 'a {
        let namespace = namespace.to_owned();
        self.slices_by_service
            .get(&(namespace.clone(), service.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(move |slice| self.slices.get(&(namespace.clone(), slice.clone())))
            .flat_map(|slice| slice.endpoints.iter().map(|e| (e, slice.ports.as_slice())))
    }

    /// Every (namespace, service, endpoint) triple; reverse lookups scan it.
    pub fn all_endpoints(&self) -> impl Iterator<Item = (&str, &str, &EndpointRecord)> {
        self.slices.iter().flat_map(|((ns, _), slice)| {
            slice
                .endpoints
                .iter()
                .map(move |e| (ns.as_str(), slice.service.as_str(), e))
        })
    }

    pub fn pod_has_ip(&self, namespace: &str, ip: IpAddr) -> bool {
        self.pods
            .iter()
            .any(|((ns, _), ips)| ns == namespace && ips.contains(&ip))
    }

    fn insert_slice(&mut self, key: Key, slice: Option<SliceRecord>) {
        if let Some(old) = self.slices.remove(&key) {
            let index_key = (key.0.clone(), old.service);
            if let Some(names) = self.slices_by_service.get_mut(&index_key) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.slices_by_service.remove(&index_key);
                }
            }
        }
        if let Some(slice) = slice {
            self.slices_by_service
                .entry((key.0.clone(), slice.service.clone()))
                .or_default()
                .insert(key.1.clone());
            self.slices.insert(key, slice);
        }
    }
}

/// The objects the DNS answers from. Cheap to clone (a shared handle); writers are the watchers
/// (or whoever feeds it), readers the DNS request handler.
#[derive(Clone, Default)]
pub struct DnsCache {
    state: Arc<RwLock<State>>,
}

impl std::fmt::Debug for DnsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("DnsCache")
            .field("services", &state.services.len())
            .field("endpoint_slices", &state.slices.len())
            .field("pods", &state.pods.len())
            .field("revision", &state.revision)
            .finish()
    }
}

impl DnsCache {
    /// An empty cache that is not synced: names in the cluster domain get SERVFAIL (clients
    /// retry) rather than a NXDOMAIN they would cache, until both Services and EndpointSlices
    /// have been listed once (`replace_services` and `replace_endpoint_slices`).
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panicking writer leaves a consistent map (every update is a single insert/remove).
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.revision = state.revision.wrapping_add(1);
        state
    }

    /// Whether Services and EndpointSlices have both been listed.
    pub fn is_synced(&self) -> bool {
        let state = self.read();
        state.services_synced && state.slices_synced
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&self, service: &Service) {
        if let Some((key, record)) = project_service(service) {
            self.write().services.insert(key, record);
        }
    }

    /// Removes a Service.
    pub fn delete_service(&self, service: &Service) {
        if let Some(key) = key_of(&service.metadata) {
            self.write().services.remove(&key);
        }
    }

    /// Replaces every Service at once (after a list) and marks Services synced.
    pub fn replace_services<'a>(&self, services: impl IntoIterator<Item = &'a Service>) {
        let services = services.into_iter().filter_map(project_service).collect();
        let mut state = self.write();
        state.services = services;
        state.services_synced = true;
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_endpoint_slice(&self, slice: &EndpointSlice) {
        if let Some(key) = key_of(&slice.metadata) {
            let record = project_slice(slice);
            self.write().insert_slice(key, record);
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&self, slice: &EndpointSlice) {
        if let Some(key) = key_of(&slice.metadata) {
            self.write().insert_slice(key, None);
        }
    }

    /// Replaces every EndpointSlice at once (after a list) and marks them synced.
    pub fn replace_endpoint_slices<'a>(&self, slices: impl IntoIterator<Item = &'a EndpointSlice>) {
        let slices: Vec<_> = slices
            .into_iter()
            .filter_map(|s| Some((key_of(&s.metadata)?, project_slice(s))))
            .collect();
        let mut state = self.write();
        state.slices.clear();
        state.slices_by_service.clear();
        for (key, record) in slices {
            state.insert_slice(key, record);
        }
        state.slices_synced = true;
    }

    /// Adds or replaces a Pod (only its IPs are kept; used by verified pod records).
    pub fn apply_pod(&self, pod: &Pod) {
        if let Some(key) = key_of(&pod.metadata) {
            let ips = pod_ips(pod);
            self.write().pods.insert(key, ips);
        }
    }

    /// Removes a Pod.
    pub fn delete_pod(&self, pod: &Pod) {
        if let Some(key) = key_of(&pod.metadata) {
            self.write().pods.remove(&key);
        }
    }

    /// Replaces every Pod at once.
    pub fn replace_pods<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) {
        let pods = pods
            .into_iter()
            .filter_map(|p| Some((key_of(&p.metadata)?, pod_ips(p))))
            .collect();
        self.write().pods = pods;
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        meta.name.clone()?,
    ))
}

fn parse_ips<'a>(ips: impl IntoIterator<Item = &'a String>) -> Vec<IpAddr> {
    ips.into_iter().filter_map(|ip| ip.parse().ok()).collect()
}

fn named_port(
    name: Option<&String>,
    protocol: Option<&String>,
    port: Option<i32>,
) -> Option<NamedPort> {
    let name = name.filter(|n| !n.is_empty())?;
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol: protocol.map_or("tcp", String::as_str).to_ascii_lowercase(),
        port: u16::try_from(port?).ok()?,
    })
}

fn project_service(service: &Service) -> Option<(Key, ServiceRecord)> {
    let key = key_of(&service.metadata)?;
    let spec = service.spec.as_ref();
    let kind = match spec {
        Some(spec) if spec.type_.as_deref() == Some("ExternalName") => spec
            .external_name
            .clone()
            .map_or(ServiceKind::Pending, ServiceKind::ExternalName),
        Some(spec) if spec.cluster_ip.as_deref() == Some("None") => ServiceKind::Headless,
        Some(spec) => {
            let mut ips = parse_ips(spec.cluster_ips.iter().flatten());
            if ips.is_empty() {
                ips = parse_ips(spec.cluster_ip.iter());
            }
            if ips.is_empty() {
                ServiceKind::Pending
            } else {
                ServiceKind::ClusterIp(ips)
            }
        }
        None => ServiceKind::Pending,
    };
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_ref(), p.protocol.as_ref(), Some(p.port)))
        .collect();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
    Some((
        key,
        ServiceRecord {
            kind,
            ports,
            publish_not_ready,
        },
    ))
}

/// `None` for slices DNS has no use for (no service label, FQDN addresses).
fn project_slice(slice: &EndpointSlice) -> Option<SliceRecord> {
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    if slice.address_type == "FQDN" {
        return None;
    }
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| EndpointRecord {
            addresses: parse_ips(&e.addresses),
            hostname: e
                .hostname
                .clone()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase()),
            // EndpointSlice semantics: an unknown readiness is ready.
            ready: e.conditions.as_ref().and_then(|c| c.ready) != Some(false),
        })
        .collect();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| named_port(p.name.as_ref(), p.protocol.as_ref(), p.port))
        .collect();
    Some(SliceRecord {
        service,
        endpoints,
        ports,
    })
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips = parse_ips(status.pod_ips.iter().flatten().map(|p| &p.ip));
    if ips.is_empty() {
        ips = parse_ips(status.pod_ip.iter());
    }
    ips
}
