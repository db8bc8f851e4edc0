//! The namespaces a datapath benchmark runs in, modelled on the kube-proxy baseline
//! (shared/reference/kube-proxy-baseline.md):
//!
//! ```text
//!  ext ns                     node ns (fresh per configuration)            backend ns (whole run)
//!  198.18.0.2/24 ──veth── 198.18.0.1/24   10.244.0.1/24 ──veth── 10.244.0.2-12/24, nginx *:8080
//!  (NodePort client)       rules / skiff programs, wrk    route 198.18.0.0/24 via 10.244.0.1
//! ```
//!
//! Every address above exists only inside these namespaces. The node namespace gets a route to
//! the service range only for the rule-based datapaths (whose DNAT happens after the route
//! lookup); skiff's node has none, so a connect() the socket LB failed to translate ends in
//! ENETUNREACH instead of going anywhere. The ext namespace routes only the pod range, through
//! the node.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use skiff_test_support::{Cgroup, ChildGuard, NetNs, veth_pair};

use super::scenario::interrupted;

/// The node's address on the pod side (also its masquerade address there).
pub const NODE_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The node's address on the external side: the NodePort frontend.
pub const NODE_EXT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Pod-range CIDR the node is on.
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The external client's address.
pub const EXT_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The external link's subnet.
pub const EXT_CIDR: &str = "198.18.0.0/24";
/// Port nginx listens on in the backend namespace.
pub const BACKEND_PORT: u16 = 8080;
/// Endpoint addresses served: 10 endpoints plus one spare (the "changed endpoint" of updates).
pub const ENDPOINT_ADDRS: u8 = 11;

/// The `j`-th endpoint address, `10.244.0.(2 + j)`.
pub const fn endpoint_ip(j: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 2 + j)
}

/// A scratch directory (nginx config and logs, rulesets); removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Runs `cmd` to completion within `timeout`, killing it (and failing) when it takes longer or
/// the run is interrupted. Returns its output; a non-zero exit is not an error here.
pub fn run_bounded(cmd: Command, timeout: Duration, what: &str) -> anyhow::Result<Output> {
    run_bounded_with_stdin(cmd, Stdio::null(), timeout, what)
}

/// [`run_bounded`] with `stdin` as the child's standard input.
pub fn run_bounded_with_stdin(
    mut cmd: Command,
    stdin: Stdio,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Output> {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(cmd, what);
    let child = guard.child();
    let stdout = child.stdout.take().context("child stdout")?;
    let stderr = child.stderr.take().context("child stderr")?;
    // Drained on threads of their own, so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out_reader = drain(Box::new(stdout));
    let err_reader = drain(Box::new(stderr));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = guard.child().try_wait().context("waiting for a child")? {
            break status;
        }
        if interrupted() {
            guard.kill();
            bail!("interrupted while running {what}");
        }
        if Instant::now() > deadline {
            guard.kill();
            bail!("{what} did not finish within {timeout:?}; killed it");
        }
        thread::sleep(Duration::from_millis(1));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run_bounded`], failing on a non-zero exit.
pub fn run_ok(cmd: Command, timeout: Duration, what: &str) -> anyhow::Result<Output> {
    let out = run_bounded(cmd, timeout, what)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `sysctl -w` inside a namespace.
fn sysctl(ns: &NetNs, setting: &str) -> anyhow::Result<()> {
    let mut cmd = ns.command("sysctl");
    cmd.args(["-q", "-w", setting]);
    run_ok(cmd, Duration::from_secs(10), &format!("sysctl {setting}"))?;
    Ok(())
}

/// The backend namespace and its nginx, alive for the whole run.
#[derive(Debug)]
pub struct Backend {
    // Field order is drop order: nginx first, then whatever is left in its cgroup, then the
    // namespace.
    nginx: ChildGuard,
    _cgroup: Cgroup,
    pub ns: NetNs,
}

impl Backend {
    /// Creates the namespace and starts nginx (1 worker, `return 200 "$server_addr\n"`), with
    /// the TIME_WAIT cap the baseline uses.
    pub fn start(work: &WorkDir) -> anyhow::Result<Self> {
        let ns = NetNs::new("be");
        sysctl(&ns, "net.ipv4.tcp_max_tw_buckets=1024")?;
        let dir = work.path().join("nginx");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, nginx_conf(&dir))
            .with_context(|| format!("writing {}", conf.display()))?;
        // nginx's master and worker go into a cgroup of their own, so dropping it kills a worker
        // the master left behind; nothing is attached to this cgroup.
        let cgroup = Cgroup::new("nginx");
        let mut cmd = ns.command_in_cgroup(&cgroup, "nginx");
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut nginx = ChildGuard::spawn(cmd, "nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = ns.run(|| {
                std::net::TcpStream::connect_timeout(
                    &(Ipv4Addr::LOCALHOST, BACKEND_PORT).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
            });
            if up {
                break;
            }
            if let Some(status) = nginx.child().try_wait().context("waiting for nginx")? {
                let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on 127.0.0.1:{BACKEND_PORT} within 10s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            nginx,
            _cgroup: cgroup,
            ns,
        })
    }

    /// Whether nginx still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.nginx.child().try_wait(), Ok(None))
    }
}

fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/client;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{\n    listen {BACKEND_PORT} backlog=4096;\n    keepalive_requests 1000000;\n    \
         location / {{ return 200 \"$server_addr\\n\"; }}\n  }}\n}}\n"
    )
}

/// A node namespace wired to the backend and to an external-client namespace. Made fresh for
/// every configuration so datapaths never mix; removed on drop.
#[derive(Debug)]
pub struct Node {
    pub ns: NetNs,
    pub ext: NetNs,
    /// The node's interface towards the backend.
    pub pod_if: String,
    /// The node's interface towards the external client.
    pub ext_if: String,
    backend_if: String,
    backend_ns: String,
}

impl Node {
    pub fn create(backend: &Backend) -> anyhow::Result<Self> {
        let ns = NetNs::new("node");
        let ext = NetNs::new("ext");
        let (pod_if, backend_if) = veth_pair(
            &ns,
            &format!("{NODE_POD_IP}/24"),
            &backend.ns,
            &format!("{}/24", endpoint_ip(0)),
        );
        let (ext_if, _) = veth_pair(
            &ns,
            &format!("{NODE_EXT_IP}/24"),
            &ext,
            &format!("{EXT_CLIENT_IP}/24"),
        );
        let node = Self {
            ns,
            ext,
            pod_if,
            ext_if,
            backend_if,
            backend_ns: backend.ns.name().to_owned(),
        };
        for j in 1..ENDPOINT_ADDRS {
            backend.ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", endpoint_ip(j)),
                "dev",
                &node.backend_if,
            ]);
        }
        node.ext
            .ip(&["route", "add", POD_CIDR, "via", &NODE_EXT_IP.to_string()]);
        backend.ns.ip(&[
            "route",
            "replace",
            EXT_CIDR,
            "via",
            &NODE_POD_IP.to_string(),
        ]);
        sysctl(&node.ns, "net.ipv4.ip_forward=1")?;
        sysctl(&node.ns, "net.ipv4.tcp_tw_reuse=1")?;
        sysctl(&node.ext, "net.ipv4.tcp_tw_reuse=1")?;
        Ok(node)
    }

    /// Routes the service range towards the backend, as kube-proxy nodes have it: the route
    /// lookup of a locally generated packet happens before nat OUTPUT rewrites it.
    pub fn route_service_range(&self) {
        self.ns
            .ip(&["route", "add", "10.96.0.0/12", "dev", &self.pod_if]);
    }

    /// `conntrack -F` in the node namespace (the only one with netfilter state).
    pub fn flush_conntrack(&self) {
        let mut cmd = self.ns.command("conntrack");
        cmd.arg("-F");
        let _ = run_bounded(cmd, Duration::from_secs(30), "conntrack -F");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Deleting the link removes both ends at once, so the backend's addresses are gone
        // before the next configuration adds them to a new veth (a namespace's devices go
        // away asynchronously after `ip netns del`).
        let _ = Command::new("ip")
            .args(["-n", self.ns.name(), "link", "del", &self.pod_if])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && Command::new("ip")
                .args(["-n", &self.backend_ns, "link", "show", &self.backend_if])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Busy fraction of all CPUs over `window`, from /proc/stat.
fn busy_fraction(window: Duration) -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let total = fields.iter().take(8).sum();
        // idle + iowait
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((total, idle))
    }
    let (t0, i0) = sample()?;
    thread::sleep(window);
    let (t1, i1) = sample()?;
    let total = t1.saturating_sub(t0);
    if total == 0 {
        return None;
    }
    Some(1.0 - i1.saturating_sub(i0) as f64 / total as f64)
}

/// Waits until the machine is idle (under 8% CPU over 1 s, as the baseline did), at most
/// `limit`. Returns false when it never was: the next run then shares the CPUs with someone.
pub fn wait_idle(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match busy_fraction(Duration::from_secs(1)) {
            Some(busy) if busy < 0.08 => return true,
            None => return true,
            Some(_) if Instant::now() >= deadline || interrupted() => return false,
            Some(_) => {}
        }
    }
}
