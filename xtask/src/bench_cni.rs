//! `cargo xtask bench cni`: skiff-cni (with its eBPF redirect, and routed only) against
//! Debian's bridge + host-local, in the same topology in one run: a node namespace and pods
//! made by each plugin. Pod-to-pod TCP throughput (iperf3), request/response over one
//! keep-alive connection (wrk against nginx in the other pod), and ADD and DEL latency of the
//! release plugin. Writes target/bench/cni.md.
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

struct Variant {
    name: &'static str,
    plugin: PathBuf,
    conf: Value,
}

#[derive(Default)]
struct Row {
    gbits: f64,
    rps: f64,
    rr_p50: String,
    rr_p99: String,
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

fn measure(v: &Variant, scratch: &Path, tag: &str) -> anyhow::Result<Row> {
    let pid = std::process::id();
    let node = Ns::new(format!("skt{pid}-cb{tag}n"))?;
    ip(&["-n", &node.0, "addr", "add", "198.18.0.1/32", "dev", "lo"])?;
    // The bridge plugin with isGateway needs forwarding; skiff-cni turns it on itself.
    node.command("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .status()?;
    let pods: Vec<Ns> = (0..PODS)
        .map(|i| Ns::new(format!("skt{pid}-cb{tag}p{i}")))
        .collect::<anyhow::Result<_>>()?;
    let mut row = Row::default();
    let mut ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let (result, took) = cni(&node, v, "ADD", &format!("c{i}"), &pod.path())?;
        row.add.push(took);
        let addr = result["ips"][0]["address"]
            .as_str()
            .context("ADD result has no address")?;
        ips.push(addr.split('/').next().unwrap_or_default().to_owned());
    }
    let (client, server, server_ip) = (&pods[0], &pods[1], &ips[1]);

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
    // workers behind.
    let _nginx = Proc(server.command("nginx").arg("-c").arg(&nginx_conf).spawn()?);
    let _iperf = Proc(
        server
            .command("iperf3")
            .args(["-s", "-B", server_ip, "-p", "5201"])
            .stdout(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = client
        .command("iperf3")
        .args(["-c", server_ip, "-p", "5201", "-t", "5", "-J"])
        .output()?;
    let json: Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    row.gbits = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3: {json}"))?
        / 1e9;
    let out = client
        .command("wrk")
        .args([
            "-t1",
            "-c1",
            "-d5s",
            "--latency",
            &format!("http://{server_ip}:8080/"),
        ])
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Requests/sec:"), Some(v)) => row.rps = v.parse().unwrap_or(0.0),
            (Some("50%"), Some(v)) => v.clone_into(&mut row.rr_p50),
            (Some("99%"), Some(v)) => v.clone_into(&mut row.rr_p99),
            _ => {}
        }
    }
    for (i, pod) in pods.iter().enumerate() {
        let (_, took) = cni(&node, v, "DEL", &format!("c{i}"), &pod.path())?;
        row.del.push(took);
    }
    Ok(row)
}

fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let idx = ((ms.len() as f64 - 1.0) * p).round() as usize;
    ms.get(idx).copied().unwrap_or(0.0)
}

pub fn build_and_run(root: &Path) -> anyhow::Result<()> {
    crate::step(
        "cargo build --release -p skiff-cni",
        crate::cargo().args(["build", "--release", "-p", "skiff-cni"]),
    )?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
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
    let s = scratch.0.display().to_string();
    let variants = [
        Variant {
            name: "skiff-cni, eBPF redirect",
            plugin: skiff.clone(),
            conf: serde_json::json!({"cniVersion": "1.1.0", "name": "sktbench1", "type": "skiff-cni",
                "bpffs": pins.0, "ipam": {"subnet": "10.244.1.0/24", "dataDir": format!("{s}/ipam")}}),
        },
        Variant {
            name: "skiff-cni, routed",
            plugin: skiff,
            conf: serde_json::json!({"cniVersion": "1.1.0", "name": "sktbench2", "type": "skiff-cni",
                "ipam": {"subnet": "10.244.2.0/24", "dataDir": format!("{s}/ipam")}}),
        },
        Variant {
            name: "bridge + host-local",
            plugin: bridge,
            conf: serde_json::json!({"cniVersion": "1.0.0", "name": "sktbench3", "type": "bridge",
                "bridge": "sktbr0", "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "dataDir": format!("{s}/host-local"),
                    "ranges": [[{"subnet": "10.244.3.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}),
        },
    ];
    let mut md = String::from("# cargo xtask bench cni\n\n");
    let _ = writeln!(
        md,
        "Machine: {} cores, kernel {}. One node namespace, {PODS} pods per plugin; traffic between \
         two pods of the node: iperf3 5 s, wrk 1 thread 1 keep-alive connection 5 s against nginx. \
         ADD/DEL: the release plugin exec'd through nsenter, one at a time.\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    md.push_str("| plugin | TCP Gbit/s | req/s (1 conn) | RR p50 | RR p99 | ADD p50 | ADD p99 | DEL p50 | DEL p99 |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for (i, v) in variants.iter().enumerate() {
        eprintln!("==> bench cni: {}", v.name);
        let r = measure(v, &scratch.0, &i.to_string())?;
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.0} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            v.name,
            r.gbits,
            r.rps,
            r.rr_p50,
            r.rr_p99,
            percentile(&r.add, 0.5),
            percentile(&r.add, 0.99),
            percentile(&r.del, 0.5),
            percentile(&r.del, 0.99),
        );
    }
    print!("{md}");
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("cni.md"), &md)?;
    eprintln!("==> wrote {}", out.join("cni.md").display());
    Ok(())
}
