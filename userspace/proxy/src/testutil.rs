//! Small constructors for the objects the tests feed the proxy, and a handle on the fake maps
//! that stays usable while the proxy owns them.

use std::net::Ipv4Addr;

use k8s_openapi::{
    api::{
        core::v1::{
            LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec,
            ServiceStatus as K8sServiceStatus,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use skiff_datapath::{FakeLbMaps, Frontend, LbMaps, LbTable};

use crate::{NodeIdentity, ObjectKey, Proxy, SERVICE_NAME_LABEL};

pub const NS: &str = "default";
pub const NODE: &str = "node-a";

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(NS.to_owned()),
        ..ObjectMeta::default()
    }
}

pub fn key(name: &str) -> ObjectKey {
    ObjectKey::new(NS, name)
}

/// A service port; `name` "" leaves it unnamed.
pub fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        port,
        protocol: Some(protocol.to_owned()),
        ..ServicePort::default()
    }
}

pub fn node_port(mut service_port: ServicePort, node_port: i32) -> ServicePort {
    service_port.node_port = Some(node_port);
    service_port
}

/// A ClusterIP Service.
pub fn service(name: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_owned()),
            cluster_ips: Some(vec![cluster_ip.to_owned()]),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The common single-port web Service: 80/TCP, unnamed.
pub fn web(name: &str, cluster_ip: &str) -> Service {
    service(name, cluster_ip, vec![port("", 80, "TCP")])
}

pub fn spec(service: &mut Service) -> &mut ServiceSpec {
    service.spec.get_or_insert_with(ServiceSpec::default)
}

pub fn annotate(service: &mut Service, key: &str, value: &str) {
    service
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
}

pub fn ingress(service: &mut Service, ip: Option<&str>, ip_mode: Option<&str>) {
    service
        .status
        .get_or_insert_with(K8sServiceStatus::default)
        .load_balancer
        .get_or_insert_with(LoadBalancerStatus::default)
        .ingress
        .get_or_insert_with(Vec::new)
        .push(LoadBalancerIngress {
            ip: ip.map(str::to_owned),
            ip_mode: ip_mode.map(str::to_owned),
            hostname: ip.is_none().then(|| "lb.example".to_owned()),
            ports: None,
        });
}

/// A slice port; `name` "" leaves it unnamed.
pub fn slice_port(name: &str, port: i32, protocol: &str) -> EndpointPort {
    EndpointPort {
        name: (!name.is_empty()).then(|| name.to_owned()),
        port: Some(port),
        protocol: Some(protocol.to_owned()),
        app_protocol: None,
    }
}

/// An IPv4 EndpointSlice of `service`.
pub fn slice(
    name: &str,
    service: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut metadata = meta(name);
    metadata.labels = Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into());
    EndpointSlice {
        address_type: "IPv4".to_owned(),
        endpoints,
        metadata,
        ports: Some(ports),
    }
}

/// The slice of a [`web`] Service: port 8080, unnamed.
pub fn web_slice(name: &str, service: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    slice(name, service, vec![slice_port("", 8080, "TCP")], endpoints)
}

/// An endpoint with unset conditions (which means ready) on no node.
pub fn ep(ip: &str) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_owned()],
        ..Endpoint::default()
    }
}

pub fn on(mut endpoint: Endpoint, node: &str) -> Endpoint {
    endpoint.node_name = Some(node.to_owned());
    endpoint
}

pub fn cond(
    mut endpoint: Endpoint,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Endpoint {
    endpoint.conditions = Some(EndpointConditions {
        ready,
        serving,
        terminating,
    });
    endpoint
}

/// `"10.96.0.1:80/tcp"`.
pub fn fe(s: &str) -> Frontend {
    s.parse().unwrap()
}

pub fn node() -> NodeIdentity {
    NodeIdentity::new(
        NODE,
        vec![Ipv4Addr::new(192, 168, 1, 10), Ipv4Addr::new(172, 18, 0, 2)],
    )
}

pub fn proxy() -> Proxy<FakeLbMaps> {
    Proxy::new(LbTable::open(FakeLbMaps::new()).unwrap(), node())
}

/// The backend addresses of a frontend as the maps hold them, in slot order.
pub fn backends_of<M: LbMaps>(proxy: &Proxy<M>, frontend: &str) -> Vec<String> {
    proxy
        .table()
        .get(&fe(frontend))
        .unwrap_or_else(|| panic!("no frontend {frontend}"))
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect()
}

/// Every frontend the maps hold, as strings.
pub fn frontends<M: LbMaps>(proxy: &Proxy<M>) -> Vec<String> {
    proxy
        .table()
        .frontends()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Makes the proxy's fake maps fail after `n` more writes (`None`: never again).
pub fn fail_after(proxy: &mut Proxy<FakeLbMaps>, n: Option<usize>) {
    let maps = proxy.table_mut().maps_mut();
    let done = maps.writes;
    maps.fail_after(n.map(|n| done + n));
}
