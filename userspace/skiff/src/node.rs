//! The part of `skiff agent` that runs pods: containerd (started and configured by the agent
//! unless the node has one), the skiff CNI plugin installed for it, a locally built sandbox
//! ("pause") image when none can be pulled, and the kubelet.
//!
//! With `--netns` the kubelet runs on threads inside the node's namespace (its probes reach pod
//! IPs from there); it reaches the API server, which lives outside, through a forwarder the
//! agent listens with on the node's loopback.

use std::{
    fs,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::agent::AgentArgs;

/// The sandbox image the node's containerd uses; built from busybox-static when missing.
pub const PAUSE_IMAGE: &str = "skiff.local/pause:1";

/// containerd's socket for an agent data dir (what `skiff image load` imports into).
pub fn containerd_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("containerd").join("containerd.sock")
}

/// A containerd the agent started; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Containerd {
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the node's containerd configuration and starts it (inside `netns` and `cgroup` when
/// given), then waits for its socket.
pub fn start_containerd(
    data_dir: &Path,
    netns: Option<&Path>,
    cgroup: Option<&Path>,
    insecure_registries: &[String],
) -> anyhow::Result<Containerd> {
    let dir = data_dir.join("containerd");
    let cni = data_dir.join("cni");
    for d in [&dir, &cni.join("bin"), &cni.join("net.d")] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let socket = containerd_socket(data_dir);
    // Host files here configure registries (mirrors, CAs, plain HTTP), containerd's own way.
    let registry_hosts = dir.join("certs.d");
    fs::create_dir_all(&registry_hosts)
        .with_context(|| format!("creating {}", registry_hosts.display()))?;
    for registry in insecure_registries {
        skiff_kubelet::containerd::write_insecure_registry(&registry_hosts, registry)
            .with_context(|| format!("configuring the insecure registry {registry}"))?;
    }
    let config = skiff_kubelet::containerd::config(&skiff_kubelet::containerd::ContainerdPaths {
        dir: &dir,
        socket: &socket,
        cni_bin_dir: &cni.join("bin"),
        cni_conf_dir: &cni.join("net.d"),
        sandbox_image: PAUSE_IMAGE,
        registry_hosts: Some(&registry_hosts),
    });
    let path = dir.join("config.toml");
    fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let log = fs::File::create(dir.join("containerd.log"))?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", ns.display())).arg("containerd");
            cmd
        }
        None => Command::new("containerd"),
    };
    cmd.arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let child = cmd
        .spawn()
        .context("starting containerd (`cargo xtask setup` installs it)")?;
    let containerd = Containerd { child };
    if let Some(cgroup) = cgroup {
        // Its shims (and so the pods' processes) start inside the node's cgroup too.
        fs::write(
            cgroup.join("cgroup.procs"),
            containerd.child.id().to_string(),
        )
        .with_context(|| format!("moving containerd into {}", cgroup.display()))?;
    }
    for _ in 0..200 {
        if socket.exists() {
            info!(socket = %socket.display(), "containerd ready");
            return Ok(containerd);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "containerd did not open {} in 10 s; see {}",
        socket.display(),
        dir.join("containerd.log").display()
    )
}

/// The sandbox image, built from busybox-static and imported when containerd lacks it.
pub fn ensure_pause_image(data_dir: &Path, socket: &Path) -> anyhow::Result<()> {
    if skiff_kubelet::image::present(socket, PAUSE_IMAGE)? {
        return Ok(());
    }
    let work = data_dir.join("images");
    fs::create_dir_all(&work)?;
    info!(
        image = PAUSE_IMAGE,
        "building the pod sandbox image from busybox-static"
    );
    let archive = skiff_kubelet::image::build_busybox(
        &work,
        "pause",
        PAUSE_IMAGE,
        &["/bin/sleep", "2147483647"],
    )?;
    skiff_kubelet::image::import(socket, &archive)?;
    Ok(())
}

/// Installs skiff-cni (found next to this binary) and its conflist for the node's containerd,
/// with the `loopback` plugin containerd also runs; returns the status file the plugin reads.
/// `mtu` is the pods' (both veth ends), 1500 by default.
pub fn install_cni(data_dir: &Path, bpffs: &Path, mtu: Option<u32>) -> anyhow::Result<PathBuf> {
    let cni = data_dir.join("cni");
    let bin = cni.join("bin");
    let exe = std::env::current_exe().context("finding the skiff binary")?;
    let plugin = exe.with_file_name("skiff-cni");
    if !plugin.exists() {
        bail!(
            "{} is missing: skiff-cni is built with skiff (`cargo build`) and must sit next to it",
            plugin.display()
        );
    }
    skiff_cni::install::install_binary(&plugin, &bin)?;
    let loopback = bin.join("loopback");
    if !loopback.exists() {
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", &loopback)
            .context("linking Debian's loopback CNI plugin (containernetworking-plugins)")?;
    }
    let status = cni.join("status.json");
    write_cni_status(&status, None)?;
    skiff_cni::install::install_conflist(
        &cni.join("net.d"),
        &skiff_cni::install::ConflistOptions {
            data_dir: cni.join("ipam"),
            status_file: status.clone(),
            bpffs: Some(bpffs.to_owned()),
            mtu: mtu.unwrap_or(skiff_cni::install::ConflistOptions::default().mtu),
            ..skiff_cni::install::ConflistOptions::default()
        },
    )?;
    Ok(status)
}

/// Tells the plugin whether it can network pods (it can once the node has a pod CIDR).
fn write_cni_status(path: &Path, pod_cidr: Option<&str>) -> anyhow::Result<()> {
    let status = match pod_cidr {
        Some(cidr) => serde_json::json!({"ready": true, "datapathReady": true, "podCIDR": cidr}),
        None => serde_json::json!({"ready": false, "datapathReady": true,
                                   "message": "waiting for the node's pod CIDR"}),
    };
    let status = serde_json::from_value(status)?;
    skiff_cni::install::write_status(path, &status)?;
    Ok(())
}

/// Waits for the Node's pod CIDR (the kubelet registers the Node, the controllers allocate the
/// range) and hands it to the CNI plugin.
pub async fn follow_pod_cidr(client: Client, node: String, status: PathBuf) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        if let Ok(Some(n)) = nodes.get_opt(&node).await
            && let Some(cidr) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty())
        {
            match write_cni_status(&status, Some(&cidr)) {
                Ok(()) => info!(%cidr, "the node's pod CIDR is set; pods can be networked"),
                Err(e) => warn!(error = %format!("{e:#}"), "writing the CNI status"),
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The kubelet's settings for this agent.
pub fn kubelet_config(
    args: &AgentArgs,
    node: &str,
    socket: &Path,
) -> anyhow::Result<skiff_kubelet::KubeletConfig> {
    // runc makes pod cgroups at this path in every hierarchy; under the node's cgroup2 subtree
    // the socket load balancer sees the pods.
    let cgroup_root = match &args.cgroup {
        Some(cg) => {
            let root = skiff_datapath::cgroup2_mount().context("no cgroup v2 hierarchy")?;
            let rel = cg
                .strip_prefix(&root)
                .with_context(|| format!("{} is not under {}", cg.display(), root.display()))?;
            format!("/{}/pods", rel.display())
        }
        None => "/kubepods".to_owned(),
    };
    let dns_ip = args.dns_listen.ip();
    let host =
        skiff_dns::ResolvConf::parse(&fs::read_to_string(&args.resolv_conf).unwrap_or_default());
    let dns = (!args.no_dns).then(|| {
        skiff_kubelet::DnsHook(Arc::new(move |pod| {
            let cluster = skiff_dns::ClusterDns {
                nameservers: vec![dns_ip],
                domain: "cluster.local".into(),
            };
            let conf = skiff_dns::pod_dns(pod, &cluster, &host).ok()?;
            Some(skiff_kubelet::cri::DnsConfig {
                servers: conf.nameservers,
                searches: conf.searches,
                options: conf.options,
            })
        }))
    });
    Ok(skiff_kubelet::KubeletConfig {
        node_name: node.to_owned(),
        node_ip: args.node_ip.map(std::net::IpAddr::V4),
        runtime_endpoint: socket.to_owned(),
        cgroup_root,
        pod_log_dir: args.data_dir.join("pods"),
        root_dir: args.data_dir.join("kubelet"),
        dns,
        ..skiff_kubelet::KubeletConfig::default()
    })
}

/// Runs the kubelet on a thread inside `netns`, reaching the API server through a forwarder on
/// the node's loopback; `connect` builds its client for a given API URL. Returns the handle of
/// the kubelet's runtime, whose threads live in `netns` (sockets it makes are the node's).
pub fn spawn_kubelet_in_netns<F, Fut>(
    netns: PathBuf,
    upstream: SocketAddr,
    host: tokio::runtime::Handle,
    connect: F,
    config: skiff_kubelet::KubeletConfig,
) -> anyhow::Result<tokio::runtime::Handle>
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<Client>>,
{
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kubelet".into())
        .spawn(move || {
            let result = (|| -> anyhow::Result<()> {
                crate::agent::enter_netns(&netns)?;
                // Threads inherit the namespace of the thread that makes them: this runtime's
                // workers all live in the node's namespace.
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kubelet-worker")
                    .enable_all()
                    .build()?;
                let _ = handle_tx.send(runtime.handle().clone());
                runtime.block_on(async move {
                    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
                    let local = listener.local_addr()?;
                    tokio::spawn(forward(listener, upstream, host));
                    let client = connect(format!("https://{local}")).await?;
                    skiff_kubelet::run(client, config).await?;
                    Ok(())
                })
            })();
            if let Err(e) = result {
                warn!(error = %format!("{e:#}"), "the kubelet stopped");
            }
        })
        .context("starting the kubelet thread")?;
    handle_rx
        .recv()
        .context("the kubelet thread failed to start (see the log)")
}

/// Accepts on `listener` and connects to `upstream` from the namespace of `host`'s threads (the
/// agent's own for the API server, the node's for the kubelet API): a socket stays in the
/// namespace it was made in.
pub async fn forward(listener: TcpListener, upstream: SocketAddr, host: tokio::runtime::Handle) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let host = host.clone();
        tokio::spawn(async move {
            let outbound = host
                .spawn(async move { TcpStream::connect(upstream).await })
                .await;
            match outbound {
                Ok(Ok(mut outbound)) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Ok(Err(e)) => warn!(error = %e, %upstream, "forwarding a connection"),
                Err(e) => warn!(error = %e, %upstream, "the forwarder task failed"),
            }
        });
    }
}
