//! `cargo xtask bench cni`: skiff-cni (with its eBPF redirect, and routed only) against
//! Debian's bridge + host-local, in the same topologies in one run: a node namespace and pods
//! made by each plugin, and two node namespaces joined by a veth pair (direct routing between
//! them, and skiff's VXLAN overlay) with a pod on each. Pod-to-pod TCP throughput (iperf3),
//! request/response over one keep-alive connection (wrk against nginx in the other pod), on one
//! node and across nodes; ADD and DEL latency of the release plugin. Writes
//! target/bench/cni.md.
//!
//! Network safety: every address exists only inside the namespaces this benchmark creates
//! (`skt<pid>-...`), which are removed on drop, also on failure.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Pods made per variant: two carry the traffic, all are timed for ADD and DEL.
const PODS: usize = 40;

/// Every case runs this many times, the rounds interleaved, and the table reports medians: the
/// machine is shared, and interference then hits each case alike instead of one by chance.
const ROUNDS: usize = 3;

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace, deleted on drop.
struct Ns(String);

impl Ns {
    fn new(name: String) -> anyhow::Result<Self> {
        ip(&["netns", "add", &name])?;
        let ns = Self(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        cmd
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// A directory removed on drop (the bpffs pins, the scratch state).
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What the plugin under test is, and how it is configured for a node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    SkiffRedirect,
    SkiffRouted,
    Bridge,
}

impl Kind {
    const ALL: [Self; 3] = [Self::SkiffRedirect, Self::SkiffRouted, Self::Bridge];

    fn name(self) -> &'static str {
        match self {
            Self::SkiffRedirect => "skiff-cni, eBPF redirect",
            Self::SkiffRouted => "skiff-cni, routed",
            Self::Bridge => "bridge + host-local",
        }
    }
}

/// The plugin binaries and the directories every node's state goes under.
struct Setup {
    skiff: PathBuf,
    bridge: PathBuf,
    scratch: PathBuf,
    pins: PathBuf,
}

struct Variant {
    name: &'static str,
    plugin: PathBuf,
    conf: Value,
}

impl Setup {
    /// The plugin and its configuration for the node tagged `node`: pods from `subnet`, and IPAM
    /// state and eBPF pins of its own, so two nodes share nothing (an endpoint map shared by
    /// two nodes would redirect to an interface index of the other node's namespace).
    fn variant(
        &self,
        kind: Kind,
        node: &str,
        subnet: &str,
        mtu: Option<u32>,
    ) -> anyhow::Result<Variant> {
        let dir = self.scratch.join(node).display().to_string();
        let mut conf = match kind {
            Kind::SkiffRedirect | Kind::SkiffRouted => {
                let mut conf = serde_json::json!({"cniVersion": "1.1.0", "type": "skiff-cni",
                    "ipam": {"subnet": subnet, "dataDir": format!("{dir}/ipam")}});
                if kind == Kind::SkiffRedirect {
                    let pins = self.pins.join(node);
                    std::fs::create_dir_all(&pins).context("creating a bpffs directory")?;
                    conf["bpffs"] = serde_json::json!(pins);
                }
                conf
            }
            Kind::Bridge => serde_json::json!({"cniVersion": "1.0.0", "type": "bridge",
                "bridge": "sktbr0", "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "dataDir": format!("{dir}/host-local"),
                    "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}]}}),
        };
        conf["name"] = serde_json::json!(format!("sktbench{node}"));
        if let Some(mtu) = mtu {
            conf["mtu"] = serde_json::json!(mtu);
        }
        Ok(Variant {
            name: kind.name(),
            plugin: if kind == Kind::Bridge {
                self.bridge.clone()
            } else {
                self.skiff.clone()
            },
            conf,
        })
    }
}

/// Pod-to-pod traffic: iperf3 throughput and request/response over one connection.
#[derive(Default)]
struct Traffic {
    gbits: f64,
    rps: f64,
    /// Microseconds.
    rr_p50: f64,
    /// Microseconds.
    rr_p99: f64,
}

/// A wrk latency (`17.00us`, `1.95ms`, `1.01s`) in microseconds.
fn wrk_micros(s: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (s.strip_suffix('s')?, 1e6)
    };
    n.parse::<f64>().ok().map(|n| n * scale)
}

fn micros_cell(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

#[derive(Default)]
struct Row {
    traffic: Traffic,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// Runs the plugin in `node` as a runtime would; returns its stdout and how long it took.
fn cni(
    node: &Ns,
    v: &Variant,
    verb: &str,
    id: &str,
    netns: &str,
) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    let mut child = node
        .command(&v.plugin)
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", v.plugin.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(v.conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} {verb} failed: {stdout}", v.name);
    }
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    Ok((json, took))
}

/// ADD of a pod; returns its address and how long ADD took.
fn add(node: &Ns, v: &Variant, id: &str, pod: &Ns) -> anyhow::Result<(String, Duration)> {
    let (result, took) = cni(node, v, "ADD", id, &pod.path())?;
    let addr = result["ips"][0]["address"]
        .as_str()
        .context("ADD result has no address")?;
    Ok((addr.split('/').next().unwrap_or_default().to_owned(), took))
}

/// A node namespace with IPv4 forwarding on: the bridge plugin with isGateway needs it (skiff-cni
/// turns it on itself).
fn node(name: String) -> anyhow::Result<Ns> {
    let node = Ns::new(name)?;
    let status = node
        .command("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .status()?;
    if !status.success() {
        bail!("enabling forwarding in {}", node.0);
    }
    Ok(node)
}

/// iperf3 and wrk from `client` to nginx and iperf3 servers in `server` at `server_ip`.
fn traffic(
    client: &Ns,
    server: &Ns,
    server_ip: &str,
    scratch: &Path,
    tag: &str,
) -> anyhow::Result<Traffic> {
    let nginx_conf = scratch.join(format!("nginx-{tag}.conf"));
    let tmp = scratch.join("nginx-tmp");
    std::fs::create_dir_all(&tmp)?;
    let t = tmp.display();
    std::fs::write(
        &nginx_conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {s}/nginx-{tag}.pid; error_log {s}/nginx-{tag}.err;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t}; \
             uwsgi_temp_path {t}; scgi_temp_path {t};\n\
             server {{ listen {server_ip}:8080; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            s = scratch.display()
        ),
    )?;
    // `master_process off` above: nginx is this one process, so killing it leaves no orphaned
    // workers behind. nginx and wrk share one CPU: on two, every request waits for the other
    // (idle) vCPU to wake, which made the latency bimodal between runs (about 18 or 60 us for
    // every plugin alike) and measured the VM rather than the path.
    let _nginx = Proc(
        server
            .command("taskset")
            .args(["-c", "0", "nginx", "-c"])
            .arg(&nginx_conf)
            .spawn()?,
    );
    let _iperf = Proc(
        server
            .command("iperf3")
            .args(["-s", "-B", server_ip, "-p", "5201"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut t = Traffic::default();
    let out = client
        .command("iperf3")
        .args(["-c", server_ip, "-p", "5201", "-t", "5", "-J"])
        .output()?;
    let json: Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    t.gbits = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3: {json}"))?
        / 1e9;
    let out = client
        .command("taskset")
        .args([
            "-c",
            "0",
            "wrk",
            "-t1",
            "-c1",
            "-d5s",
            "--latency",
            &format!("http://{server_ip}:8080/"),
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Requests/sec:"), Some(v)) => t.rps = v.parse().unwrap_or(0.0),
            (Some("50%"), Some(v)) => t.rr_p50 = wrk_micros(v).unwrap_or(f64::NAN),
            (Some("99%"), Some(v)) => t.rr_p99 = wrk_micros(v).unwrap_or(f64::NAN),
            _ => {}
        }
    }
    if t.rr_p50.is_nan() || t.rr_p99.is_nan() {
        bail!("wrk printed a latency this does not read: {stdout}");
    }
    if t.rps == 0.0 {
        bail!(
            "wrk to {server_ip} measured nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t)
}

/// One node, [`PODS`] pods: traffic between two of them, ADD and DEL of all.
fn measure(setup: &Setup, kind: Kind, tag: &str) -> anyhow::Result<Row> {
    let pid = std::process::id();
    let v = setup.variant(kind, tag, &format!("10.244.{tag}.0/24"), None)?;
    let node = node(format!("skt{pid}-cb{tag}n"))?;
    ip(&["-n", &node.0, "addr", "add", "198.18.0.1/32", "dev", "lo"])?;
    let pods: Vec<Ns> = (0..PODS)
        .map(|i| Ns::new(format!("skt{pid}-cb{tag}p{i}")))
        .collect::<anyhow::Result<_>>()?;
    let mut row = Row::default();
    let mut ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let (addr, took) = add(&node, &v, &format!("c{i}"), pod)?;
        row.add.push(took);
        ips.push(addr);
    }
    row.traffic = traffic(&pods[0], &pods[1], &ips[1], &setup.scratch, tag)?;
    for (i, pod) in pods.iter().enumerate() {
        let (_, took) = cni(&node, &v, "DEL", &format!("c{i}"), &pod.path())?;
        row.del.push(took);
    }
    Ok(row)
}

/// How the two nodes reach each other's pods.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Each node routes the other's pod CIDR via the other's address (skiff's routes.rs).
    Direct,
    /// A VXLAN device per node set up as skiff's agent does (overlay.rs).
    Vxlan,
}

/// VXLAN as skiff's agent sets it up (userspace/skiff/src/overlay.rs, with VNI 1): device name,
/// port and the outer headers' size.
const VXLAN_DEVICE: &str = "skiff.vxlan";
const VXLAN_PORT: &str = "8472";
const VXLAN_OVERHEAD: u32 = 50;

/// Two nodes joined by a veth pair (`eth0`, 198.18.0.1 and .2, MTU 1500), a pod on each made by
/// the plugin: traffic from the first node's pod to the second's.
fn measure_across(setup: &Setup, kind: Kind, link: Link, tag: &str) -> anyhow::Result<Traffic> {
    let pid = std::process::id();
    let nodes = [
        node(format!("skt{pid}-cx{tag}a"))?,
        node(format!("skt{pid}-cx{tag}b"))?,
    ];
    let addrs = ["198.18.0.1", "198.18.0.2"];
    let cidrs = [format!("10.244.{tag}.0/24"), format!("10.245.{tag}.0/24")];
    // Made inside the first node with its peer straight in the second: the pair never exists
    // in the root namespace.
    ip(&[
        "-n",
        &nodes[0].0,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &nodes[1].0,
    ])?;
    for (n, addr) in nodes.iter().zip(addrs) {
        ip(&[
            "-n",
            &n.0,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &n.0, "link", "set", "eth0", "up"])?;
    }
    for (me, peer) in [(0, 1), (1, 0)] {
        let n = &nodes[me].0;
        match link {
            Link::Direct => ip(&["-n", n, "route", "add", &cidrs[peer], "via", addrs[peer]])?,
            Link::Vxlan => {
                let mac = |i: usize| {
                    let [a, b, c, d] = addrs[i]
                        .parse::<std::net::Ipv4Addr>()
                        .map(|a| a.octets())
                        .unwrap_or_default();
                    format!("02:73:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
                };
                // The VTEP: the network address of the node's pod CIDR.
                let vtep = |i: usize| cidrs[i].replace(".0/24", ".0");
                let mtu = (1500 - VXLAN_OVERHEAD).to_string();
                ip(&[
                    "-n",
                    n,
                    "link",
                    "add",
                    VXLAN_DEVICE,
                    "address",
                    &mac(me),
                    "mtu",
                    &mtu,
                    "type",
                    "vxlan",
                    "id",
                    "1",
                    "local",
                    addrs[me],
                    "dstport",
                    VXLAN_PORT,
                    "nolearning",
                ])?;
                ip(&[
                    "-n",
                    n,
                    "addr",
                    "add",
                    &format!("{}/32", vtep(me)),
                    "dev",
                    VXLAN_DEVICE,
                ])?;
                ip(&["-n", n, "link", "set", VXLAN_DEVICE, "up"])?;
                let status = Command::new("bridge")
                    .args([
                        "-n",
                        n,
                        "fdb",
                        "replace",
                        &mac(peer),
                        "dev",
                        VXLAN_DEVICE,
                        "dst",
                        addrs[peer],
                        "self",
                        "permanent",
                    ])
                    .status()
                    .context("running bridge")?;
                if !status.success() {
                    bail!("bridge fdb replace in {n} failed");
                }
                ip(&[
                    "-n",
                    n,
                    "neigh",
                    "replace",
                    &vtep(peer),
                    "lladdr",
                    &mac(peer),
                    "dev",
                    VXLAN_DEVICE,
                    "nud",
                    "permanent",
                ])?;
                ip(&[
                    "-n",
                    n,
                    "route",
                    "replace",
                    &cidrs[peer],
                    "via",
                    &vtep(peer),
                    "dev",
                    VXLAN_DEVICE,
                    "onlink",
                ])?;
            }
        }
    }
    let mtu = (link == Link::Vxlan).then_some(1500 - VXLAN_OVERHEAD);
    let pods = [
        Ns::new(format!("skt{pid}-cx{tag}ap"))?,
        Ns::new(format!("skt{pid}-cx{tag}bp"))?,
    ];
    let mut variants = Vec::new();
    let mut ips = Vec::new();
    for (i, (n, pod)) in nodes.iter().zip(&pods).enumerate() {
        let v = setup.variant(kind, &format!("x{tag}{i}"), &cidrs[i], mtu)?;
        ips.push(add(n, &v, "c0", pod)?.0);
        variants.push(v);
    }
    let t = traffic(
        &pods[0],
        &pods[1],
        &ips[1],
        &setup.scratch,
        &format!("x{tag}"),
    )?;
    for ((n, pod), v) in nodes.iter().zip(&pods).zip(&variants) {
        cni(n, v, "DEL", "c0", &pod.path())?;
    }
    Ok(t)
}

fn percentile(samples: &[Duration], p: f64) -> f64 {
    let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    percentile_of(ms, p)
}

fn percentile_of(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(idx).copied().unwrap_or(0.0)
}

/// The median of each measure over the rounds (each column on its own).
fn median(rounds: &[Traffic]) -> Traffic {
    let m = |f: fn(&Traffic) -> f64| percentile_of(rounds.iter().map(f).collect(), 0.5);
    Traffic {
        gbits: m(|t| t.gbits),
        rps: m(|t| t.rps),
        rr_p50: m(|t| t.rr_p50),
        rr_p99: m(|t| t.rr_p99),
    }
}

/// One row of the table: a plugin, on one node (`link` none) or across two.
struct Case {
    kind: Kind,
    link: Option<Link>,
    label: &'static str,
    traffic: Vec<Traffic>,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

pub fn build_and_run(root: &Path) -> anyhow::Result<()> {
    crate::step(
        "cargo build --release -p skiff-cni",
        crate::cargo().args(["build", "--release", "-p", "skiff-cni"]),
    )?;
    let target = crate::target_dir(root);
    let skiff = target.join("release/skiff-cni");
    let bridge = PathBuf::from("/usr/lib/cni/bridge");
    if !bridge.exists() {
        bail!(
            "{} is missing (containernetworking-plugins)",
            bridge.display()
        );
    }
    let pid = std::process::id();
    let scratch = Dir(std::env::temp_dir().join(format!("skt{pid}-benchcni")));
    std::fs::create_dir_all(&scratch.0)?;
    let pins = Dir(PathBuf::from(format!("/sys/fs/bpf/skt{pid}-benchcni")));
    std::fs::create_dir_all(&pins.0).context("creating a bpffs directory")?;
    let setup = Setup {
        skiff,
        bridge,
        scratch: scratch.0.clone(),
        pins: pins.0.clone(),
    };
    let mut md = String::from("# cargo xtask bench cni\n\n");
    let _ = writeln!(
        md,
        "Machine: {} cores, kernel {}, load average before the run {}. One node: a node namespace, \
         {PODS} pods per plugin, traffic between two pods of the node. Across nodes: two node \
         namespaces joined by a veth pair (MTU 1500), each routing the other's pod CIDR via the \
         other's address (direct routing, as skiff's agent does; the bridge plugin gets a bridge \
         per node and the same routes), or skiff's VXLAN overlay set up as the agent does (pod \
         MTU 1450); one pod per node, traffic from one to the other. Traffic: iperf3 5 s, wrk 1 \
         thread 1 keep-alive connection 5 s against nginx, both on CPU 0; each the median of {ROUNDS} rounds, \
         interleaved. ADD/DEL (one node only): the release plugin exec'd through nsenter, one at \
         a time, {PODS} per round.\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    md.push_str("| plugin | pods | TCP Gbit/s | req/s (1 conn) | RR p50 | RR p99 | ADD p50 | ADD p99 | DEL p50 | DEL p99 |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut cases: Vec<Case> = Kind::ALL
        .into_iter()
        .map(|k| (k, None, "one node"))
        .chain(
            Kind::ALL
                .into_iter()
                .map(|k| (k, Some(Link::Direct), "across nodes")),
        )
        .chain([(
            Kind::SkiffRedirect,
            Some(Link::Vxlan),
            "across nodes, VXLAN",
        )])
        .map(|(kind, link, label)| Case {
            kind,
            link,
            label,
            traffic: Vec::new(),
            add: Vec::new(),
            del: Vec::new(),
        })
        .collect();
    for round in 1..=ROUNDS {
        // Tags number the cases: each names its namespaces and picks its pod subnets
        // (10.244.TAG.0/24, and 10.245.TAG.0/24 on a second node).
        for (tag, case) in (1..).zip(&mut cases) {
            eprintln!(
                "==> bench cni, round {round}/{ROUNDS}: {}, {}",
                case.kind.name(),
                case.label
            );
            let tag = tag.to_string();
            match case.link {
                None => {
                    let r = measure(&setup, case.kind, &tag)?;
                    case.traffic.push(r.traffic);
                    case.add.extend(r.add);
                    case.del.extend(r.del);
                }
                Some(link) => case
                    .traffic
                    .push(measure_across(&setup, case.kind, link, &tag)?),
            }
        }
    }
    for case in &cases {
        let t = median(&case.traffic);
        let _ = write!(
            md,
            "| {} | {} | {:.1} | {:.0} | {} | {} |",
            case.kind.name(),
            case.label,
            t.gbits,
            t.rps,
            micros_cell(t.rr_p50),
            micros_cell(t.rr_p99),
        );
        if case.add.is_empty() {
            md.push_str(" – | – | – | – |\n");
        } else {
            let _ = writeln!(
                md,
                " {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                percentile(&case.add, 0.5),
                percentile(&case.add, 0.99),
                percentile(&case.del, 0.5),
                percentile(&case.del, 0.99),
            );
        }
    }
    print!("{md}");
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("cni.md"), &md)?;
    eprintln!("==> wrote {}", out.join("cni.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_latencies_read_in_microseconds() {
        assert_eq!(wrk_micros("17.00us"), Some(17.0));
        assert_eq!(wrk_micros("1.95ms"), Some(1950.0));
        assert_eq!(wrk_micros("1.50s"), Some(1_500_000.0));
        assert_eq!(wrk_micros("12"), None, "no unit");
        assert_eq!(wrk_micros("fastus"), None);
    }

    #[test]
    fn medians_are_taken_per_column() {
        let t = |gbits, rps, rr_p50, rr_p99| Traffic {
            gbits,
            rps,
            rr_p50,
            rr_p99,
        };
        let m = median(&[
            t(10.0, 300.0, 20.0, 900.0),
            t(30.0, 100.0, 10.0, 30.0),
            t(20.0, 200.0, 30.0, 40.0),
        ]);
        assert_eq!(
            (m.gbits, m.rps, m.rr_p50, m.rr_p99),
            (20.0, 200.0, 20.0, 40.0)
        );
    }
}
