//! `cargo xtask bench api`: the API server's write throughput and latency on SQLite and etcd at
//! 1, 16 and 64 concurrent clients, watch fan-out delivery, a list of 10,000 pods, resident
//! memory idle and with 10,000 objects, and what authentication plus authorization cost per
//! request. The server under test is the release `skiff server` binary, driven over HTTP on
//! loopback; etcd is started by the benchmark on loopback ports and stopped after.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
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

struct Server {
    proc: Proc,
    base: String,
}

async fn start_server(bin: &Path, dir: &Path, datastore: &str) -> anyhow::Result<Server> {
    let port = free_port()?;
    let proc = Proc(
        Command::new(bin)
            .args([
                "server",
                "--insecure-loopback",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--datastore",
                datastore,
            ])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting skiff server")?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    for _ in 0..400 {
        if request(&http, "GET", &format!("{base}/healthz"), None)
            .await
            .is_ok_and(|(c, _)| c == 200)
        {
            return Ok(Server { proc, base });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("skiff server did not start")
}

fn client() -> Http {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(128)
        .build_http()
}

async fn request(
    http: &Http,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Bytes)> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header(
            "content-type",
            if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            },
        )
        .body(Full::new(Bytes::from(
            body.map(Value::to_string).unwrap_or_default(),
        )))?;
    let resp = http.request(req).await?;
    let code = resp.status().as_u16();
    Ok((code, resp.into_body().collect().await?.to_bytes()))
}

/// The nearest-rank percentile `p` (0..=1) of `sorted`; zero for no samples. Shared by the
/// benchmarks that report latencies.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Load {
    ops_per_s: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// `clients` tasks doing `op` back to back for `secs` seconds.
async fn load(
    base: &str,
    clients: usize,
    secs: f64,
    update: bool,
    tag: &str,
) -> anyhow::Result<Load> {
    let http = client();
    if update {
        for c in 0..clients {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("u-{tag}-{c}")}, "data": {"n": "0"}});
            request(
                &http,
                "POST",
                &format!("{base}/api/v1/namespaces/default/configmaps"),
                Some(&body),
            )
            .await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base, tag) = (http.clone(), base.to_owned(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut i = 0_u64;
            while Instant::now() < deadline {
                i += 1;
                let started = Instant::now();
                let ok = if update {
                    let body = json!({"data": {"n": i.to_string()}});
                    request(&http, "PATCH", &format!("{base}/api/v1/namespaces/default/configmaps/u-{tag}-{c}"), Some(&body)).await
                } else {
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c-{tag}-{c}-{i}")}, "data": {"v": "x".repeat(256)}});
                    request(&http, "POST", &format!("{base}/api/v1/namespaces/default/configmaps"), Some(&body)).await
                };
                match ok {
                    Ok((200 | 201, _)) => lat.push(started.elapsed()),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    all.sort();
    Ok(Load {
        ops_per_s: all.len() as f64 / secs,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        errors,
    })
}

/// 100 watchers, `events` configmap creations: how long each event took to reach each watcher.
async fn fanout(
    base: &str,
    watchers: usize,
    events: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let http = client();
    let (_, list) = request(
        &http,
        "GET",
        &format!("{base}/api/v1/namespaces/fan/configmaps"),
        None,
    )
    .await?;
    let rv = serde_json::from_slice::<Value>(&list)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_owned();
    let mut tasks = Vec::new();
    let epoch = Instant::now();
    for _ in 0..watchers {
        let (http, url) = (
            http.clone(),
            format!(
                "{base}/api/v1/namespaces/fan/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=120"
            ),
        );
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::get(url).body(Full::new(Bytes::new()))?;
            let mut body = http.request(req).await?.into_body();
            let mut buf = Vec::new();
            let mut delays = Vec::new();
            while delays.len() < events {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let now = epoch.elapsed().as_micros() as u64;
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    // Only the send time matters: finding it costs far less than parsing the
                    // event, which keeps the client from being what is measured.
                    if let Some(sent) = sent_us(&line) {
                        delays.push(Duration::from_micros(now.saturating_sub(sent)));
                    }
                }
            }
            anyhow::Ok(delays)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A steady 1,000 events/s (the watchers see 100,000 deliveries/s), so the number is delivery
    // latency, not the backlog of an overloaded machine.
    let writers = 4;
    let per = events / writers;
    let mut w = Vec::new();
    for k in 0..writers {
        let (http, base) = (http.clone(), base.to_owned());
        w.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(4));
            for i in 0..per {
                tick.tick().await;
                let sent = epoch.elapsed().as_micros().to_string();
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("f-{k}-{i}")}, "data": {"sent_us": sent}});
                let _ = request(&http, "POST", &format!("{base}/api/v1/namespaces/fan/configmaps"), Some(&body)).await;
            }
        }));
    }
    for t in w {
        t.await?;
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .map(|r| r.unwrap_or_else(|e| Err(e.into())))
        {
            all.extend(d);
        }
    }
    all.sort();
    Ok((percentile(&all, 0.5), percentile(&all, 0.99), all.len()))
}

/// The `sent_us` value in an event line.
fn sent_us(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = &text[text.find("\"sent_us\":\"")? + 11..];
    rest[..rest.find('"')?].parse().ok()
}

struct Etcd {
    _proc: Proc,
    endpoint: String,
}

fn start_etcd(dir: &Path) -> anyhow::Result<Etcd> {
    let (client, peer) = (free_port()?, free_port()?);
    let proc = Proc(
        Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("bench=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (cargo xtask setup installs etcd-server)")?,
    );
    std::thread::sleep(Duration::from_secs(1));
    Ok(Etcd {
        _proc: proc,
        endpoint: format!("127.0.0.1:{client}"),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Builds skiff in release mode and benchmarks its API server.
pub fn build_and_run(root: &Path, quick: bool) -> anyhow::Result<()> {
    // The authentication cost is measured in this process: a debug build would measure the
    // compiler's unoptimised code, not the server's.
    if crate::bench::handed_to_release(root, "api", quick)? {
        return Ok(());
    }
    let target = crate::target_dir(root);
    run(root, &target.join("release/skiff"), quick)
}

fn run(root: &Path, bin: &Path, quick: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(root, bin, quick))
}

async fn run_async(root: &Path, bin: &Path, quick: bool) -> anyhow::Result<()> {
    let secs = if quick { 2.0 } else { 5.0 };
    let scratch: PathBuf =
        std::env::temp_dir().join(format!("skiff-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut md = String::from("# cargo xtask bench api\n\n");
    let _ = writeln!(
        md,
        "Machine: {} cores, kernel {}. Server: release `skiff server --insecure-loopback` over HTTP/1.1 on loopback, ConfigMaps of ~300 bytes.\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    md.push_str("| datastore | op | clients | ops/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|\n");
    let etcd = start_etcd(&scratch)?;
    let mut target_met = None;
    for (label, spec) in [
        ("sqlite", "sqlite".to_owned()),
        ("etcd", format!("etcd://{}", etcd.endpoint)),
    ] {
        let dir = scratch.join(label);
        std::fs::create_dir_all(&dir)?;
        let server = start_server(bin, &dir, &spec).await?;
        for update in [false, true] {
            for clients in [1, 16, 64] {
                let tag = format!("{label}{clients}{update}");
                let r = load(&server.base, clients, secs, update, &tag).await?;
                let op = if update { "update" } else { "create" };
                eprintln!(
                    "==> bench api: {label} {op} x{clients}: {:.0}/s p50 {} p99 {}",
                    r.ops_per_s,
                    ms(r.p50),
                    ms(r.p99)
                );
                let _ = writeln!(
                    md,
                    "| {label} | {op} | {clients} | {:.0} | {} | {} | {} |",
                    r.ops_per_s,
                    ms(r.p50),
                    ms(r.p99),
                    r.errors
                );
                if label == "sqlite" && !update && clients == 16 {
                    target_met = Some(r.ops_per_s >= 2000.0 && r.p99 <= Duration::from_millis(50));
                }
            }
        }
    }
    drop(etcd);

    // Fan-out, big lists and memory on SQLite.
    let dir = scratch.join("sqlite-mem");
    std::fs::create_dir_all(&dir)?;
    let server = start_server(bin, &dir, "sqlite").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(server.proc.0.id());
    let http = client();
    request(
        &http,
        "POST",
        &format!("{}/api/v1/namespaces", server.base),
        Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fan"}})),
    )
    .await?;
    let events = if quick { 2000 } else { 10_000 };
    let (f50, f99, delivered) = fanout(&server.base, 100, events).await?;
    eprintln!(
        "==> bench api: watch fan-out 100 x {events}: p50 {} p99 {} ({delivered} deliveries)",
        ms(f50),
        ms(f99)
    );
    let pods = if quick { 2000 } else { 10_000 };
    let mut w = Vec::new();
    for k in 0..16 {
        let (http, base) = (http.clone(), server.base.clone());
        w.push(tokio::spawn(async move {
            for i in (k..pods).step_by(16) {
                let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
                let _ = request(&http, "POST", &format!("{base}/api/v1/namespaces/default/pods"), Some(&body)).await;
            }
        }));
    }
    for t in w {
        t.await?;
    }
    let started = Instant::now();
    let (_, list) = request(
        &http,
        "GET",
        &format!("{}/api/v1/namespaces/default/pods", server.base),
        None,
    )
    .await?;
    let list_json = started.elapsed();
    let count = serde_json::from_slice::<Value>(&list)?["items"]
        .as_array()
        .map_or(0, Vec::len);
    let started = Instant::now();
    let req = hyper::Request::get(format!("{}/api/v1/namespaces/default/pods", server.base))
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Full::new(Bytes::new()))?;
    http.request(req).await?.into_body().collect().await?;
    let list_table = started.elapsed();
    let loaded = rss_kib(server.proc.0.id());
    // A GET as a client sees it (HTTP on loopback, SQLite behind), the base the authentication
    // and authorization cost is set against.
    let mut gets = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let started = Instant::now();
        request(
            &http,
            "GET",
            &format!("{}/api/v1/namespaces/default/pods/p-1", server.base),
            None,
        )
        .await?;
        gets.push(started.elapsed());
    }
    gets.sort();
    let get_p50 = percentile(&gets, 0.5);
    let auth = crate::bench_api_auth::measure().await?;

    let _ = writeln!(md, "\n| measure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| watch fan-out: 100 watchers x {events} events, delivery p50 / p99 | {} / {} ({delivered} deliveries) |",
        ms(f50),
        ms(f99)
    );
    let _ = writeln!(md, "| list of {count} pods (JSON) | {} |", ms(list_json));
    let _ = writeln!(
        md,
        "| list of {count} pods (Table, as kubectl get) | {} |",
        ms(list_table)
    );
    let _ = writeln!(md, "| RSS idle | {:.1} MiB |", idle as f64 / 1024.0);
    let _ = writeln!(
        md,
        "| RSS with {count} pods + {} configmaps | {:.1} MiB |",
        events,
        loaded as f64 / 1024.0
    );
    let share = 100.0 * auth.0.as_secs_f64() / get_p50.as_secs_f64().max(1e-9);
    let _ = writeln!(md, "| GET of one pod over HTTP, p50 | {} |", ms(get_p50));
    let _ = writeln!(
        md,
        "| authentication + authorization per request (token + RBAC, measured in process) | {} ({share:.1}% of that GET; the in-process GET alone takes {}) |",
        ms(auth.0),
        ms(auth.1)
    );
    let _ = writeln!(
        md,
        "\nTargets: >= 2,000 writes/s with p99 <= 50 ms at 16 clients on SQLite: {}; idle RSS <= 60 MB: {} ({:.1} MiB); auth cost < 5% of request latency: {}.",
        match target_met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        },
        if idle <= 60 * 1024 { "met" } else { "MISSED" },
        idle as f64 / 1024.0,
        if share < 5.0 { "met" } else { "MISSED" }
    );
    eprintln!("{md}");
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("api.md"), &md)?;
    eprintln!("==> bench api: wrote {}", out.join("api.md").display());
    drop(server);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_ranks() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&d, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
