//! skiff-kubelet: registers the Node and keeps its status and Lease fresh, and runs the pods
//! bound to it through CRI (containerd), writing their status back.
#![forbid(unsafe_code)]

pub mod cleanup;
pub mod containerd;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod image;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod server;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tracing::{Instrument as _, info_span};

use crate::pod::worker::Shared;
pub use crate::runtime::{CriRuntime, Runtime, RuntimeError, cri};

/// Builds a pod's CRI DNS config (servers, searches, options); `None` leaves the runtime's
/// default (the node's resolv.conf).
pub type DnsFn = dyn Fn(&Pod) -> Option<cri::DnsConfig> + Send + Sync;

/// The pod DNS hook (see [`DnsFn`]).
#[derive(Clone)]
pub struct DnsHook(pub Arc<DnsFn>);

impl fmt::Debug for DnsHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DnsHook(..)")
    }
}

/// The kubelet's settings. `Default` works for a node whose containerd listens at the usual
/// socket.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name (and its Lease's).
    pub node_name: String,
    /// The node's InternalIP; detected from the routing table when unset.
    pub node_ip: Option<IpAddr>,
    /// The CRI socket (containerd's gRPC socket).
    pub runtime_endpoint: PathBuf,
    /// Parent cgroup of every pod, a cgroupfs path from each hierarchy's root (e.g.
    /// `/kubepods`); each pod gets `ROOT/pod<uid>`, each container `ROOT/pod<uid>/<id>`. runc
    /// makes that path in every v1 hierarchy and in the cgroup2 tree too (hybrid machines), so a
    /// node whose socket LB is attached to its cgroup2 subtree `/NODE` wants `/NODE/pods`.
    pub cgroup_root: String,
    /// Where container logs go (`DIR/NAMESPACE_NAME_UID/CONTAINER/N.log`).
    pub pod_log_dir: PathBuf,
    /// The kubelet's state directory.
    pub root_dir: PathBuf,
    /// Extra labels for the Node.
    pub node_labels: BTreeMap<String, String>,
    /// The Node's `pods` capacity.
    pub max_pods: u32,
    /// The port reported as the kubelet endpoint.
    pub kubelet_port: u16,
    /// How often the node status is written when nothing changes.
    pub status_update_interval: Duration,
    /// How often the runtime's health is checked (a Ready change is written at once).
    pub runtime_check_interval: Duration,
    pub lease_renew_interval: Duration,
    pub lease_duration_seconds: i32,
    /// How often the runtime is relisted for container state changes (one node-wide list;
    /// only pods whose containers changed are synced).
    pub sync_interval: Duration,
    /// How often each pod is synced when nothing changed (a safety net).
    pub resync_interval: Duration,
    /// Restart back-off: first delay and cap.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Pod DNS configuration, when cluster DNS is wired up.
    pub dns: Option<DnsHook>,
    /// Annotations the Node is registered with (e.g. where the API server reaches this
    /// kubelet, [`server::ENDPOINT_ANNOTATION`]).
    pub node_annotations: BTreeMap<String, String>,
    /// The kubelet API (logs, exec, attach, port-forward, stats); off when `None`.
    pub server: Option<server::ServerConfig>,
    /// Back secret and projected volumes (and emptyDirs of `medium: Memory`) with tmpfs, as
    /// upstream does; off for tests that run without mount privileges or must leave no mounts.
    pub volume_tmpfs: bool,
    /// Mount the service account volume (a bound token, `ca.crt`, the namespace at
    /// `/var/run/secrets/kubernetes.io/serviceaccount`) into pods that automount the token and
    /// have no `kube-api-access-` volume from the API server. Off against a server that issues
    /// no tokens (the insecure loopback test mode), where every such pod would wait for one.
    pub service_account_volume: bool,
    /// The cluster CA (PEM), written as the service account volume's `ca.crt` when no
    /// kube-root-ca.crt ConfigMap provides it.
    pub cluster_ca: Option<String>,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            node_name: "localhost".into(),
            node_ip: None,
            runtime_endpoint: "/run/containerd/containerd.sock".into(),
            cgroup_root: "/kubepods".into(),
            pod_log_dir: "/var/log/pods".into(),
            root_dir: "/var/lib/kubelet".into(),
            node_labels: BTreeMap::new(),
            max_pods: 110,
            kubelet_port: 10250,
            status_update_interval: Duration::from_secs(10),
            runtime_check_interval: Duration::from_secs(2),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            sync_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            dns: None,
            node_annotations: BTreeMap::new(),
            server: None,
            volume_tmpfs: true,
            service_account_volume: true,
            cluster_ca: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("creating {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pod watch ended")]
    WatchEnded,
    #[error(transparent)]
    Api(#[from] server::ServerError),
}

/// Runs the kubelet against the CRI socket in `config`: registers the Node (retrying until the
/// API answers), then keeps Node status, Lease and pods in sync. Returns only on an
/// unrecoverable error; abort the task (or drop the future) to stop it. Containers keep running
/// across a restart and are adopted by the next run.
pub async fn run(client: kube::Client, config: KubeletConfig) -> Result<(), KubeletError> {
    let runtime = Arc::new(CriRuntime::new(config.runtime_endpoint.clone()));
    run_with(client, config, runtime).await
}

/// [`run`] with any [`Runtime`] (the fake one in tests).
pub async fn run_with<R: Runtime>(
    client: kube::Client,
    config: KubeletConfig,
    runtime: Arc<R>,
) -> Result<(), KubeletError> {
    for dir in [&config.pod_log_dir, &config.root_dir] {
        std::fs::create_dir_all(dir).map_err(|source| KubeletError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    let config = Arc::new(config);
    let (host_ip_tx, host_ip) = watch::channel(String::new());
    let runtime_name = match runtime.version().await {
        Ok((name, _)) => name,
        Err(_) => "containerd".to_owned(),
    };
    let shared = Arc::new(Shared {
        runtime: Arc::clone(&runtime),
        client: client.clone(),
        config: Arc::clone(&config),
        host_ip,
        runtime_name,
        memory_capacity: node::Machine::read().memory_bytes,
        relist: pod::relist::Subscribers::default(),
    });
    let status = node::run_status(
        client.clone(),
        Arc::clone(&config),
        Arc::clone(&runtime),
        host_ip_tx,
    )
    .instrument(info_span!("node-status", node = %config.node_name));
    let lease = node::run_lease(client.clone(), Arc::clone(&config))
        .instrument(info_span!("node-lease", node = %config.node_name));
    let pods = pod::run(shared).instrument(info_span!("pods", node = %config.node_name));
    let api = async {
        match &config.server {
            Some(server) => {
                server::bind_and_serve(server, &config, Arc::clone(&runtime), client.clone()).await
            }
            None => std::future::pending().await,
        }
    }
    .instrument(info_span!("kubelet-api", node = %config.node_name));
    tokio::select! {
        Err(e) = api => Err(KubeletError::Api(e)),
        () = status => Ok(()),
        () = lease => Ok(()),
        () = pods => Err(KubeletError::WatchEnded),
    }
}
