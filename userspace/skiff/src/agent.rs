//! `skiff agent`: the node agent. It joins the cluster (a bootstrap token buys the node its own
//! client certificate through a CertificateSigningRequest, as kubeadm join does), then runs the
//! node's parts: the kubelet on containerd with the skiff CNI plugin (see node.rs), the eBPF
//! service load balancer driven from the API (skiff-proxy) and the cluster DNS (skiff-dns).
//!
//! `--netns` names the node's network namespace when it is not the agent's own (the sandbox and
//! the tests): the agent itself stays where the API server is reachable and enters the node's
//! namespace only for what must live there (the DNS sockets, tc programs).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use skiff_datapath::{Datapath, DatapathConfig, LbTable, PinnedLbMaps};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The API server.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    pub server: String,
    /// A bootstrap token (`skiff token create`) to join with; needed only until the node has
    /// its certificate under the data dir.
    #[arg(long)]
    pub token: Option<String>,
    /// The cluster CA certificate (PEM) to trust; copied into the data dir on first join.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// State directory: the node's key and certificate.
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    pub data_dir: PathBuf,
    /// The node's name; the host name by default.
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's network namespace (a path like /run/netns/NAME); the agent's own by default.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// The cgroup v2 directory whose processes get the socket load balancer (the pods' parent).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// The node's external interface(s) for NodePort, in the node's network namespace.
    #[arg(long = "iface")]
    pub ifaces: Vec<String>,
    /// bpffs directory for the datapath's maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/skiff")]
    pub bpffs: PathBuf,
    /// Where the cluster DNS answers, in the node's network namespace.
    #[arg(long, default_value = "10.96.0.10:53")]
    pub dns_listen: SocketAddr,
    /// resolv.conf with the upstream resolvers for names outside the cluster.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Run no cluster DNS on this node.
    #[arg(long)]
    pub no_dns: bool,
    /// Do not answer the `kubernetes` Service's address on this node. By default the agent
    /// listens on it (in the node's namespace) and forwards to the API server it is joined to,
    /// so pods' in-cluster clients reach the API (see `skiff server --advertise-address`).
    #[arg(long)]
    pub no_apiserver_forward: bool,
    /// containerd's CRI socket, when the node runs its own containerd; by default the agent
    /// starts and configures one (its state under the data dir).
    #[arg(long)]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// Run no kubelet: the node serves Services and DNS but runs no pods.
    #[arg(long)]
    pub no_kubelet: bool,
    /// The node's InternalIP; detected from the default route when unset.
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// The kubelet API's port (logs, exec, port-forward, stats), in the node's network namespace.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// With --netns: where the API server reaches the kubelet API from the agent's own namespace
    /// (forwarded into the node's); port 0 picks a free one. Published in the Node's
    /// kubelet.skiff.io/endpoint annotation.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub kubelet_forward: SocketAddr,
    /// A registry (HOST[:PORT]) the node's containerd pulls from over plain HTTP, or HTTPS
    /// without verifying it (a local or lab registry). Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// How pod traffic reaches other nodes: `none` routes each node's pod CIDR via its address
    /// (nodes on one L2 segment); `vxlan` encapsulates it in UDP 8472 between node addresses
    /// (any IP path between nodes; pods' MTU is then 50 below the node interface's).
    #[arg(long, value_enum, default_value_t = crate::overlay::Overlay::None)]
    pub overlay: crate::overlay::Overlay,
}

pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("skiff agent needs root (bpf(), cgroups, network namespaces)");
    }
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (or give --node-name)")?
            .trim()
            .to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(agent(args, node_name))
}

async fn agent(args: &AgentArgs, node_name: String) -> anyhow::Result<()> {
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let client = node_client(args, &node_name).await?;
    info!(node = %node_name, server = %args.server, "joined the cluster");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // The service load balancer: the eBPF datapath, written from the API by skiff-proxy.
    // NodePort flows to backends on other nodes are SNATed to this address so replies return.
    let node_ip = match args.node_ip {
        Some(ip) => Some(ip),
        None => in_netns(args.netns.as_deref(), || {
            skiff_kubelet::node::detect_host_ip(&skiff_kubelet::KubeletConfig::default())
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|ip| !ip.is_loopback())
        })?,
    };
    if node_ip.is_none() && !args.ifaces.is_empty() {
        warn!(
            "no node address (give --node-ip): NodePort traffic to other nodes' pods is not SNATed"
        );
    }
    let mut datapath = Datapath::load(DatapathConfig {
        bpffs: args.bpffs.clone(),
        snat_ipv4: node_ip,
        ..DatapathConfig::default()
    })
    .context("loading the eBPF datapath")?;
    if let Some(cgroup) = &args.cgroup {
        datapath.attach_cgroup(cgroup).with_context(|| {
            format!("attaching the socket load balancer to {}", cgroup.display())
        })?;
    } else {
        warn!("no --cgroup: the socket load balancer is loaded but attached nowhere");
    }
    for iface in &args.ifaces {
        let iface = iface.clone();
        in_netns(args.netns.as_deref(), || datapath.attach_tc(&iface))?
            .with_context(|| "attaching the NodePort program")?;
    }
    let table = LbTable::open(PinnedLbMaps::open(&args.bpffs)?)?;
    let mut proxy = skiff_proxy::Proxy::new(
        table,
        skiff_proxy::NodeIdentity::new(&node_name, Vec::<Ipv4Addr>::new()),
    );
    let handle = skiff_proxy::WatchHandle::new();
    let config = skiff_proxy::WatchConfig {
        node_name: Some(node_name.clone()),
        ..skiff_proxy::WatchConfig::default()
    };
    {
        let client = client.clone();
        let mut stop = stop_rx.clone();
        let handle = handle.clone();
        tasks.spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = skiff_proxy::run(client, &mut proxy, config, handle, shutdown).await {
                warn!(error = %e, "the service proxy stopped");
            }
        });
    }

    // Cluster DNS: the cache follows the API from here; the sockets live in the node's netns.
    if !args.no_dns {
        let cache = skiff_dns::DnsCache::new();
        let dns = skiff_dns::DnsConfig {
            listen: args.dns_listen,
            resolv_conf: args.resolv_conf.clone(),
            ..skiff_dns::DnsConfig::default()
        };
        {
            let (client, cache, records) = (client.clone(), cache.clone(), dns.pod_records);
            tasks.spawn(async move {
                if let Err(e) = skiff_dns::watch(client, cache, records).await {
                    warn!(error = %e, "the DNS cache's watches stopped");
                }
            });
        }
        spawn_dns(args.netns.clone(), dns, cache, stop_rx.clone())?;
    }

    // Where this node's forwarders (pods' in-cluster clients, the kubelet in --netns) connect.
    let api_server = api_address(&args.server)?;
    // In-cluster clients: the `kubernetes` Service's address, answered on this node.
    if !args.no_apiserver_forward {
        let upstream = api_server;
        // Not fatal: the node works without it (say a host web server holds port 443 on every
        // address); only pods' in-cluster clients need it, or --advertise-address on the server.
        match apiserver_listener(&client, args.netns.as_deref()).await {
            Ok((listen, listener)) => {
                tokio::spawn(crate::node::forward(
                    listener,
                    upstream,
                    tokio::runtime::Handle::current(),
                ));
                info!(%listen, %upstream, "in-cluster clients reach the API server here");
            }
            Err(e) => warn!(
                error = %format!("{e:#}"),
                "pods cannot reach the API server through the kubernetes Service on this node \
                 (free the port, or run the server with --advertise-address)"
            ),
        }
    }

    // Pods: containerd, the CNI plugin and the kubelet.
    let _containerd = if args.no_kubelet {
        None
    } else {
        let containerd = match &args.container_runtime_endpoint {
            Some(_) => None,
            None => Some(crate::node::start_containerd(
                &args.data_dir,
                args.netns.as_deref(),
                args.cgroup.as_deref(),
                &args.insecure_registries,
            )?),
        };
        let socket = args
            .container_runtime_endpoint
            .clone()
            .unwrap_or_else(|| crate::node::containerd_socket(&args.data_dir));
        if containerd.is_some() {
            let (dir, sock) = (args.data_dir.clone(), socket.clone());
            tokio::task::spawn_blocking(move || crate::node::ensure_pause_image(&dir, &sock))
                .await??;
        }
        let pod_mtu = match args.overlay {
            crate::overlay::Overlay::None => {
                tokio::spawn(crate::routes::run(
                    client.clone(),
                    node_name.clone(),
                    args.netns.clone(),
                ));
                None
            }
            crate::overlay::Overlay::Vxlan => {
                let local =
                    node_ip.context("--overlay vxlan needs the node's address (--node-ip)")?;
                let underlay = crate::overlay::underlay_mtu(args.netns.as_deref(), local)?;
                tokio::spawn(crate::overlay::run(
                    client.clone(),
                    node_name.clone(),
                    args.netns.clone(),
                    local,
                    underlay,
                ));
                // Full-size pod packets must still fit the underlay once encapsulated.
                Some(underlay - crate::overlay::OVERHEAD)
            }
        };
        let status = crate::node::install_cni(&args.data_dir, &args.bpffs, pod_mtu)?;
        // Finishes once the CIDR is known: not one of the tasks whose end stops the agent.
        tokio::spawn(crate::node::follow_pod_cidr(
            client.clone(),
            node_name.clone(),
            status,
        ));
        let mut config = crate::node::kubelet_config(args, &node_name, &socket)?;
        let (cert_pem, key_pem) = serving_certificate(&client, &args.data_dir, &node_name)
            .await
            .context("getting the kubelet API's serving certificate")?;
        let ca_pem = fs::read_to_string(args.data_dir.join("pki").join("ca.crt"))
            .context("reading the cluster CA")?;
        config.kubelet_port = args.kubelet_port;
        // Pods' service account volumes carry it as ca.crt.
        config.cluster_ca = Some(ca_pem.clone());
        config.server = Some(skiff_kubelet::server::ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, args.kubelet_port)),
            ca_pem,
            cert_pem,
            key_pem,
            stats_interval: Duration::from_secs(10),
        });
        match &args.netns {
            Some(netns) => {
                // The API server reaches the kubelet API through this forwarder into the node.
                let forwarder = tokio::net::TcpListener::bind(args.kubelet_forward)
                    .await
                    .with_context(|| format!("listening on {}", args.kubelet_forward))?;
                let endpoint = forwarder.local_addr()?;
                config.node_annotations.insert(
                    skiff_kubelet::server::ENDPOINT_ANNOTATION.to_owned(),
                    endpoint.to_string(),
                );
                let pki = args.data_dir.join("pki");
                let user = format!("system:node:{node_name}");
                let node_side = crate::node::spawn_kubelet_in_netns(
                    netns.clone(),
                    api_server,
                    tokio::runtime::Handle::current(),
                    move |url| async move {
                        let read = |f: &str| fs::read_to_string(pki.join(f));
                        let (ca, cert, key) =
                            (read("ca.crt")?, read("node.crt")?, read("node.key")?);
                        crate::server::client_from_pem(&url, &ca, &cert, &key, &user).await
                    },
                    config,
                )?;
                let kubelet_api = SocketAddr::from((Ipv4Addr::LOCALHOST, args.kubelet_port));
                tokio::spawn(crate::node::forward(forwarder, kubelet_api, node_side));
                info!(%endpoint, "the kubelet API is forwarded into the node");
            }
            None => {
                let client = client.clone();
                tasks.spawn(async move {
                    if let Err(e) = skiff_kubelet::run(client, config).await {
                        warn!(error = %e, "the kubelet stopped");
                    }
                });
            }
        }
        info!("kubelet started");
        containerd
    };

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: stopping the agent"),
        _ = term.recv() => info!("SIGTERM: stopping the agent"),
        Some(done) = tasks.join_next() => warn!(?done, "a node component stopped; stopping the agent"),
    }
    let _ = stop_tx.send(true);
    // The proxy finishes its sync; the watches feeding caches have nothing to finish.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
    // The datapath stays pinned: a restarted agent adopts it and traffic never stops.
    drop(datapath);
    Ok(())
}

/// The API server's socket address, from its URL.
/// A listener on the `kubernetes` Service's address and port, made inside the node's namespace
/// (a socket stays in the namespace it was made in; accepting and forwarding run here).
async fn apiserver_listener(
    client: &Client,
    netns: Option<&Path>,
) -> anyhow::Result<(SocketAddr, tokio::net::TcpListener)> {
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    let service = services
        .get("kubernetes")
        .await
        .context("reading the kubernetes Service")?;
    let spec = service.spec.unwrap_or_default();
    let ip: Ipv4Addr = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .context("the kubernetes Service has no IPv4 cluster address")?;
    let port = spec
        .ports
        .unwrap_or_default()
        .first()
        .and_then(|p| u16::try_from(p.port).ok())
        .context("the kubernetes Service has no port")?;
    let listen = SocketAddr::from((ip, port));
    let listener = in_netns(netns, || -> anyhow::Result<std::net::TcpListener> {
        ensure_local_address(listen)?;
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("listening on {listen} (the kubernetes Service)"))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })??;
    Ok((listen, tokio::net::TcpListener::from_std(listener)?))
}

fn api_address(server: &str) -> anyhow::Result<SocketAddr> {
    let uri: hyper::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let host = uri.host().context("--server has no host")?;
    let port = uri.port_u16().unwrap_or(443);
    use std::net::ToSocketAddrs as _;
    (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))
}

/// Runs `f` on a thread inside `netns` (or right here without one): network namespaces are
/// per thread, and tokio's threads must stay where the API server is reachable.
fn in_netns<T: Send>(netns: Option<&Path>, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let Some(netns) = netns else {
        return Ok(f());
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(netns)?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("a thread inside {} panicked", netns.display()))?
    })
}

pub(crate) fn enter_netns(netns: &Path) -> anyhow::Result<()> {
    let file = fs::File::open(netns)
        .with_context(|| format!("opening the node's network namespace {}", netns.display()))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {}", netns.display()))
}

/// The DNS server on a thread of its own inside the node's network namespace (its sockets are
/// made there, and stay there), answering from the shared cache until the agent stops.
fn spawn_dns(
    netns: Option<PathBuf>,
    config: skiff_dns::DnsConfig,
    cache: skiff_dns::DnsCache,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let result = (|| -> anyhow::Result<()> {
                if let Some(netns) = &netns {
                    enter_netns(netns)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    ensure_local_address(config.listen)?;
                    let server = skiff_dns::DnsServer::bind(&config, cache)
                        .await
                        .with_context(|| format!("binding the cluster DNS on {}", config.listen))?;
                    let _ = ready_tx.send(Ok(()));
                    info!(listen = %config.listen, "cluster DNS answering");
                    server
                        .run_until(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await?;
                    Ok(())
                })
            })();
            if let Err(e) = result {
                warn!(error = %format!("{e:#}"), "cluster DNS stopped");
                let _ = ready_tx.send(Err(e));
            }
        })
        .context("starting the DNS thread")?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the cluster DNS did not start in 10 s")?
}

/// The DNS address (the kube-dns ClusterIP) must be local in the node's namespace to be bound:
/// it goes on `lo` as a /32, as node-local DNS caches do.
fn ensure_local_address(listen: SocketAddr) -> anyhow::Result<()> {
    if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        return Ok(());
    }
    let out = std::process::Command::new("ip")
        .args([
            "addr",
            "replace",
            &format!("{}/32", listen.ip()),
            "dev",
            "lo",
        ])
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "adding {} to lo: {}",
            listen.ip(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The node's client: from its certificate under the data dir, or (first start) by joining with
/// the bootstrap token: a key made here, a CSR for system:node:NAME, the certificate the
/// cluster's signer issues once the request is approved.
async fn node_client(args: &AgentArgs, node_name: &str) -> anyhow::Result<Client> {
    let pki = args.data_dir.join("pki");
    fs::create_dir_all(&pki).with_context(|| format!("creating {}", pki.display()))?;
    let (ca_path, cert_path, key_path) = (
        pki.join("ca.crt"),
        pki.join("node.crt"),
        pki.join("node.key"),
    );
    if !ca_path.exists() {
        let source = args.ca_file.as_ref().context(
            "the cluster CA is unknown: give --ca-file (the server's DATA_DIR/tls/ca.crt)",
        )?;
        fs::copy(source, &ca_path)
            .with_context(|| format!("copying {} to {}", source.display(), ca_path.display()))?;
    }
    let ca =
        fs::read_to_string(&ca_path).with_context(|| format!("reading {}", ca_path.display()))?;
    let user = format!("system:node:{node_name}");
    if let (Ok(cert), Ok(key)) = (
        fs::read_to_string(&cert_path),
        fs::read_to_string(&key_path),
    ) {
        let expires = skiff_apiserver::tls::not_after(&cert, &cert_path)?;
        if expires > time::OffsetDateTime::now_utc() + time::Duration::days(1) {
            return crate::server::client_from_pem(&args.server, &ca, &cert, &key, &user).await;
        }
        warn!(%expires, "the node certificate expires within a day; joining again");
    }
    let token = args
        .token
        .as_ref()
        .context("this node has no certificate yet: give --token (from `skiff token create`)")?;
    let bootstrap = crate::server::client_from_token(&args.server, &ca, token).await?;
    let (key, csr) = node_request(
        "node-csr",
        node_name,
        Vec::new(),
        skiff_controllers::certificates::KUBELET_CLIENT,
        &["digital signature", "client auth"],
    )?;
    let cert = request_certificate(bootstrap, csr).await?;
    skiff_apiserver::tls::write_private(&key_path, key.serialize_pem().as_bytes())?;
    skiff_apiserver::tls::write_private(&cert_path, cert.as_bytes())?;
    crate::server::client_from_pem(&args.server, &ca, &cert, &key.serialize_pem(), &user).await
}

/// Creates `csr` and waits (up to a minute) for the certificate the cluster's signer issues.
async fn request_certificate(
    client: Client,
    csr: CertificateSigningRequest,
) -> anyhow::Result<String> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    csrs.create(&PostParams::default(), &csr)
        .await
        .with_context(|| format!("creating the certificate request {name}"))?;
    info!(csr = %name, signer = %csr.spec.signer_name, "waiting for a certificate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let current = csrs.get(&name).await?;
        let status = current.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return String::from_utf8(cert.0).context("the issued certificate is not PEM");
        }
        if let Some(c) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            bail!(
                "the certificate request {name} was {}: {}",
                c.type_.to_lowercase(),
                c.message.unwrap_or_default()
            );
        }
        if tokio::time::Instant::now() > deadline {
            let _ = csrs.delete(&name, &DeleteParams::default()).await;
            bail!("no certificate for {name} after 60 s: is the controller manager running?");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The kubelet API's serving certificate (PEM certificate and key) under the data dir: signed
/// by the cluster CA through a kubernetes.io/kubelet-serving request naming only the node, which
/// is what the API server checks when it dials the kubelet. Renewed 30 days before it expires.
async fn serving_certificate(
    client: &Client,
    data_dir: &Path,
    node_name: &str,
) -> anyhow::Result<(String, String)> {
    let pki = data_dir.join("pki");
    let (cert_path, key_path) = (pki.join("kubelet.crt"), pki.join("kubelet.key"));
    if let (Ok(cert), Ok(key)) = (
        fs::read_to_string(&cert_path),
        fs::read_to_string(&key_path),
    ) {
        let expires = skiff_apiserver::tls::not_after(&cert, &cert_path)?;
        if expires > time::OffsetDateTime::now_utc() + time::Duration::days(30) {
            return Ok((cert, key));
        }
        info!(%expires, "renewing the kubelet's serving certificate");
    }
    let (key, csr) = node_request(
        "kubelet-serving",
        node_name,
        vec![node_name.to_owned()],
        skiff_controllers::certificates::KUBELET_SERVING,
        &["digital signature", "key encipherment", "server auth"],
    )?;
    let cert = request_certificate(client.clone(), csr).await?;
    skiff_apiserver::tls::write_private(&key_path, key.serialize_pem().as_bytes())?;
    skiff_apiserver::tls::write_private(&cert_path, cert.as_bytes())?;
    Ok((cert, key.serialize_pem()))
}

/// A new key and a CertificateSigningRequest for it in the node's name (CN system:node:NAME,
/// O system:nodes) with the given DNS names, signer and usages.
fn node_request(
    prefix: &str,
    node_name: &str,
    dns_names: Vec<String>,
    signer: &str,
    usages: &[&str],
) -> anyhow::Result<(rcgen::KeyPair, CertificateSigningRequest)> {
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params = rcgen::CertificateParams::new(dns_names)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let name = format!(
        "{prefix}-{node_name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let csr = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "signerName": signer,
            "request": base64::engine::general_purpose::STANDARD.encode(&request),
            "usages": usages,
        },
    }))?;
    Ok((key, csr))
}
