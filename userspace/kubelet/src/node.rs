//! The Node object: registration, status (capacity, addresses, versions, conditions) and the
//! Lease heartbeat in kube-node-lease.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
            NodeSystemInfo,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
    },
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    KubeletConfig,
    runtime::{Runtime, RuntimeHealth},
};

/// The kubelet version reported in nodeInfo.
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";

/// Facts about the machine the Node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub hostname: String,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

impl Machine {
    pub fn read() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "Linux".into());
        Self {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory_bytes: mem_total(&read("/proc/meminfo")).unwrap_or(0),
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The Ready condition as the kubelet reports it.
pub fn ready_condition(health: &Result<RuntimeHealth, String>) -> (bool, String, String) {
    match health {
        Err(e) => (
            false,
            "KubeletNotReady".into(),
            format!("container runtime is down: {e}"),
        ),
        Ok(h) if !h.runtime_ready => (
            false,
            "KubeletNotReady".into(),
            format!(
                "container runtime status check may not have completed yet: {}",
                h.problems.join(", ")
            ),
        ),
        Ok(h) if !h.network_ready => (
            false,
            "KubeletNotReady".into(),
            format!(
                "container runtime network not ready: {}",
                h.problems.join(", ")
            ),
        ),
        Ok(_) => (
            true,
            "KubeletReady".into(),
            "kubelet is posting ready status".into(),
        ),
    }
}

pub fn node_status(
    config: &KubeletConfig,
    machine: &Machine,
    host_ip: &str,
    runtime_version: &str,
    ready: &(bool, String, String),
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(machine.cpus.to_string())),
        (
            "memory".to_owned(),
            Quantity(format!("{}Ki", machine.memory_bytes / 1024)),
        ),
        ("pods".to_owned(), Quantity(config.max_pods.to_string())),
    ]);
    let condition = |kind: &str, status: bool, reason: &str, message: &str| {
        let s = if status { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == s)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: kind.to_owned(),
            status: s.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(since),
        }
    };
    let mut addresses = Vec::new();
    if !host_ip.is_empty() {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: host_ip.to_owned(),
        });
    }
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: config.node_name.clone(),
    });
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(addresses),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition("Ready", ready.0, &ready.1, &ready.2),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: runtime_version.to_owned(),
            kernel_version: machine.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: machine.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: machine.os_image.clone(),
            system_uuid: machine.machine_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node's InternalIP: the configured one, else the source address of a route to the
/// outside world (no packet is sent: UDP connect only picks a route).
pub fn detect_host_ip(config: &KubeletConfig) -> String {
    if let Some(ip) = config.node_ip {
        return ip.to_string();
    }
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip: &IpAddr| !ip.is_unspecified())
        .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string())
}

fn node_labels(config: &KubeletConfig) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "kubernetes.io/hostname".to_owned(),
            config.node_name.clone(),
        ),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "kubernetes.io/arch".to_owned(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
    ]);
    labels.extend(config.node_labels.clone());
    labels
}

/// Registers the Node, then keeps its status current: every `status_update_interval`, and
/// at once when the Ready condition changes. `host_ip` is published for pod status.
pub async fn run_status<R: Runtime>(
    client: kube::Client,
    config: Arc<KubeletConfig>,
    runtime: Arc<R>,
    host_ip_tx: watch::Sender<String>,
) {
    let api: Api<Node> = Api::all(client);
    let name = config.node_name.clone();
    let machine = Machine::read();
    let host_ip = detect_host_ip(&config);
    host_ip_tx.send_replace(host_ip.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(node_labels(&config)),
            annotations: Some(config.node_annotations.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    // The API may not be up yet (agent and server starting together): keep trying.
    loop {
        match register(&api, &node, &config).await {
            Ok(()) => break,
            Err(e) => {
                warn!(node = %name, error = %e, "registering the node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    let mut pod_cidr: Option<String> = None;
    let mut last: Option<(NodeStatus, tokio::time::Instant)> = None;
    let mut runtime_version = String::new();
    loop {
        if runtime_version.is_empty()
            && let Ok((n, v)) = runtime.version().await
        {
            runtime_version = format!("{n}://{v}");
        }
        let health = runtime.status().await.map_err(|e| e.to_string());
        let ready = ready_condition(&health);
        let previous = last.as_ref().map(|(s, _)| s);
        let status = node_status(
            &config,
            &machine,
            &host_ip,
            &runtime_version,
            &ready,
            previous,
            Timestamp::now(),
        );
        let ready_changed = previous.is_none_or(|p| ready_of(p) != ready_of(&status));
        let due = last
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= config.status_update_interval);
        if ready_changed || due {
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(node) => {
                    if ready_changed {
                        info!(node = %name, ready = ready.0, reason = %ready.1, message = %ready.2, "node status");
                    }
                    last = Some((status, tokio::time::Instant::now()));
                    let cidr = node.spec.and_then(|s| s.pod_cidr);
                    if cidr.is_some() && cidr != pod_cidr {
                        let c = cidr.clone().unwrap_or_default();
                        match runtime.update_pod_cidr(&c).await {
                            Ok(()) => {
                                info!(pod_cidr = %c, "pod CIDR from the server");
                                pod_cidr = cidr;
                            }
                            Err(e) => warn!(error = %e, "passing the pod CIDR to the runtime"),
                        }
                    }
                }
                Err(e) => warn!(error = %e, "updating the node status"),
            }
        }
        tokio::time::sleep(config.runtime_check_interval).await;
    }
}

async fn register(api: &Api<Node>, node: &Node, config: &KubeletConfig) -> Result<(), kube::Error> {
    let name = &config.node_name;
    match api.create(&PostParams::default(), node).await {
        Ok(_) => info!(node = %name, "node registered"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = serde_json::json!({ "metadata": {
                "labels": node_labels(config),
                "annotations": config.node_annotations,
            } });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(node = %name, "node already registered; labels and annotations updated");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn ready_of(s: &NodeStatus) -> Option<(String, Option<String>, Option<String>)> {
    s.conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Renews the node's Lease every `lease_renew_interval`.
pub async fn run_lease(client: kube::Client, config: Arc<KubeletConfig>) {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let name = config.node_name.clone();
    loop {
        if let Err(e) = renew(&api, &nodes, &config).await {
            warn!(node = %name, error = %e, "renewing the node lease");
        }
        tokio::time::sleep(config.lease_renew_interval).await;
    }
}

async fn renew(
    api: &Api<Lease>,
    nodes: &Api<Node>,
    config: &KubeletConfig,
) -> Result<(), kube::Error> {
    let name = &config.node_name;
    let spec = LeaseSpec {
        holder_identity: Some(name.clone()),
        lease_duration_seconds: Some(config.lease_duration_seconds),
        renew_time: Some(MicroTime(Timestamp::now())),
        ..Default::default()
    };
    match api.get_opt(name).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(name, &PostParams::default(), &lease).await?;
        }
        None => {
            // Owned by the Node, so deleting the Node collects its Lease.
            let owner = nodes
                .get_opt(name)
                .await?
                .and_then(|n| n.metadata.uid)
                .map(|uid| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid,
                        ..Default::default()
                    }]
                });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("kube-node-lease".into()),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_bytes() {
        let info = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(info), Some(24_576_000 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn ready_says_why_not() {
        let down = ready_condition(&Err("connection refused".into()));
        assert!(!down.0);
        assert_eq!(down.1, "KubeletNotReady");
        assert!(
            down.2
                .contains("container runtime is down: connection refused")
        );
        let no_cni = ready_condition(&Ok(RuntimeHealth {
            runtime_ready: true,
            network_ready: false,
            problems: vec![
                "NetworkReady=false reason:NetworkPluginNotReady message:cni config uninitialized"
                    .into(),
            ],
        }));
        assert!(!no_cni.0);
        assert!(
            no_cni
                .2
                .starts_with("container runtime network not ready: NetworkReady=false")
        );
        let ok = ready_condition(&Ok(RuntimeHealth {
            runtime_ready: true,
            network_ready: true,
            problems: vec![],
        }));
        assert_eq!((ok.0, ok.1.as_str()), (true, "KubeletReady"));
    }
}
