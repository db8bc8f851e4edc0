//! Shared pieces of the privileged tests: backend servers, the netprobe client, and a lab
//! topology of network namespaces around a "node".
//!
//! Network safety: every address below exists only inside namespaces the tests create. The
//! node namespace has routes only to its own links, so a packet that a failed program would
//! leave untranslated (to a 10.96.x VIP) fails with ENETUNREACH inside the namespace.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use serde_json::Value;
use skiff_datapath::{Datapath, DatapathConfig, LbTable, PinnedLbMaps};
use skiff_test_support::{BpffsDir, Cgroup, ChildGuard, NetNs, veth_pair};

pub const BACKEND_PORT: u16 = 8080;
pub const ENETUNREACH: i64 = 101;
pub const ECONNREFUSED: i64 = 111;

/// The netprobe binary built alongside these tests.
pub fn netprobe() -> &'static str {
    env!("CARGO_BIN_EXE_netprobe")
}

/// The `skiff` binary, built by `cargo xtask test` into the same target directory.
pub fn skiff_bin() -> std::path::PathBuf {
    let bin = Path::new(netprobe()).with_file_name("skiff");
    assert!(
        bin.exists(),
        "{} is missing: run these tests through `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

/// Runs netprobe to completion and returns its (last) JSON line.
pub fn run_probe(mut cmd: Command, args: &[&str]) -> Value {
    let out = cmd.args(args).output().expect("running netprobe");
    assert!(
        out.status.success(),
        "netprobe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("netprobe {args:?} printed {stdout:?}: {e}"))
}

/// A backend: a TCP server that greets each connection with `NAME PEER` (the address it sees
/// the client as) and then echoes lines, and a UDP server on the same port answering each
/// datagram with `NAME PEER`. Stops on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &NetNs, name: &str, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // The guard exists before any thread does: if starting panics, its drop stops and joins
        // whatever runs, so no thread keeps the namespace alive.
        let mut server = Self {
            stop: Arc::clone(&stop),
            threads: Vec::with_capacity(2),
        };
        let (tx, rx) = mpsc::channel();
        let (tcp_stop, tcp_name, tcp_tx) = (Arc::clone(&stop), name.to_owned(), tx.clone());
        server.threads.push(ns.spawn(move || {
            let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
            listener.set_nonblocking(true).expect("nonblocking");
            tcp_tx.send(()).expect("ready");
            while !tcp_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let greeting = format!("{tcp_name} {peer}\n");
                        thread::spawn(move || echo(stream, &greeting));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(1)),
                }
            }
        }));
        let (udp_stop, udp_name) = (Arc::clone(&stop), name.to_owned());
        server.threads.push(ns.spawn(move || {
            let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            tx.send(()).expect("ready");
            let mut buf = [0_u8; 512];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("{udp_name} {peer}").as_bytes(), peer);
                }
            }
        }));
        rx.recv().expect("tcp server ready");
        rx.recv().expect("udp server ready");
        server
    }
}

fn echo(stream: TcpStream, greeting: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    if writer.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One backend namespace linked to the node.
pub struct BackendNs {
    // Fields drop in order: the server's threads leave the namespace before it is deleted.
    _server: Server,
    pub name: String,
    pub ns: NetNs,
    /// The backend's address (what services point at).
    pub addr: Ipv4Addr,
}

impl BackendNs {
    pub fn endpoint(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr, BACKEND_PORT)
    }
}

/// A node namespace with a test cgroup and bpffs directory, backends on their own links
/// (198.18.i.2, node side 198.18.i.1), and an external client (198.19.0.2) on the node's
/// "external" interface (198.19.0.1, also the node's SNAT address).
pub struct Lab {
    pub node: NetNs,
    pub cgroup: Cgroup,
    pub pins: BpffsDir,
    pub backends: Vec<BackendNs>,
    pub ext: NetNs,
    /// Node-side interfaces: the external one first, then one per backend.
    pub node_ifs: Vec<String>,
}

pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const EXT_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

impl Lab {
    pub fn new(backends: usize) -> Self {
        let node = NetNs::new("node");
        let ext = NetNs::new("ext");
        let (node_ext_if, _) = veth_pair(&node, "198.19.0.1/24", &ext, "198.19.0.2/24");
        ext.ip(&["route", "add", "default", "via", "198.19.0.1"]);
        let mut node_ifs = vec![node_ext_if];
        let mut list = Vec::new();
        for i in 0..backends {
            list.push(Self::backend_ns(&node, i, &mut node_ifs));
        }
        sysctl(&node, "net.ipv4.ip_forward=1");
        Self {
            node,
            cgroup: Cgroup::new("cg"),
            pins: BpffsDir::new("pins"),
            backends: list,
            ext,
            node_ifs,
        }
    }

    fn backend_ns(node: &NetNs, i: usize, node_ifs: &mut Vec<String>) -> BackendNs {
        let name = format!("be{i}");
        let ns = NetNs::new(&name);
        let (node_if, _) = veth_pair(
            node,
            &format!("198.18.{i}.1/24"),
            &ns,
            &format!("198.18.{i}.2/24"),
        );
        ns.ip(&["route", "add", "default", "via", &format!("198.18.{i}.1")]);
        node_ifs.push(node_if.clone());
        let server = Server::start(&ns, &name, BACKEND_PORT);
        BackendNs {
            name,
            ns,
            addr: Ipv4Addr::new(198, 18, i as u8, 2),
            _server: server,
        }
    }

    /// Adds one more backend namespace (its tc program must be attached by the caller).
    pub fn add_backend(&mut self) -> &BackendNs {
        let i = self.backends.len();
        let be = Self::backend_ns(&self.node, i, &mut self.node_ifs);
        self.backends.push(be);
        &self.backends[i]
    }

    pub fn config(&self) -> DatapathConfig {
        DatapathConfig {
            bpffs: self.pins.path().to_owned(),
            snat_ipv4: Some(NODE_IP),
            ..DatapathConfig::default()
        }
    }

    /// Loads the datapath, attaches the socket LB to the test cgroup and the tc program to
    /// every node interface.
    pub fn attach(&self) {
        let config = self.config();
        self.node.run(|| {
            let mut dp = Datapath::load(config).expect("loading the eBPF objects");
            dp.attach_cgroup(self.cgroup.path())
                .expect("attaching the socket LB");
            for iface in &self.node_ifs {
                dp.attach_tc(iface).expect("attaching tc");
            }
        });
    }

    pub fn table(&self) -> LbTable<PinnedLbMaps> {
        LbTable::open(PinnedLbMaps::open(self.pins.path()).expect("open maps")).expect("open table")
    }

    /// netprobe run in the node namespace inside the test cgroup (socket LB applies).
    pub fn probe(&self, args: &[&str]) -> Value {
        run_probe(self.node.command_in_cgroup(&self.cgroup, netprobe()), args)
    }

    /// netprobe run in the node namespace outside the test cgroup.
    pub fn probe_outside(&self, args: &[&str]) -> Value {
        run_probe(self.node.command(netprobe()), args)
    }

    /// netprobe run on the external client.
    pub fn probe_ext(&self, args: &[&str]) -> Value {
        run_probe(self.ext.command(netprobe()), args)
    }

    /// A long-running netprobe in the cgroup; its stdout is piped.
    pub fn spawn_probe(&self, args: &[&str]) -> ChildGuard {
        let mut cmd = self.node.command_in_cgroup(&self.cgroup, netprobe());
        cmd.args(args).stdout(Stdio::piped());
        ChildGuard::spawn(cmd, format!("netprobe {args:?}"))
    }

    /// The backend name in a greeting (`NAME PEER`).
    pub fn backend_of(reply: &Value) -> String {
        reply["reply"]
            .as_str()
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("no greeting in {reply}"))
            .to_owned()
    }

    /// The peer address a backend saw, from its greeting.
    pub fn seen_peer(reply: &Value) -> String {
        reply["reply"]
            .as_str()
            .and_then(|r| r.split(' ').nth(1))
            .unwrap_or_else(|| panic!("no peer in {reply}"))
            .to_owned()
    }
}

pub fn sysctl(ns: &NetNs, setting: &str) {
    let status = ns
        .command("sysctl")
        .args(["-q", "-w", setting])
        .status()
        .expect("running sysctl");
    assert!(status.success(), "sysctl {setting} in {}", ns.name());
}

/// A `skiff server` started for one test on a free loopback port, with its own data dir,
/// and the real kubectl pointed at it.
pub struct ControlPlane {
    // Fields drop in order: the server is killed before its directory is removed.
    _server: ChildGuard,
    pub dir: std::path::PathBuf,
    pub kubeconfig: std::path::PathBuf,
    _dir: RemoveOnDrop,
}

/// Removes a directory tree when dropped, also when the test panics.
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ControlPlane {
    /// Starts `skiff server` reporting Kubernetes 1.`minor`, in the insecure loopback mode.
    pub fn start(minor: u32) -> Self {
        Self::launch(&[
            "--insecure-loopback",
            "--kubernetes-minor",
            &minor.to_string(),
        ])
    }

    /// Starts `skiff server` as it runs for real: TLS, authentication, RBAC.
    pub fn start_secure() -> Self {
        Self::launch(&[])
    }

    /// Kills the server process (as a crash would); the directory stays until drop.
    pub fn kill(&mut self) {
        self._server.kill();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Starts `skiff server` with extra flags.
    pub fn launch(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(skiff_test_support::unique_name("cp"));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_guard = RemoveOnDrop(dir.clone());
        let mut cmd = Command::new(skiff_bin());
        cmd.args(["server", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap());
        let server = ChildGuard::spawn(cmd, "skiff server");
        let kubeconfig = dir.join("kubeconfig.yaml");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !kubeconfig.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "skiff server did not start: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self {
            _server: server,
            dir,
            kubeconfig,
            _dir: dir_guard,
        }
    }

    /// The server's address, from its kubeconfig.
    pub fn server_url(&self) -> String {
        std::fs::read_to_string(&self.kubeconfig)
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_owned))
            .expect("kubeconfig names the server")
    }

    /// The real kubectl (the machine's dispatcher, which runs the kubectl matching the
    /// server's minor version) with this cluster's kubeconfig and a private cache.
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        cmd
    }

    /// Runs kubectl and returns its stdout; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).output().expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).output().expect("running kubectl");
        assert!(
            !out.status.success(),
            "kubectl {} succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// kubectl with `-o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl printed JSON")
    }

    /// `skiff token ARGS` against this cluster as its admin; returns stdout (panics with
    /// stderr when it fails).
    pub fn skiff_token(&self, args: &[&str]) -> String {
        let out = Command::new(skiff_bin())
            .arg("token")
            .args(args)
            .args(["--server", &self.server_url()])
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .expect("running skiff token");
        assert!(
            out.status.success(),
            "skiff token {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a file into the cluster's directory and returns its path.
    pub fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }
}

/// Polls `check` every 100 ms until it returns Some, or panics after `timeout` naming `what`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A node of a multi-node test: its own network namespace, cgroup, bpffs directory and data
/// directory, and (once started) its `skiff agent`. Dropping it stops the agent and removes what
/// the node's containerd left: cgroup trees in every hierarchy, mounts under the data dir, pins.
pub struct AgentNode {
    pub ns: NetNs,
    pub cgroup: Cgroup,
    pub pins: BpffsDir,
    pub agent: Option<ChildGuard>,
    pub dir: std::path::PathBuf,
}

impl AgentNode {
    /// A node named after `tag` whose data lives under the control plane's directory.
    pub fn new(cp: &ControlPlane, tag: &str) -> Self {
        Self {
            ns: NetNs::new(tag),
            cgroup: Cgroup::new(tag),
            pins: BpffsDir::new(tag),
            agent: None,
            dir: cp.dir.join(format!("node-{tag}")),
        }
    }

    /// Joins the node to `cp` as `name` with address `ip` (NodePort on `iface`), with `extra`
    /// agent flags, and waits for its kubelet.
    pub fn start_agent(
        &mut self,
        cp: &ControlPlane,
        name: &str,
        ip: &str,
        iface: &str,
        extra: &[&str],
    ) {
        let log = cp.dir.join(format!("{name}.log"));
        let mut cmd = Command::new(skiff_bin());
        cmd.args([
            "agent",
            "--server",
            &cp.server_url(),
            "--node-name",
            name,
            "--node-ip",
            ip,
        ])
        .args(extra)
        .args(["--token", &cp.skiff_token(&["create"])])
        .arg("--ca-file")
        .arg(cp.dir.join("tls/ca.crt"))
        .arg("--data-dir")
        .arg(&self.dir)
        .arg("--netns")
        .arg(self.ns.path())
        .arg("--cgroup")
        .arg(self.cgroup.path())
        .arg("--bpffs")
        .arg(self.pins.path())
        .args(["--iface", iface])
        .args([
            "--resolv-conf",
            &cp.file("resolv.conf", "nameserver 127.0.0.1\n"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        self.agent = Some(ChildGuard::spawn(cmd, format!("skiff agent {name}")));
        eventually(
            &format!("{name}'s kubelet"),
            Duration::from_secs(90),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let exited = self.agent.as_mut().unwrap().child().try_wait().unwrap();
                assert!(exited.is_none(), "agent {name} exited:\n{text}");
                text.contains("kubelet started").then_some(())
            },
        );
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        // The agent stops its containerd; what it ran (shims, pods) dies with the cgroups, and
        // containerd's mounts under the data dir go before the directory does.
        drop(self.agent.take());
        let name = self
            .cgroup
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        skiff_kubelet::cleanup::remove_cgroup_trees(&name);
        skiff_kubelet::cleanup::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(self.pins.path());
    }
}

/// A pod that runs and has its address, as `kubectl get pods -o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    pub name: String,
    pub node: String,
    pub ip: String,
}

/// The running pods (phase Running, with a podIP) of a `kubectl get pods -o json` list.
pub fn running_pods(list: &Value) -> Vec<RunningPod> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
        .map(|p| RunningPod {
            name: s(&p["metadata"]["name"]),
            node: s(&p["spec"]["nodeName"]),
            ip: s(&p["status"]["podIP"]),
        })
        .collect()
}

/// Builds the busybox test image tagged `reference` as `work/NAME.tar` and loads it with
/// `skiff image load` into the node of each data dir; returns the archive.
pub fn load_busybox(
    work: &Path,
    name: &str,
    reference: &str,
    data_dirs: &[&Path],
) -> std::path::PathBuf {
    let image = skiff_kubelet::image::build_busybox(work, name, reference, &[])
        .expect("building a busybox image");
    for dir in data_dirs {
        let load = Command::new(skiff_bin())
            .args(["image", "load"])
            .arg(&image)
            .arg("--data-dir")
            .arg(dir)
            .output()
            .expect("running skiff image load");
        assert!(
            load.status.success(),
            "skiff image load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
    }
    image
}
