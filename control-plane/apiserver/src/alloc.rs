//! ClusterIP and NodePort allocation. Each allocated address or port is a key in the store,
//! claimed with a create: the store's compare-and-swap makes double allocation impossible,
//! also between several API servers on one etcd. A service's keys go when it goes; keys
//! whose service never got stored (a crash between claim and create) are reaped by
//! `lifecycle`.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use skiff_store::{Store, StoreError};

use crate::errors::{ApiError, ApiResult};

pub const IP_PREFIX: &str = "/registry/ranges/serviceips/";
pub const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Addresses below this offset are only given out on request: the API server takes the first
/// (`kubernetes`), cluster DNS conventionally takes the tenth.
const DYNAMIC_OFFSET: u32 = 16;
const ATTEMPTS: u32 = 64;

pub struct Allocator {
    network: u32,
    size: u32,
    ports: (u16, u16),
}

/// What a service holds, to release it again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub ips: Vec<Ipv4Addr>,
    pub ports: Vec<u16>,
}

fn random_u32() -> u32 {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

impl Allocator {
    pub fn new(cidr: (Ipv4Addr, u8), ports: (u16, u16)) -> Self {
        let bits = u32::from(cidr.1.min(30));
        let size = 1_u32 << (32 - bits);
        Self {
            network: u32::from(cidr.0) & !(size - 1),
            size,
            ports,
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.network && v < self.network + self.size - 1
    }

    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// The cluster DNS address: the tenth of the network (10.96.0.10 by default), below the
    /// range handed out dynamically, as kubeadm and k3s place it.
    pub fn dns_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 10)
    }

    /// Claims `requested`, or any free address.
    pub async fn ip<S: Store>(
        &self,
        store: &S,
        requested: Option<Ipv4Addr>,
        owner: &str,
    ) -> ApiResult<Ipv4Addr> {
        if let Some(ip) = requested {
            if !self.contains(ip) {
                return Err(field_invalid(
                    "spec.clusterIPs",
                    &ip.to_string(),
                    &format!(
                        "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                        Ipv4Addr::from(self.network),
                        32 - self.size.trailing_zeros()
                    ),
                ));
            }
            return match claim(store, &format!("{IP_PREFIX}{ip}"), owner).await? {
                true => Ok(ip),
                false => Err(field_invalid(
                    "spec.clusterIPs",
                    &ip.to_string(),
                    &format!("failed to allocate IP {ip}: provided IP is already allocated"),
                )),
            };
        }
        let span = self.size - DYNAMIC_OFFSET - 1;
        for _ in 0..ATTEMPTS {
            let ip = Ipv4Addr::from(self.network + DYNAMIC_OFFSET + random_u32() % span);
            if claim(store, &format!("{IP_PREFIX}{ip}"), owner).await? {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a service IP: the range is (nearly) full",
        ))
    }

    /// Claims `requested`, or any free NodePort.
    pub async fn port<S: Store>(
        &self,
        store: &S,
        requested: Option<u16>,
        owner: &str,
    ) -> ApiResult<u16> {
        let (lo, hi) = self.ports;
        if let Some(port) = requested {
            if !(lo..=hi).contains(&port) {
                return Err(field_invalid(
                    "spec.ports[].nodePort",
                    &port.to_string(),
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    ),
                ));
            }
            return match claim(store, &format!("{PORT_PREFIX}{port}"), owner).await? {
                true => Ok(port),
                false => Err(field_invalid(
                    "spec.ports[].nodePort",
                    &port.to_string(),
                    "provided port is already allocated",
                )),
            };
        }
        let span = u32::from(hi - lo) + 1;
        for _ in 0..ATTEMPTS {
            let port = lo + (random_u32() % span) as u16;
            if claim(store, &format!("{PORT_PREFIX}{port}"), owner).await? {
                return Ok(port);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a NodePort: the range is (nearly) full",
        ))
    }

    pub async fn release<S: Store>(&self, store: &S, held: &Held) {
        for ip in &held.ips {
            let _ = store.delete(&format!("{IP_PREFIX}{ip}"), None).await;
        }
        for port in &held.ports {
            let _ = store.delete(&format!("{PORT_PREFIX}{port}"), None).await;
        }
    }

    /// Fills in a new service's ClusterIP and NodePorts. On error nothing stays claimed.
    pub async fn assign<S: Store>(
        &self,
        store: &S,
        svc: &mut Value,
        owner: &str,
    ) -> ApiResult<Held> {
        let mut held = Held::default();
        match self.assign_inner(store, svc, owner, &mut held, None).await {
            Ok(()) => Ok(held),
            Err(e) => {
                self.release(store, &held).await;
                Err(e)
            }
        }
    }

    /// Adjusts an updated service: keeps its ClusterIP (immutable), claims NodePorts it gained
    /// and returns (claimed now, to release after the update is stored).
    pub async fn reassign<S: Store>(
        &self,
        store: &S,
        old: &Value,
        svc: &mut Value,
        owner: &str,
    ) -> ApiResult<(Held, Held)> {
        let before = held_by(old);
        let mut claimed = Held::default();
        if let Err(e) = self
            .assign_inner(store, svc, owner, &mut claimed, Some(old))
            .await
        {
            self.release(store, &claimed).await;
            return Err(e);
        }
        let after = held_by(svc);
        let released = Held {
            ips: before
                .ips
                .into_iter()
                .filter(|ip| !after.ips.contains(ip))
                .collect(),
            ports: before
                .ports
                .into_iter()
                .filter(|p| !after.ports.contains(p))
                .collect(),
        };
        Ok((claimed, released))
    }

    async fn assign_inner<S: Store>(
        &self,
        store: &S,
        svc: &mut Value,
        owner: &str,
        held: &mut Held,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let spec = svc.get("spec").cloned().unwrap_or_else(|| json!({}));
        let kind = spec["type"].as_str().unwrap_or("ClusterIP").to_owned();
        if kind == "ExternalName" {
            return Ok(());
        }
        if let Some(old) = old {
            let old_ip = old["spec"]["clusterIP"].clone();
            let new_ip = &spec["clusterIP"];
            if !new_ip.is_null() && new_ip != &old_ip {
                return Err(field_invalid(
                    "spec.clusterIPs[0]",
                    new_ip.as_str().unwrap_or(""),
                    "may not change once set",
                ));
            }
            svc["spec"]["clusterIP"] = old_ip.clone();
            svc["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        } else {
            let requested = spec["clusterIP"].as_str().filter(|s| !s.is_empty());
            let ip = match requested {
                Some("None") => None,
                Some(ip) => {
                    let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                        field_invalid(
                            "spec.clusterIPs[0]",
                            ip,
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        )
                    })?;
                    Some(self.ip(store, Some(parsed), owner).await?)
                }
                None => Some(self.ip(store, None, owner).await?),
            };
            if let Some(ip) = ip {
                held.ips.push(ip);
                svc["spec"]["clusterIP"] = json!(ip.to_string());
                svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            } else {
                svc["spec"]["clusterIP"] = json!("None");
                svc["spec"]["clusterIPs"] = json!(["None"]);
            }
        }
        let wants_node_ports = kind == "NodePort" || kind == "LoadBalancer";
        let old_ports = old.map(held_by).unwrap_or_default().ports;
        if let Some(ports) = svc["spec"]["ports"].as_array_mut() {
            for port in ports {
                let current = port["nodePort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok());
                if !wants_node_ports {
                    port.as_object_mut().map(|p| p.remove("nodePort"));
                    continue;
                }
                match current {
                    Some(p) if old_ports.contains(&p) => {}
                    requested => {
                        let p = self.port(store, requested, owner).await?;
                        held.ports.push(p);
                        port["nodePort"] = json!(p);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The addresses and ports a stored service holds.
pub fn held_by(svc: &Value) -> Held {
    let ips = svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&svc["spec"]["clusterIP"]))
        .filter_map(|v| v.as_str()?.parse().ok())
        .fold(Vec::new(), |mut acc: Vec<Ipv4Addr>, ip| {
            if !acc.contains(&ip) {
                acc.push(ip);
            }
            acc
        });
    let ports = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| u16::try_from(p["nodePort"].as_u64()?).ok())
        .collect();
    Held { ips, ports }
}

async fn claim<S: Store>(store: &S, key: &str, owner: &str) -> ApiResult<bool> {
    match store.create(key, owner.as_bytes().to_vec()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(ApiError::internal(format!("allocation store error: {e}"))),
    }
}

fn field_invalid(field: &str, value: &str, message: &str) -> ApiError {
    ApiError::new(422, "Invalid", format!("Service is invalid: {field}: Invalid value: \"{value}\": {message}"))
        .with_details(json!({"kind": "Service", "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: \"{value}\": {message}"), "field": field}]}))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skiff_store::MemStore;

    use super::*;

    #[tokio::test]
    async fn concurrent_allocations_never_collide() {
        let store = Arc::new(MemStore::new());
        let a = Arc::new(Allocator::new(
            (Ipv4Addr::new(10, 96, 0, 0), 28),
            (30_000, 30_009),
        ));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (store, a) = (Arc::clone(&store), Arc::clone(&a));
            tasks.push(tokio::spawn(async move {
                a.port(&*store, None, &format!("s{i}")).await
            }));
        }
        let mut ports = Vec::new();
        for t in tasks {
            ports.push(t.await.unwrap().unwrap());
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 10, "ten distinct ports out of ten");
        assert!(
            a.port(&*store, None, "full").await.is_err(),
            "the range is exhausted"
        );
        let err = a.port(&*store, Some(30_003), "again").await.unwrap_err();
        assert!(err.message.contains("already allocated"), "{err}");
    }

    #[tokio::test]
    async fn services_get_addresses_and_give_them_back() {
        let store = MemStore::new();
        let a = Allocator::new((Ipv4Addr::new(10, 96, 0, 0), 12), (30_000, 32_767));
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}]}});
        let held = a.assign(&store, &mut svc, "d/web").await.unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(u32::from(ip) >= u32::from(Ipv4Addr::new(10, 96, 0, 16)));
        assert_eq!(svc["spec"]["ports"][1]["nodePort"], 30443);
        assert_eq!(held_by(&svc), held);
        let mut clash = json!({"spec": {"clusterIP": ip.to_string(), "ports": []}});
        assert_eq!(
            a.assign(&store, &mut clash, "d/other")
                .await
                .unwrap_err()
                .code,
            422
        );
        let mut outside = json!({"spec": {"clusterIP": "192.0.2.1"}});
        assert!(
            a.assign(&store, &mut outside, "d/x")
                .await
                .unwrap_err()
                .message
                .contains("not in the valid range")
        );
        let mut headless = json!({"spec": {"clusterIP": "None", "ports": []}});
        assert!(
            a.assign(&store, &mut headless, "d/h")
                .await
                .unwrap()
                .ips
                .is_empty()
        );
        a.release(&store, &held).await;
        let mut again = json!({"spec": {"clusterIP": ip.to_string(), "ports": []}});
        a.assign(&store, &mut again, "d/again").await.unwrap();
    }

    #[tokio::test]
    async fn type_changes_claim_and_release_node_ports() {
        let store = MemStore::new();
        let a = Allocator::new((Ipv4Addr::new(10, 96, 0, 0), 12), (30_000, 32_767));
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        a.assign(&store, &mut svc, "d/web").await.unwrap();
        let mut np = svc.clone();
        np["spec"]["type"] = json!("NodePort");
        let (claimed, released) = a.reassign(&store, &svc, &mut np, "d/web").await.unwrap();
        assert_eq!((claimed.ports.len(), released.ports.len()), (1, 0));
        let mut back = np.clone();
        back["spec"]["type"] = json!("ClusterIP");
        let (claimed, released) = a.reassign(&store, &np, &mut back, "d/web").await.unwrap();
        assert_eq!(
            (
                claimed.ports.len(),
                released.ports,
                back["spec"]["ports"][0].get("nodePort")
            ),
            (0, claimed_ports(&np), None)
        );
        let mut moved = back.clone();
        moved["spec"]["clusterIP"] = json!("10.96.0.99");
        assert!(
            a.reassign(&store, &back, &mut moved, "d/web")
                .await
                .is_err(),
            "clusterIP is immutable"
        );
    }

    fn claimed_ports(svc: &Value) -> Vec<u16> {
        held_by(svc).ports
    }
}
