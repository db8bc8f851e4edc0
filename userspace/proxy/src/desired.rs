//! From one Service, its EndpointSlices and the node to the datapath entries the Service wants:
//! a pure function, so the reconciler can call it for exactly the services whose inputs
//! changed.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::SocketAddrV4,
};

use skiff_datapath::{Backend, BackendState, Frontend, Scope, Service as LbService, ServiceKind};

use crate::input::{InputError, NodeIdentity, ObjectKey, PortInfo, ServiceInfo, SliceInfo};

/// The entries of one Service, by frontend, and what had to be skipped to compute them.
#[derive(Debug, Default)]
pub(crate) struct Desired {
    pub entries: BTreeMap<Frontend, LbService>,
    pub problems: Vec<InputError>,
}

pub(crate) fn desired(
    key: &ObjectKey,
    service: &ServiceInfo,
    slices: &[&SliceInfo],
    node: &NodeIdentity,
) -> Desired {
    let mut out = Desired {
        entries: BTreeMap::new(),
        problems: service.problems.clone(),
    };
    for slice in slices {
        out.problems.extend(slice.problems.iter().cloned());
    }
    if service.cluster_ips.is_empty() {
        return out;
    }
    for port in &service.ports {
        let all = backends(port, slices, node);
        let local: Vec<Backend> = all.iter().filter(|b| b.local).copied().collect();
        // What in-cluster clients may reach (internalTrafficPolicy).
        let internal = if service.internal_local { &local } else { &all };
        let entry = |frontend, kind, backends: &[Backend], local_only, two_scopes| LbService {
            frontend,
            kind,
            algorithm: service.algorithm,
            affinity_timeout: service.affinity_timeout,
            local_only,
            two_scopes,
            backends: backends.to_vec(),
        };
        for ip in &service.cluster_ips {
            let frontend = Frontend::new(*ip, port.port, port.protocol);
            out.add(
                key,
                entry(
                    frontend,
                    ServiceKind::ClusterIp,
                    internal,
                    service.internal_local,
                    false,
                ),
            );
        }
        let node_port = port.node_port.filter(|_| service.node_ports);
        let node_ports = node.addresses.iter().filter_map(|ip| {
            node_port.map(|p| (Frontend::new(*ip, p, port.protocol), ServiceKind::NodePort))
        });
        let external_ips = service.external_ips.iter().map(|ip| {
            (
                Frontend::new(*ip, port.port, port.protocol),
                ServiceKind::ExternalIp,
            )
        });
        let ingress_ips = service.ingress_ips.iter().map(|ip| {
            (
                Frontend::new(*ip, port.port, port.protocol),
                ServiceKind::LoadBalancer,
            )
        });
        for (frontend, kind) in node_ports.chain(external_ips).chain(ingress_ips) {
            if service.external_local {
                // Traffic from outside goes to local backends only; traffic from inside the
                // cluster to the same address is steered by the socket LB to the Internal
                // entry, which internalTrafficPolicy governs.
                out.add(key, entry(frontend, kind, &local, true, true));
                let internal_frontend = Frontend {
                    scope: Scope::Internal,
                    ..frontend
                };
                out.add(
                    key,
                    entry(
                        internal_frontend,
                        kind,
                        internal,
                        service.internal_local,
                        false,
                    ),
                );
            } else {
                out.add(key, entry(frontend, kind, &all, false, false));
            }
        }
    }
    out
}

impl Desired {
    fn add(&mut self, key: &ObjectKey, entry: LbService) {
        match self.entries.entry(entry.frontend) {
            Entry::Vacant(slot) => {
                slot.insert(entry);
            }
            Entry::Occupied(slot) => self.problems.push(InputError::DuplicateFrontend {
                object: key.clone(),
                frontend: entry.frontend,
                kept: slot.get().kind,
            }),
        }
    }
}

/// The backends of one service port: from every slice port with the same name and protocol,
/// one per address and port (an endpoint moving between slices shows up in both for a while),
/// active ones first, each group by address. That is the order `LbTable` reports them in, so
/// the reconciler can compare what it wants with what the maps hold.
fn backends(port: &PortInfo, slices: &[&SliceInfo], node: &NodeIdentity) -> Vec<Backend> {
    let mut by_address: BTreeMap<SocketAddrV4, Backend> = BTreeMap::new();
    for slice in slices {
        let Some(slice_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let backend = Backend {
                address: SocketAddrV4::new(endpoint.address, slice_port.port),
                state: endpoint.state,
                local: !node.name.is_empty()
                    && endpoint.node_name.as_deref() == Some(node.name.as_str()),
            };
            match by_address.entry(backend.address) {
                Entry::Vacant(slot) => {
                    slot.insert(backend);
                }
                // The fresher slice may already call it ready: a ready copy wins.
                Entry::Occupied(mut slot) => {
                    if slot.get().state != BackendState::Active
                        && backend.state == BackendState::Active
                    {
                        slot.insert(backend);
                    }
                }
            }
        }
    }
    let mut backends: Vec<Backend> = by_address.into_values().collect();
    // Stable: keeps address order inside each group.
    backends.sort_by_key(|b| b.state != BackendState::Active);
    backends
}
