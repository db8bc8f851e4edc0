//! What the proxy keeps of the objects it is handed: only the fields that decide frontends and
//! backends, parsed and checked once. Keeping the parsed form (and comparing it) is what lets a
//! resent object whose relevant fields did not change (a status update, a periodic relist)
//! cost nothing at the next sync.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use skiff_datapath::{Algorithm, BackendState, Frontend, Protocol, ServiceKind};

/// The label that ties an EndpointSlice to its Service (same namespace).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Per-service backend selection: `random` (the default) or `maglev`.
pub const ALGORITHM_ANNOTATION: &str = "skiff.io/lb-algorithm";
/// sessionAffinity ClientIP timeout when the Service does not say (Kubernetes' default, 3 h).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The largest timeout the API server accepts; anything else reaching us is malformed.
const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// Namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    #[must_use]
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object; `kind` names it in the error when it has no name.
    pub fn from_meta(kind: &'static str, meta: &ObjectMeta) -> Result<Self, InputError> {
        // The API server always sets the namespace of a namespaced object; "default" is what it
        // would have filled in for a client that left it out.
        let namespace = meta
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        match meta.name.as_deref() {
            Some(name) if !name.is_empty() => Ok(Self::new(namespace, name)),
            _ => Err(InputError::MissingName { kind, namespace }),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The node this proxy runs on: its name (to tell local endpoints) and the IPv4 addresses
/// NodePort services listen on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeIdentity {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
}

impl NodeIdentity {
    #[must_use]
    pub fn new(name: impl Into<String>, addresses: Vec<Ipv4Addr>) -> Self {
        Self {
            name: name.into(),
            addresses,
        }
    }
}

/// Something in an object that the proxy had to skip or replace by a default. The object
/// itself is still used as far as it can be; only [`InputError::MissingName`] refuses it whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{kind} in namespace {namespace} has no metadata.name; ignored")]
    MissingName {
        kind: &'static str,
        namespace: String,
    },
    #[error("{kind} {object}: port {port:?} has {field} {value}, outside 1-65535; skipped")]
    BadPortNumber {
        kind: &'static str,
        object: ObjectKey,
        port: String,
        field: &'static str,
        value: i32,
    },
    #[error("{kind} {object}: port {port:?} has no port number; skipped")]
    MissingPortNumber {
        kind: &'static str,
        object: ObjectKey,
        port: String,
    },
    #[error(
        "{kind} {object}: port {port:?} has protocol {protocol:?}, not TCP, UDP or SCTP; skipped"
    )]
    BadProtocol {
        kind: &'static str,
        object: ObjectKey,
        port: String,
        protocol: String,
    },
    #[error("{kind} {object}: {field} {value:?} is not an IPv4 address; skipped")]
    BadAddress {
        kind: &'static str,
        object: ObjectKey,
        field: &'static str,
        value: String,
    },
    #[error(
        "Service {object}: annotation {ALGORITHM_ANNOTATION}={value:?} is not random or maglev; using random"
    )]
    UnknownAlgorithm { object: ObjectKey, value: String },
    #[error(
        "Service {object}: sessionAffinityConfig.clientIP.timeoutSeconds {value} is outside 1-{MAX_AFFINITY_TIMEOUT}; using {DEFAULT_AFFINITY_TIMEOUT}"
    )]
    BadAffinityTimeout { object: ObjectKey, value: i32 },
    #[error("Service {object}: frontend {frontend} comes out twice; the first ({kept}) is used")]
    DuplicateFrontend {
        object: ObjectKey,
        frontend: Frontend,
        kept: ServiceKind,
    },
    #[error(
        "Service {object}: frontend {frontend} is also wanted by Service {owner}, which has it (the first by namespace/name wins)"
    )]
    FrontendConflict {
        object: ObjectKey,
        frontend: Frontend,
        owner: ObjectKey,
    },
}

/// The parts of a Service that decide its frontends.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct ServiceInfo {
    /// Empty for services that get no frontend at all: headless, ExternalName, IPv6-only, or
    /// not yet given a ClusterIP.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// type NodePort or LoadBalancer.
    pub node_ports: bool,
    pub ports: Vec<PortInfo>,
    pub external_ips: Vec<Ipv4Addr>,
    pub ingress_ips: Vec<Ipv4Addr>,
    pub internal_local: bool,
    pub external_local: bool,
    pub affinity_timeout: u32,
    pub algorithm: Algorithm,
    pub problems: Vec<InputError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortInfo {
    /// "" for an unnamed port, as in the EndpointSlice.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// The parts of an IPv4 EndpointSlice labelled with its service's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SliceInfo {
    pub service: ObjectKey,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<EndpointInfo>,
    pub problems: Vec<InputError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointInfo {
    pub address: Ipv4Addr,
    pub state: BackendState,
    pub node_name: Option<String>,
}

const SERVICE: &str = "Service";
const SLICE: &str = "EndpointSlice";

/// Parses a Service; only a missing name refuses it, everything else that is wrong is skipped
/// and listed in `problems`.
pub(crate) fn parse_service(service: &Service) -> Result<(ObjectKey, ServiceInfo), InputError> {
    let key = ObjectKey::from_meta(SERVICE, &service.metadata)?;
    let mut info = ServiceInfo::default();
    let Some(spec) = &service.spec else {
        return Ok((key, info));
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok((key, info));
    }
    // clusterIPs supersedes clusterIP (its first entry always equals clusterIP).
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    // Headless: DNS only.
    if cluster_ips.contains(&"None") {
        return Ok((key, info));
    }
    for ip in cluster_ips.into_iter().filter(|ip| !ip.is_empty()) {
        if let Some(ip) = service_ipv4(&key, "spec.clusterIPs", ip, &mut info.problems) {
            push_unique(&mut info.cluster_ips, ip);
        }
    }
    if info.cluster_ips.is_empty() {
        // Not allocated yet (kube-proxy waits too, rather than open node ports of a service it
        // cannot balance inside the cluster), or IPv6 single-stack: the other family's
        // business, node ports included.
        return Ok((key, info));
    }

    info.node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    for port in spec.ports.iter().flatten() {
        let name = port.name.clone().unwrap_or_default();
        let Some(protocol) = parse_protocol(SERVICE, &key, &name, port.protocol.as_deref())
            .map_err(|problem| info.problems.push(problem))
            .ok()
        else {
            continue;
        };
        let Some(number) = port_number(port.port) else {
            info.problems.push(InputError::BadPortNumber {
                kind: SERVICE,
                object: key.clone(),
                port: name,
                field: "port",
                value: port.port,
            });
            continue;
        };
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(value) => {
                let parsed = port_number(value);
                if parsed.is_none() {
                    info.problems.push(InputError::BadPortNumber {
                        kind: SERVICE,
                        object: key.clone(),
                        port: name.clone(),
                        field: "nodePort",
                        value,
                    });
                }
                parsed
            }
        };
        info.ports.push(PortInfo {
            name,
            protocol,
            port: number,
            node_port,
        });
    }

    for ip in spec.external_ips.iter().flatten() {
        if let Some(ip) = service_ipv4(&key, "spec.externalIPs", ip, &mut info.problems) {
            push_unique(&mut info.external_ips, ip);
        }
    }
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for entry in ingress.into_iter().flatten() {
        // ipMode Proxy: the load balancer proxies to the node ports itself and the ingress IP is
        // not the destination of the packets reaching us, so binding it would only capture
        // in-cluster traffic that must go through the load balancer (kube-proxy skips it too).
        // Hostname-only ingress entries have no address to serve.
        if entry.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        if let Some(ip) = entry.ip.as_deref() {
            let field = "status.loadBalancer.ingress[].ip";
            if let Some(ip) = service_ipv4(&key, field, ip, &mut info.problems) {
                push_unique(&mut info.ingress_ips, ip);
            }
        }
    }

    info.internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    info.external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        info.affinity_timeout = match timeout {
            None => DEFAULT_AFFINITY_TIMEOUT,
            Some(value) => u32::try_from(value)
                .ok()
                .filter(|t| (1..=MAX_AFFINITY_TIMEOUT).contains(t))
                .unwrap_or_else(|| {
                    info.problems.push(InputError::BadAffinityTimeout {
                        object: key.clone(),
                        value,
                    });
                    DEFAULT_AFFINITY_TIMEOUT
                }),
        };
    }
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALGORITHM_ANNOTATION));
    if let Some(value) = annotation {
        info.algorithm = value.trim().parse().unwrap_or_else(|_| {
            info.problems.push(InputError::UnknownAlgorithm {
                object: key.clone(),
                value: value.clone(),
            });
            Algorithm::Random
        });
    }
    Ok((key, info))
}

/// Parses an EndpointSlice. `None`: not the proxy's business (no service label, or an address
/// type other than IPv4).
pub(crate) fn parse_slice(
    slice: &EndpointSlice,
) -> Result<(ObjectKey, Option<SliceInfo>), InputError> {
    let key = ObjectKey::from_meta(SLICE, &slice.metadata)?;
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|name| !name.is_empty());
    let Some(service) = service else {
        return Ok((key, None));
    };
    if slice.address_type != "IPv4" {
        return Ok((key, None));
    }
    let mut info = SliceInfo {
        service: ObjectKey::new(key.namespace.clone(), service.clone()),
        ports: Vec::new(),
        endpoints: Vec::new(),
        problems: Vec::new(),
    };
    for port in slice.ports.iter().flatten() {
        let name = port.name.clone().unwrap_or_default();
        let Some(protocol) = parse_protocol(SLICE, &key, &name, port.protocol.as_deref())
            .map_err(|problem| info.problems.push(problem))
            .ok()
        else {
            continue;
        };
        let number = match port.port {
            None => {
                info.problems.push(InputError::MissingPortNumber {
                    kind: SLICE,
                    object: key.clone(),
                    port: name,
                });
                continue;
            }
            Some(value) => match port_number(value) {
                Some(number) => number,
                None => {
                    info.problems.push(InputError::BadPortNumber {
                        kind: SLICE,
                        object: key.clone(),
                        port: name,
                        field: "port",
                        value,
                    });
                    continue;
                }
            },
        };
        info.ports.push(SlicePort {
            name,
            protocol,
            port: number,
        });
    }
    for endpoint in &slice.endpoints {
        let conditions = endpoint.conditions.as_ref();
        // Unset conditions mean "unknown", which the API says to treat as ready and serving.
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        let state = if ready {
            BackendState::Active
        } else if serving && terminating {
            BackendState::Terminating
        } else {
            continue;
        };
        // All addresses of an endpoint are the same pod; kube-proxy uses the first one.
        let first = endpoint.addresses.first().map_or("", String::as_str);
        let Ok(address) = first.parse::<Ipv4Addr>() else {
            info.problems.push(InputError::BadAddress {
                kind: SLICE,
                object: key.clone(),
                field: "endpoints[].addresses",
                value: first.to_owned(),
            });
            continue;
        };
        info.endpoints.push(EndpointInfo {
            address,
            state,
            node_name: endpoint.node_name.clone(),
        });
    }
    Ok((key, Some(info)))
}

fn parse_protocol(
    kind: &'static str,
    object: &ObjectKey,
    port: &str,
    protocol: Option<&str>,
) -> Result<Protocol, InputError> {
    match protocol {
        None => Ok(Protocol::Tcp),
        Some(p) => p.parse().map_err(|_| InputError::BadProtocol {
            kind,
            object: object.clone(),
            port: port.to_owned(),
            protocol: p.to_owned(),
        }),
    }
}

fn port_number(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// An IPv4 address of a Service field. IPv6 addresses are skipped without a word: they belong
/// to the other family, which this proxy does not serve.
fn service_ipv4(
    object: &ObjectKey,
    field: &'static str,
    value: &str,
    problems: &mut Vec<InputError>,
) -> Option<Ipv4Addr> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(ip),
        Ok(IpAddr::V6(_)) => None,
        Err(_) => {
            problems.push(InputError::BadAddress {
                kind: SERVICE,
                object: object.clone(),
                field,
                value: value.to_owned(),
            });
            None
        }
    }
}

fn push_unique(list: &mut Vec<Ipv4Addr>, ip: Ipv4Addr) {
    if !list.contains(&ip) {
        list.push(ip);
    }
}
