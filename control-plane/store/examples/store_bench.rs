//! Write throughput and latency at 1, 16 and 64 concurrent writers, on SQLite (in a temp
//! dir) and on a single-member etcd started on loopback. Run it in release mode:
//!
//! ```sh
//! cargo run -p skiff-store --release --example store_bench
//! ```
//!
//! Each writer does compare-and-swap updates of its own key (like status updates), 1 KiB
//! values, for a fixed time. An example rather than a test: `cargo xtask test` runs ignored
//! tests too, and a benchmark means nothing in a debug build.

// The tests' temp dir and etcd harness.
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Etcd, TempDir};
use skiff_store::{SqliteConfig, SqliteStore, Store};

const RUN_FOR: Duration = Duration::from_secs(4);
const CONCURRENCY: [usize; 3] = [1, 16, 64];

struct Stats {
    writes: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn run<S: Store + Clone>(store: &S, run: &str, writers: usize) -> Stats {
    let started = Instant::now();
    let deadline = started + RUN_FOR;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let key = format!("/bench/{run}/{w:03}");
        tasks.push(tokio::spawn(async move {
            let value = vec![0x42; 1024];
            let mut latencies = Vec::new();
            let t = Instant::now();
            let mut kv = store.create(&key, value.clone()).await.unwrap();
            latencies.push(t.elapsed());
            while Instant::now() < deadline {
                let t = Instant::now();
                kv = store
                    .update(&key, value.clone(), kv.mod_revision)
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Stats {
        writes: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        max: *latencies.last().unwrap(),
    }
}

fn report(backend: &str, writers: usize, stats: &Stats) {
    eprintln!(
        "{backend:<7} writers={writers:<3} writes={:<7} writes/s={:<8.0} p50={:>7.2}ms p99={:>7.2}ms max={:>7.2}ms",
        stats.writes,
        stats.per_second,
        stats.p50.as_secs_f64() * 1e3,
        stats.p99.as_secs_f64() * 1e3,
        stats.max.as_secs_f64() * 1e3,
    );
}

/// Read latencies over 10,000 keys of 1 KiB: point gets, and 500-key list pages at the latest
/// revision and at an older one (after 2,000 updates), as a paginated list continues.
async fn reads<S: Store>(backend: &str, store: &S) {
    const KEYS: usize = 10_000;
    let value = vec![0x17; 1024];
    for k in 0..KEYS {
        store
            .create(&format!("/reads/{k:05}"), value.clone())
            .await
            .unwrap();
    }
    let old = store.current_revision().await.unwrap();
    for k in 0..2000 {
        let key = format!("/reads/{:05}", k * 5);
        let kv = store.get(&key, None).await.unwrap().unwrap();
        store
            .update(&key, value.clone(), kv.mod_revision)
            .await
            .unwrap();
    }
    let time = |samples: &mut Vec<Duration>| {
        samples.sort_unstable();
        let p50 = samples[samples.len() / 2];
        let p99 = samples[samples.len() * 99 / 100];
        format!(
            "p50={:>6.2}ms p99={:>6.2}ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        )
    };
    let mut gets = Vec::new();
    for k in 0..2000 {
        let t = Instant::now();
        store
            .get(&format!("/reads/{:05}", (k * 7) % KEYS), None)
            .await
            .unwrap()
            .unwrap();
        gets.push(t.elapsed());
    }
    eprintln!("{backend:<7} get latest              {}", time(&mut gets));
    for (name, revision) in [("latest", None), ("old revision", Some(old))] {
        let mut pages = Vec::new();
        for _ in 0..5 {
            let mut after: Option<String> = None;
            loop {
                let t = Instant::now();
                let page = store
                    .list("/reads/", revision, after.as_deref(), Some(500))
                    .await
                    .unwrap();
                pages.push(t.elapsed());
                if !page.more {
                    break;
                }
                after = page.items.last().map(|kv| kv.key.clone());
            }
        }
        eprintln!("{backend:<7} list 500 at {name:<12} {}", time(&mut pages));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for writers in CONCURRENCY {
        let dir = TempDir::new("bench");
        let store = SqliteStore::open(dir.path().join("state.db"), SqliteConfig::default())
            .await
            .unwrap();
        let stats = run(&store, &format!("sqlite-{writers}"), writers).await;
        report("sqlite", writers, &stats);
    }
    {
        let dir = TempDir::new("bench-reads");
        let store = SqliteStore::open(dir.path().join("state.db"), SqliteConfig::default())
            .await
            .unwrap();
        reads("sqlite", &store).await;
    }
    let Some(etcd) = Etcd::start(1) else { return };
    let store = etcd.connect("").await;
    for writers in CONCURRENCY {
        let stats = run(&store, &format!("etcd-{writers}"), writers).await;
        report("etcd", writers, &stats);
    }
    reads("etcd", &store).await;
}
