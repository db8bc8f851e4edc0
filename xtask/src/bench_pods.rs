//! `cargo xtask bench pods`: a node as users meet it (issue 8). The release `skiff up --sandbox`
//! runs one node; against it: pod startup latency (10 pods one at a time, 100 at a steady rate,
//! then 100 created back to back), the time from an EndpointSlice patch sent to the API until the node's pinned
//! service maps hold the new backend, and the node agent's RSS and CPU with the pods and after
//! they are gone. Writes target/bench/pods.md.
//!
//! ```text
//!  this xtask ── kube client (kubeconfig of the data dir) ──▶ skiff server (https, loopback)
//!     │                                                          │ watch
//!     │ reads /sys/fs/bpf/<sandbox>/maps (never writes)          ▼
//!     └────────────────────────────────────────────────────  skiff agent ─ containerd ─ pods
//! ```
//!
//! Network safety: no packet is sent anywhere but to the API server on 127.0.0.1; the endpoint
//! addresses (198.18.0.0/15, the benchmarking range) are only ever written into maps and read
//! back. The sandbox (netns, cgroups, pins, containerd's mounts) is removed by `skiff up` on
//! SIGTERM and again by [`Up`]'s drop, also when the benchmark fails.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use skiff_datapath::{LbTable, PinnedLbMaps};

use crate::bench_api::percentile;

const IMAGE: &str = "docker.io/library/busybox:1.35";
const BURST: usize = 100;
const UNLOADED: usize = 10;
/// Pods created per second in the paced run: Kubernetes' startup SLO is defined at a sustained
/// creation rate, not for a burst; this is a rate the 2-core test machines' runtime keeps up with.
const PACED_RATE: f64 = 4.0;
const PATCHES: usize = 200;
const NAMESPACE: &str = "default";
const LABEL: &str = "skiff-bench=pods";
/// Seconds over which RSS and CPU are sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(30);

/// Targets of issue 8.
const READY_P99_TARGET: Duration = Duration::from_secs(1);
const ENDPOINT_P99_TARGET: Duration = Duration::from_millis(100);
const AGENT_RSS_TARGET_MIB: f64 = 50.0;

pub fn build_and_run(root: &Path) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("bench pods needs root: `skiff up --sandbox` makes a netns, cgroups and pins");
    }
    crate::step(
        "cargo build --release -p skiff",
        crate::cargo().args(["build", "--release", "-p", "skiff"]),
    )?;
    let target = crate::target_dir(root);
    let skiff = target.join("release/skiff");
    let pid = std::process::id();
    let name = format!("skt{pid}-bpods");
    let dir = std::env::temp_dir().join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let before = machine_load(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // From here on a Ctrl-C is caught instead of ending the process, so the guards run.
    let mut stop = runtime.block_on(async { StopSignals::new() })?;
    let mut up = Up::start(&skiff, &name, &dir, port)?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = measure(&up, &skiff, before) => report,
            signal = stop.recv() => {
                Err(anyhow::anyhow!("{signal} received: stopping and cleaning up"))
            }
        }
    });
    let stopped = up.stop();
    let report = report?;
    stopped?;
    let md = report.markdown();
    print!("{md}");
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("pods.md"), &md)?;
    eprintln!("==> wrote {}", out.join("pods.md").display());
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP, delivered to this process as events rather than ending it.
struct StopSignals([tokio::signal::unix::Signal; 3]);

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self([
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ]))
    }

    async fn recv(&mut self) -> &'static str {
        let [int, term, hup] = &mut self.0;
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    }
}

/// `skiff up --sandbox` and everything a failed run could leave: the sandbox's netns, cgroups
/// (in every hierarchy), pins and containerd's mounts under the data dir, and the data dir.
struct Up {
    process: Option<Child>,
    name: String,
    dir: PathBuf,
}

impl Up {
    fn start(skiff: &Path, name: &str, dir: &Path, port: u16) -> anyhow::Result<Self> {
        eprintln!("==> bench pods: skiff up --sandbox --sandbox-name {name}");
        let process = Command::new(skiff)
            .args(["up", "--sandbox", "--sandbox-name", name])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .stdout(std::fs::File::create(dir.join("up.out"))?)
            .stderr(std::fs::File::create(dir.join("up.err"))?)
            .spawn()
            .context("starting skiff up")?;
        let mut up = Self {
            process: Some(process),
            name: name.to_owned(),
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let out = || std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
        while !out().contains("Ctrl-C stops skiff") {
            if let Some(status) = up.child()?.try_wait()? {
                bail!(
                    "skiff up exited ({status}):\n{}\n{}",
                    std::fs::read_to_string(dir.join("up.err")).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("skiff up was not ready in 120 s:\n{}", out());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(up)
    }

    fn child(&mut self) -> anyhow::Result<&mut Child> {
        self.process.as_mut().context("skiff up already stopped")
    }

    fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, as Ctrl-C would: `skiff up` stops the agent, removes the sandbox and stops the
    /// server. Signalled only while it is our unreaped child, so the pid is still its own.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.process.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("skiff up did not stop within 60 s of SIGTERM; killed it");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("skiff up exited with {status} after SIGTERM");
        }
        Ok(())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("==> bench pods: {e:#}");
        }
        skiff_kubelet::cleanup::remove_cgroup_trees(&self.name);
        for m in skiff_kubelet::cleanup::unmount_under(&self.dir) {
            eprintln!("==> bench pods: could not unmount {m}");
        }
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(&self.name));
        if Path::new("/run/netns").join(&self.name).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// When each pod was created and first seen Running and Ready.
#[derive(Default, Clone, Copy)]
struct Seen {
    created: Option<Instant>,
    /// Bound to the node (spec.nodeName set by the scheduler).
    scheduled: Option<Instant>,
    running: Option<Instant>,
    ready: Option<Instant>,
}

type Pods = Arc<Mutex<HashMap<String, Seen>>>;

fn lock(pods: &Pods) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
    // A poisoned map only means a panicking thread held it; the times in it are still valid.
    pods.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records when each benchmark pod is first seen Running and Ready (at the moment the watch
/// event arrives here).
async fn watch_pods(api: Api<Pod>, pods: Pods) {
    let mut events = watcher(api, watcher::Config::default().labels(LABEL))
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        let now = Instant::now();
        let Some(name) = pod.metadata.name.clone() else {
            continue;
        };
        let scheduled = pod.spec.is_some_and(|s| s.node_name.is_some());
        let status = pod.status.unwrap_or_default();
        let running = status.phase.as_deref() == Some("Running");
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let mut pods = lock(&pods);
        let seen = pods.entry(name).or_default();
        if scheduled && seen.scheduled.is_none() {
            seen.scheduled = Some(now);
        }
        if running && seen.running.is_none() {
            seen.running = Some(now);
        }
        if ready && seen.ready.is_none() {
            seen.ready = Some(now);
        }
    }
}

fn pod_manifest(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"skiff-bench": "pods"}},
        "spec": {
            // busybox's sleep as pid 1 ignores SIGTERM: a short grace keeps the deletion quick.
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    }))?)
}

struct Latencies {
    scheduled: Vec<Duration>,
    running: Vec<Duration>,
    ready: Vec<Duration>,
    /// First create sent until the last pod is Ready.
    total: Duration,
    /// First create sent until the last one was sent.
    creating: Duration,
}

fn latencies(pods: &Pods, names: &[String]) -> anyhow::Result<Latencies> {
    let pods = lock(pods);
    let (mut scheduled, mut running, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first, mut last, mut last_create) =
        (None::<Instant>, None::<Instant>, None::<Instant>);
    for name in names {
        let seen = pods.get(name).copied().unwrap_or_default();
        let created = seen
            .created
            .with_context(|| format!("{name} was not created"))?;
        let r = seen.ready.with_context(|| format!("{name} never Ready"))?;
        scheduled.push(
            seen.scheduled
                .unwrap_or(r)
                .saturating_duration_since(created),
        );
        running.push(seen.running.unwrap_or(r).saturating_duration_since(created));
        ready.push(r.saturating_duration_since(created));
        first = Some(first.map_or(created, |f| f.min(created)));
        last = Some(last.map_or(r, |l| l.max(r)));
        last_create = Some(last_create.map_or(created, |l| l.max(created)));
    }
    scheduled.sort();
    running.sort();
    ready.sort();
    let span = |to: Option<Instant>| match (first, to) {
        (Some(f), Some(t)) => t.saturating_duration_since(f),
        _ => Duration::ZERO,
    };
    Ok(Latencies {
        scheduled,
        running,
        ready,
        total: span(last),
        creating: span(last_create),
    })
}

/// Waits until every pod in `names` has been seen Ready.
async fn wait_ready(pods: &Pods, names: &[String], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = {
            let pods = lock(pods);
            names
                .iter()
                .filter(|n| pods.get(*n).is_none_or(|s| s.ready.is_none()))
                .count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{missing} of {} pods not Ready after {timeout:?}",
                names.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_pod(api: &Api<Pod>, pods: &Pods, name: &str) -> anyhow::Result<()> {
    let manifest = pod_manifest(name)?;
    lock(pods).entry(name.to_owned()).or_default().created = Some(Instant::now());
    api.create(&PostParams::default(), &manifest)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    Ok(())
}

/// Resident set size and CPU time (utime + stime, in clock ticks) of a process.
fn rss_and_ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after `state`.
    Ok((rss_kib, ticks(11) + ticks(12)))
}

/// The parent pid and the command line (NUL-separated arguments joined by spaces) of `pid`.
fn parent_and_cmdline(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    Some((ppid, cmdline))
}

/// The child of `parent` whose command line satisfies `matches`.
fn child_process(parent: u32, matches: impl Fn(&str) -> bool) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| parent_and_cmdline(pid).is_some_and(|(pp, cmd)| pp == parent && matches(&cmd)))
}

/// Linux reports CPU time in USER_HZ ticks, 100 per second on every architecture it runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// Busy and total ticks of all CPUs (the `cpu` line of /proc/stat).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is counted in user already.
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The node's processes whose CPU time is reported.
struct Processes {
    agent: u32,
    containerd: u32,
    server: u32,
    /// The node's cgroup (v2): containerd, its shims and runc, the CNI plugin and the pods.
    node_cgroup: PathBuf,
}

/// CPU time of a cgroup (v2), in ticks like /proc's.
fn cgroup_ticks(cgroup: &Path) -> u64 {
    std::fs::read_to_string(cgroup.join("cpu.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |usec| usec / 10_000)
}

impl Processes {
    fn find(up: u32, node: &str) -> anyhow::Result<Self> {
        let arg1 = |want: &'static str| move |cmd: &str| cmd.split(' ').nth(1) == Some(want);
        let agent =
            child_process(up, arg1("agent")).context("no `skiff agent` child of skiff up")?;
        Ok(Self {
            agent,
            containerd: child_process(agent, |cmd| {
                cmd.split(' ')
                    .next()
                    .is_some_and(|argv0| argv0.ends_with("containerd"))
            })
            .context("no containerd child of the agent")?,
            server: child_process(up, arg1("server")).context("no `skiff server` child")?,
            node_cgroup: skiff_datapath::cgroup2_mount()
                .context("no cgroup v2 hierarchy")?
                .join(node),
        })
    }

    /// CPU ticks so far of the agent, containerd, the server, the node's cgroup, and of the
    /// whole machine (busy, and in all).
    fn ticks(&self) -> anyhow::Result<[u64; 6]> {
        let (busy, total) = machine_ticks();
        Ok([
            rss_and_ticks(self.agent)?.1,
            rss_and_ticks(self.containerd)?.1,
            rss_and_ticks(self.server)?.1,
            cgroup_ticks(&self.node_cgroup),
            busy,
            total,
        ])
    }
}

/// Where the CPU went while the burst's pods started.
#[derive(Default)]
struct BurstCpu {
    cores: f64,
    /// Seconds of CPU time: agent, containerd, server, the node's cgroup (containerd included),
    /// the whole machine.
    agent: f64,
    containerd: f64,
    server: f64,
    node: f64,
    machine: f64,
    /// Share of all CPUs' time that was busy.
    busy_percent: f64,
}

impl BurstCpu {
    #[expect(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
    fn between(before: [u64; 6], after: [u64; 6]) -> Self {
        let d = |i: usize| after[i].saturating_sub(before[i]) as f64;
        Self {
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            agent: d(0) / TICKS_PER_SEC,
            containerd: d(1) / TICKS_PER_SEC,
            server: d(2) / TICKS_PER_SEC,
            node: d(3) / TICKS_PER_SEC,
            machine: d(4) / TICKS_PER_SEC,
            busy_percent: d(4) / d(5).max(1.0) * 100.0,
        }
    }
}

#[derive(Clone, Copy)]
struct Usage {
    rss_mib: f64,
    cpu_percent: f64,
}

/// RSS at the end of `IDLE_WINDOW` and the CPU used over it, of each process.
async fn usage(pids: &[u32]) -> anyhow::Result<Vec<Usage>> {
    let before = pids
        .iter()
        .map(|&p| rss_and_ticks(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let secs = started.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(&p, (_, t0))| {
            let (rss, t1) = rss_and_ticks(p)?;
            #[expect(
                clippy::cast_precision_loss,
                reason = "KiB and ticks are far below 2^52"
            )]
            Ok(Usage {
                rss_mib: rss as f64 / 1024.0,
                cpu_percent: (t1.saturating_sub(t0)) as f64 / TICKS_PER_SEC / secs * 100.0,
            })
        })
        .collect()
}

/// Whether every service entry of `ip:port` has exactly the backend `backend`.
fn maps_hold(bpffs: &Path, ip: Ipv4Addr, port: u16, backend: SocketAddrV4) -> bool {
    // Read-only (the agent is writing): a read between its writes sees the published sets.
    let Ok(table) = PinnedLbMaps::open(bpffs)
        .map_err(|e| e.to_string())
        .and_then(|maps| LbTable::inspect(maps).map_err(|e| e.to_string()))
    else {
        return false;
    };
    let services: Vec<_> = table
        .list()
        .into_iter()
        .filter(|s| s.frontend.address == ip && s.frontend.port == port)
        .collect();
    !services.is_empty()
        && services
            .iter()
            .all(|s| s.backends.len() == 1 && s.backends[0].address == backend)
}

/// Polls the maps every 250 µs until they hold `backend`; returns when they first did.
async fn wait_for_backend(
    bpffs: PathBuf,
    ip: Ipv4Addr,
    port: u16,
    backend: SocketAddrV4,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    tokio::task::spawn_blocking(move || {
        PinnedLbMaps::open(&bpffs)
            .with_context(|| format!("opening the maps under {}", bpffs.display()))?;
        let deadline = Instant::now() + timeout;
        loop {
            if maps_hold(&bpffs, ip, port, backend) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("the maps did not hold {backend} for {ip}:{port} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_micros(250));
        }
    })
    .await?
}

fn endpoints(backend: SocketAddrV4) -> serde_json::Value {
    json!([{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}])
}

/// The i-th endpoint address: 198.18.0.0/15 is for benchmarks and never routed.
fn bench_backend(i: usize) -> SocketAddrV4 {
    let hi = u8::try_from(i / 250).unwrap_or(u8::MAX);
    let lo = u8::try_from(i % 250 + 1).unwrap_or(1);
    SocketAddrV4::new(Ipv4Addr::new(198, 18, hi, lo), 8080)
}

/// Patches a selectorless Service's EndpointSlice `PATCHES` times, one at a time, and times
/// each from sending the patch until the node's maps hold the new backend.
async fn endpoint_latency(client: &Client, bpffs: &Path) -> anyhow::Result<Vec<Duration>> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "bench-ep"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))?;
    let svc = services.create(&PostParams::default(), &svc).await?;
    let ip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service got no clusterIP")?
        .parse()?;
    let first = bench_backend(0);
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "bench-ep-1", "labels": {"kubernetes.io/service-name": "bench-ep"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(first),
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    wait_for_backend(bpffs.to_owned(), ip, 80, first, Duration::from_secs(30))
        .await
        .context("the first backend")?;
    let mut took = Vec::with_capacity(PATCHES);
    for i in 1..=PATCHES {
        let backend = bench_backend(i);
        let patch = json!({"endpoints": endpoints(backend)});
        let sent = Instant::now();
        slices
            .patch("bench-ep-1", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("patch {i}"))?;
        let held =
            wait_for_backend(bpffs.to_owned(), ip, 80, backend, Duration::from_secs(10)).await?;
        took.push(held.saturating_duration_since(sent));
    }
    services
        .delete("bench-ep", &DeleteParams::default())
        .await?;
    slices
        .delete("bench-ep-1", &DeleteParams::default())
        .await?;
    took.sort();
    Ok(took)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[derive(Default)]
struct Report {
    unloaded: Option<Latencies>,
    paced: Option<Latencies>,
    burst: Option<Latencies>,
    endpoint: Vec<Duration>,
    burst_cpu: BurstCpu,
    /// Agent and containerd, with the pods running and after they are gone.
    busy: Vec<Usage>,
    idle: Vec<Usage>,
    /// (phase, [`machine_load`] as it began).
    load: Vec<(&'static str, String)>,
}

async fn measure(up: &Up, skiff: &Path, before: String) -> anyhow::Result<Report> {
    let dir = up.dir.clone();
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.join("kubeconfig.yaml"))?;
    let client =
        Client::try_from(Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)?;

    let nodes: Api<Node> = Api::all(client.clone());
    wait_until("the node to be Ready", Duration::from_secs(120), || {
        let nodes = nodes.clone();
        let name = up.name.clone();
        async move {
            nodes.get_opt(&name).await.ok().flatten().is_some_and(|n| {
                n.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }
    })
    .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    wait_until(
        "the default ServiceAccount",
        Duration::from_secs(60),
        || async { accounts.get_opt("default").await.ok().flatten().is_some() },
    )
    .await?;

    eprintln!("==> bench pods: loading {IMAGE}");
    let image = skiff_kubelet::image::build_busybox(&dir, "busybox", IMAGE, &[])
        .context("building a busybox image")?;
    let load = Command::new(skiff)
        .args(["image", "load"])
        .arg(&image)
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .output()?;
    if !load.status.success() {
        bail!(
            "skiff image load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
    }

    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Pods = Arc::default();
    let watch = tokio::spawn(watch_pods(api.clone(), pods.clone()));
    // Time for the watch to list and start watching before the first create: a pod created
    // earlier would still be seen, but only with the list, late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = pods_and_endpoints(&client, &api, &pods, up, before).await;
    watch.abort();
    result
}

async fn pods_and_endpoints(
    client: &Client,
    api: &Api<Pod>,
    pods: &Pods,
    up: &Up,
    before: String,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut load = vec![("before skiff up", before)];
    let pid = up.pid();
    let processes = Processes::find(up.pid(), &up.name)?;

    eprintln!("==> bench pods: {UNLOADED} pods, one at a time");
    load.push(("pods one at a time", machine_load(pid)));
    let unloaded: Vec<String> = (0..UNLOADED).map(|i| format!("solo-{i}")).collect();
    for name in &unloaded {
        create_pod(api, pods, name).await?;
        wait_ready(pods, std::slice::from_ref(name), Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    report.unloaded = Some(latencies(pods, &unloaded)?);

    eprintln!("==> bench pods: {BURST} pods, {PACED_RATE} per second");
    load.push(("pods at a steady rate", machine_load(pid)));
    let paced: Vec<String> = (0..BURST).map(|i| format!("paced-{i:03}")).collect();
    let start = tokio::time::Instant::now();
    for (i, name) in paced.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / PACED_RATE);
        tokio::time::sleep_until(due).await;
        create_pod(api, pods, name).await?;
    }
    wait_ready(pods, &paced, Duration::from_secs(300)).await?;
    report.paced = Some(latencies(pods, &paced)?);
    delete_all(api).await?;

    eprintln!("==> bench pods: {BURST} pods, back to back");
    load.push(("pods back to back", machine_load(pid)));
    let burst: Vec<String> = (0..BURST).map(|i| format!("burst-{i:03}")).collect();
    let before = processes.ticks()?;
    for name in &burst {
        create_pod(api, pods, name).await?;
    }
    wait_ready(pods, &burst, Duration::from_secs(300)).await?;
    report.burst_cpu = BurstCpu::between(before, processes.ticks()?);
    report.burst = Some(latencies(pods, &burst)?);

    eprintln!("==> bench pods: EndpointSlice patch to the node's maps, {PATCHES} times");
    load.push(("EndpointSlice patches", machine_load(pid)));
    let bpffs = Path::new("/sys/fs/bpf").join(&up.name);
    report.endpoint = endpoint_latency(client, &bpffs).await?;

    let (agent, containerd) = (processes.agent, processes.containerd);
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!(
        "==> bench pods: agent and containerd with {} pods, {}s",
        BURST + UNLOADED,
        IDLE_WINDOW.as_secs()
    );
    load.push(("RSS/CPU with pods", machine_load(pid)));
    report.busy = usage(&[agent, containerd]).await?;

    eprintln!("==> bench pods: deleting the pods");
    delete_all(api).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!(
        "==> bench pods: agent and containerd idle, {}s",
        IDLE_WINDOW.as_secs()
    );
    load.push(("RSS/CPU idle", machine_load(pid)));
    report.idle = usage(&[agent, containerd]).await?;
    load.push(("end", machine_load(pid)));
    report.load = load;
    Ok(report)
}

/// Deletes every benchmark pod and waits until they are gone.
async fn delete_all(api: &Api<Pod>) -> anyhow::Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(LABEL),
    )
    .await?;
    wait_until("the pods to be gone", Duration::from_secs(300), || async {
        api.list(&ListParams::default().labels(LABEL))
            .await
            .is_ok_and(|l| l.items.is_empty())
    })
    .await
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// `pid` and its ancestors.
fn lineage(pid: u32) -> Vec<u32> {
    let mut line = vec![pid];
    let mut pid = pid;
    while let Some((parent, _)) = parent_and_cmdline(pid) {
        if parent == 0 || line.contains(&parent) {
            break;
        }
        line.push(parent);
        pid = parent;
    }
    line
}

/// What else keeps the machine busy: the 1-minute load average, other builds (not the
/// `cargo xtask` that started this) and skiff processes that are not this node's (another
/// end-to-end test), as one line for the report.
fn machine_load(up: u32) -> String {
    let me = lineage(std::process::id());
    let (mut builds, mut skiffs) = (0, 0);
    for pid in std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        match comm.trim() {
            "rustc" | "cargo" | "cargo-clippy" if !me.contains(&pid) => builds += 1,
            "skiff" if up == 0 || !lineage(pid).contains(&up) => skiffs += 1,
            _ => {}
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "load {}, {builds} rustc/cargo, {skiffs} other skiff processes",
        load.split_whitespace().next().unwrap_or("?")
    )
}

impl Report {
    fn markdown(&self) -> String {
        let mut md = String::from("# cargo xtask bench pods\n\n");
        let _ = writeln!(
            md,
            "Machine: {} cores, kernel {}. One `skiff up --sandbox` node (release build), \
             busybox `sleep 3600` pods with no readiness probe (Ready = the container started), \
             image present (IfNotPresent); times from sending the create to the pod first seen \
             scheduled / Running / Ready=True by a watch in this process.\n",
            std::thread::available_parallelism().map_or(0, usize::from),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
        );
        md.push_str("Other load on the machine as each phase began:\n\n");
        for (phase, load) in &self.load {
            let _ = writeln!(md, "- {phase}: {load}");
        }
        md.push('\n');
        md.push_str("| measurement | p50 | p90 | p99 | max | target | result |\n");
        md.push_str("|---|---|---|---|---|---|---|\n");
        let mut row = |what: &str, d: &[Duration], target: Option<Duration>| {
            let p99 = percentile(d, 0.99);
            let (t, v) = target.map_or(("-".to_owned(), "-"), |t| {
                (format!("p99 ≤ {}", ms(t)), verdict(p99 <= t))
            });
            let _ = writeln!(
                md,
                "| {what} | {} | {} | {} | {} | {t} | {v} |",
                ms(percentile(d, 0.5)),
                ms(percentile(d, 0.9)),
                ms(p99),
                ms(d.last().copied().unwrap_or_default()),
            );
        };
        for (what, l) in [
            (format!("{UNLOADED} pods one at a time"), &self.unloaded),
            (
                format!("{BURST} pods, {PACED_RATE} per second"),
                &self.paced,
            ),
            (format!("{BURST} pods back to back"), &self.burst),
        ] {
            if let Some(l) = l {
                row(&format!("{what}: create → scheduled"), &l.scheduled, None);
                row(&format!("{what}: create → Running"), &l.running, None);
                row(
                    &format!("{what}: create → Ready"),
                    &l.ready,
                    Some(READY_P99_TARGET),
                );
            }
        }
        row(
            &format!("EndpointSlice patch → node maps ({PATCHES} patches)"),
            &self.endpoint,
            Some(ENDPOINT_P99_TARGET),
        );
        if let Some(b) = &self.burst {
            let c = &self.burst_cpu;
            let _ = writeln!(
                md,
                "\n{BURST} pods back to back: the creates took {:.1} s, the last pod was Ready \
                 {:.1} s after the first create. Meanwhile the machine's {:.0} cores were {:.0}% \
                 busy ({:.1} CPU-s): the agent used {:.1} CPU-s, the API server (with \
                 controllers and scheduler) {:.1}, the node's cgroup {:.1} (containerd {:.1}, \
                 its shims, runc, skiff-cni and the pods {:.1}), everything else (this \
                 benchmark, the kernel's own threads, other processes) {:.1}.",
                b.creating.as_secs_f64(),
                b.total.as_secs_f64(),
                c.cores,
                c.busy_percent,
                c.machine,
                c.agent,
                c.server,
                c.node,
                c.containerd,
                (c.node - c.containerd).max(0.0),
                (c.machine - c.agent - c.server - c.node).max(0.0),
            );
        }
        md.push_str("\n| process | when | RSS | CPU (30 s average) | target | result |\n");
        md.push_str("|---|---|---|---|---|---|\n");
        for (when, usages) in [
            (format!("{} pods running", BURST + UNLOADED), &self.busy),
            ("after the pods are deleted".to_owned(), &self.idle),
        ] {
            for (process, u) in ["skiff agent", "containerd"].iter().zip(usages) {
                let (t, v) = if *process == "skiff agent" {
                    (
                        format!("RSS ≤ {AGENT_RSS_TARGET_MIB:.0} MiB"),
                        verdict(u.rss_mib <= AGENT_RSS_TARGET_MIB),
                    )
                } else {
                    ("(for information)".to_owned(), "-")
                };
                let _ = writeln!(
                    md,
                    "| {process} | {when} | {:.1} MiB | {:.1}% | {t} | {v} |",
                    u.rss_mib, u.cpu_percent
                );
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_backends_are_distinct_and_in_the_benchmark_range() {
        let all: std::collections::BTreeSet<_> = (0..=PATCHES).map(bench_backend).collect();
        assert_eq!(all.len(), PATCHES + 1);
        for b in all {
            assert_eq!(b.ip().octets()[..2], [198, 18]);
            assert_ne!(b.ip().octets()[3], 0);
        }
    }

    #[test]
    fn own_cpu_time_and_rss_are_read() {
        let (rss, _) = rss_and_ticks(std::process::id()).unwrap();
        assert!(rss > 0);
        let (ppid, cmdline) = parent_and_cmdline(std::process::id()).unwrap();
        assert!(ppid > 0 && !cmdline.is_empty());
    }
}
