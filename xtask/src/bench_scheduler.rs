//! `cargo xtask bench scheduler`: skiff's scheduler placing 30,000 pods (deployments of various
//! sizes, each pod with a controller ownerReference to a made-up ReplicaSet) on 1,000 simulated
//! nodes (Node objects with allocatable resources; no kubelets, no controllers). The server is
//! the release `skiff server` in a subprocess; the scheduler runs in this (release) process, as
//! an API client like any other. The pods are created first, then the scheduler is started and
//! the backlog timed: sustained pods/s (10% to 90% bound), time until all are bound, a probe
//! GET's latency every 50 ms meanwhile, and the server's RSS. Writes target/bench/scheduler.md.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;

use crate::bench_api::percentile;

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

struct Size {
    nodes: usize,
    pods: usize,
}

/// Builds skiff and a release xtask (the scheduler under test runs in this process, and a
/// debug build would measure the compiler), then runs the benchmark in that xtask.
pub fn build_and_run(root: &Path, quick: bool) -> anyhow::Result<()> {
    let target = crate::target_dir(root);
    if crate::bench::handed_to_release(root, "scheduler", quick)? {
        return Ok(());
    }
    // The plain xtask built skiff together with this release xtask, just before handing over.
    let size = if quick {
        Size {
            nodes: 100,
            pods: 2_000,
        }
    } else {
        Size {
            nodes: 1_000,
            pods: 30_000,
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(root, &target.join("release/skiff"), &size, quick))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Deployment sizes cycling through small to large until `pods` are placed.
fn deployments(pods: usize) -> Vec<usize> {
    const SIZES: [usize; 10] = [1, 3, 5, 10, 25, 50, 100, 250, 500, 1000];
    let mut out = Vec::new();
    let mut left = pods;
    for &s in SIZES.iter().cycle() {
        if left == 0 {
            break;
        }
        let s = s.min(left);
        out.push(s);
        left -= s;
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run(root: &Path, bin: &Path, size: &Size, quick: bool) -> anyhow::Result<()> {
    let scratch =
        std::env::temp_dir().join(format!("skiff-bench-scheduler-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = run_in(root, bin, size, quick, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn run_in(
    root: &Path,
    bin: &Path,
    size: &Size,
    quick: bool,
    scratch: &Path,
) -> anyhow::Result<()> {
    let port = free_port()?;
    let server = Proc(
        Command::new(bin)
            .args([
                "server",
                "--insecure-loopback",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--datastore",
                "sqlite",
                // No controllers: the garbage collector would delete the pods (their ReplicaSets
                // are made up) and node lifecycle would taint the nodes (no kubelet renews their
                // Leases); a scheduler in the server would race the one measured here.
                "--disable-controllers",
                "--disable-scheduler",
            ])
            .arg("--data-dir")
            .arg(scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting skiff server")?,
    );
    let pid = server.0.id();
    let client = Client::try_from(Config::new(format!("http://127.0.0.1:{port}").parse()?))?;
    let mut up = false;
    for _ in 0..400 {
        if client.apiserver_version().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !up {
        bail!("skiff server did not start");
    }
    let rss_idle = rss_kib(pid);

    eprintln!("==> bench scheduler: creating {} nodes", size.nodes);
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    stream::iter(0..size.nodes)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("node-{i:04}");
                let node = json!({"metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}}});
                nodes
                    .create(&PostParams::default(), &serde_json::from_value(node)?)
                    .await?;
                let status = json!({"status": {
                    "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
        .context("creating nodes")?;
    let node_secs = started.elapsed().as_secs_f64();

    let sizes = deployments(size.pods);
    eprintln!(
        "==> bench scheduler: creating {} pods in {} deployments (scheduler not running yet)",
        size.pods,
        sizes.len()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut specs = Vec::with_capacity(size.pods);
    for (d, &n) in sizes.iter().enumerate() {
        // Requests vary per deployment: 100m..=400m CPU, 128..=512 MiB.
        let cpu = format!("{}m", 100 * (1 + d % 4));
        let memory = format!("{}Mi", 128 * (1 + d % 4));
        for p in 0..n {
            specs.push(json!({
                "metadata": {"name": format!("d{d}-{p}"), "namespace": "default",
                    "labels": {"app": format!("d{d}"), "pod-template-hash": "bench"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": format!("d{d}-bench"), "uid": format!("00000000-0000-4000-8000-{d:012}"),
                        "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}));
        }
    }
    let started = Instant::now();
    stream::iter(specs)
        .map(|spec| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &serde_json::from_value(spec)?)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await
        .context("creating pods")?;
    let create_secs = started.elapsed().as_secs_f64();
    let rss_loaded = rss_kib(pid);

    // Count bindings as the watch reports them (the scheduler knows its decisions earlier; what
    // matters is when the API says the pod is bound).
    let total = size.pods;
    let bound_times = Arc::new(std::sync::Mutex::new(Vec::<Duration>::with_capacity(total)));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let counter = {
        let bound_times = Arc::clone(&bound_times);
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            let mut stream =
                std::pin::pin!(watcher(pods, watcher::Config::default()).touched_objects());
            let mut done_tx = Some(done_tx);
            while let Some(Ok(pod)) = stream.next().await {
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                    && seen.insert(pod.metadata.uid.clone().unwrap_or_default())
                {
                    let mut times = bound_times
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    times.push(t0.elapsed());
                    if times.len() >= total
                        && let Some(tx) = done_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
            }
        })
    };
    // A probe GET every 50 ms, as a user's kubectl would see the API meanwhile.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let probe = {
        let nodes = nodes.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut rss_peak = 0;
            loop {
                let started = Instant::now();
                if nodes.get("node-0000").await.is_ok() {
                    latencies.push(started.elapsed());
                }
                rss_peak = rss_peak.max(rss_kib(pid));
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            (latencies, rss_peak)
        })
    };

    eprintln!("==> bench scheduler: starting the scheduler");
    let scheduler = tokio::spawn(skiff_scheduler::run(
        client.clone(),
        skiff_scheduler::Options::default(),
    ));
    let timeout = Duration::from_secs(if quick { 60 } else { 600 });
    let finished = tokio::time::timeout(timeout, done_rx).await.is_ok();
    let all_bound_after = t0.elapsed();
    let bench_rss = rss_kib(std::process::id());
    // Let the last Scheduled events land before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let (mut latencies, rss_peak) = probe.await?;
    scheduler.abort();
    counter.abort();
    latencies.sort();
    let times = bound_times
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let bound = times.len();
    let at = |fraction: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "an index within 0..total"
        )]
        let i = ((total as f64 * fraction) as usize).min(bound.saturating_sub(1));
        times.get(i).copied().unwrap_or_default()
    };
    let (t10, t90) = (at(0.1), at(0.9));
    let sustained = if t90 > t10 {
        total as f64 * 0.8 / (t90 - t10).as_secs_f64()
    } else {
        0.0
    };
    let first = times.first().copied().unwrap_or_default();
    // Per-second throughput (the slowest full second between 10% and 90%).
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for t in &times {
        *per_second.entry(t.as_secs()).or_default() += 1;
    }
    let steady: Vec<usize> = per_second
        .range(t10.as_secs() + 1..t90.as_secs())
        .map(|(_, n)| *n)
        .collect();
    let slowest_second = steady.iter().min().copied();

    // Correctness: every node within its allocatable, and how evenly the pods spread.
    let list = pods.list(&ListParams::default()).await?;
    let mut per_node: HashMap<String, (usize, i64)> = HashMap::new();
    for p in &list.items {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            let cpu: i64 = p
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu"))
                .map(|q| q.0.trim_end_matches('m').parse::<i64>().unwrap_or(0))
                .sum();
            let e = per_node.entry(node).or_default();
            e.0 += 1;
            e.1 += cpu;
        }
    }
    let bound_in_list: usize = per_node.values().map(|(n, _)| *n).sum();
    let unbound: Vec<&str> = list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .filter_map(|p| p.metadata.name.as_deref())
        .take(5)
        .collect();
    if !unbound.is_empty() {
        eprintln!("==> bench scheduler: unbound pods include {unbound:?}");
    }
    let overcommitted = per_node
        .values()
        .filter(|(n, cpu)| *n > 110 || *cpu > 32_000)
        .count();
    let counts: Vec<usize> = per_node.values().map(|(n, _)| *n).collect();
    let (min_pods, max_pods) = (
        counts.iter().min().copied().unwrap_or(0),
        counts.iter().max().copied().unwrap_or(0),
    );
    // The final list materialises every pod in the server once more: measured apart.
    let rss_end = rss_kib(pid);
    drop(server);

    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let mut md = String::from("# cargo xtask bench scheduler\n\n");
    let _ = writeln!(
        md,
        "Machine: {} cores, kernel {}. Server: release `skiff server --insecure-loopback --datastore sqlite --disable-controllers --disable-scheduler` \
         (subprocess); scheduler: `skiff_scheduler::run` with default options (32 bindings in flight, \
         Scheduled events on) in the release bench process, talking HTTP/1.1 to the server on loopback.\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(
        md,
        "Workload: {} nodes (32 CPU, 128Gi, 110 pods each, 3 zones), {} pods in {} deployments of 1 to 1,000 \
         pods (100m-400m CPU, 128-512Mi each, a controller ownerReference per deployment). Pods are created \
         first; the scheduler then starts and works off the backlog (its initial list included).\n",
        size.nodes,
        size.pods,
        sizes.len()
    );
    md.push_str("| measure | value |\n|---|---|\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(md, "| {k} | {v} |");
    };
    row("nodes created", format!("{node_secs:.1} s"));
    row(
        "pods created (64 clients)",
        format!(
            "{create_secs:.1} s ({:.0}/s)",
            size.pods as f64 / create_secs
        ),
    );
    row(
        "pods bound (seen bound through the watch / in the final list)",
        format!(
            "{bound} / {bound_in_list} of {total}{}",
            if finished { "" } else { " (TIMED OUT)" }
        ),
    );
    row(
        "first binding after scheduler start",
        format!("{:.2} s", first.as_secs_f64()),
    );
    row(
        "time until all bound (from scheduler start)",
        format!("{:.1} s", all_bound_after.as_secs_f64()),
    );
    row(
        "sustained throughput (10% to 90% bound)",
        format!("{sustained:.0} pods/s"),
    );
    row(
        "overall throughput (first to last binding)",
        format!(
            "{:.0} pods/s",
            bound as f64
                / (times.last().copied().unwrap_or_default() - first)
                    .as_secs_f64()
                    .max(1e-9)
        ),
    );
    row(
        "slowest full second between 10% and 90%",
        slowest_second.map_or_else(|| "n/a (run too short)".to_owned(), |n| format!("{n} pods")),
    );
    row(
        "probe GET (one node, every 50 ms) during the run: p50 / p99 / max",
        format!(
            "{} / {} / {} ({} probes)",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
            latencies.len()
        ),
    );
    row(
        "server RSS: idle / nodes+pods created / peak while scheduling / after listing all pods",
        format!(
            "{} / {} / {} / {}",
            mib(rss_idle),
            mib(rss_loaded),
            mib(rss_peak),
            mib(rss_end)
        ),
    );
    row(
        "bench process RSS when all were bound (the scheduler, plus the watch counting bindings)",
        mib(bench_rss),
    );
    row(
        "pods per node min / max",
        format!("{min_pods} / {max_pods}"),
    );
    row(
        "nodes over allocatable (pods or CPU)",
        overcommitted.to_string(),
    );
    let target_met = finished && sustained >= 500.0 && overcommitted == 0;
    let _ = writeln!(
        md,
        "\nTarget: >= 500 pods/s sustained on this machine: {}.",
        if target_met { "met" } else { "MISSED" }
    );
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("scheduler.md"), &md)?;
    eprintln!("{md}");
    eprintln!("==> bench scheduler: wrote target/bench/scheduler.md");
    if !finished {
        bail!("only {bound} of {total} pods were bound within {timeout:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_add_up() {
        let d = deployments(30_000);
        assert_eq!(d.iter().sum::<usize>(), 30_000);
        assert!(d.contains(&1) && d.contains(&1000));
        assert_eq!(deployments(7), [1, 3, 3]);
    }
}
