//! `cargo xtask bench`: benchmarks. They need root, build their own network namespaces and take
//! minutes, so they are never part of `cargo xtask test`.
//!
//! ```text
//!  cargo xtask bench datapath            (plain xtask: no datapath linked, see Cargo.toml)
//!     │ setup::run(), then `cargo build --release -p xtask --features bench`, exec that
//!     ▼
//!  scenario ── topology (netns, veths, nginx)  ── rules (kube-proxy iptables/nft rulesets)
//!     │        skiff (Datapath, LbTable)           wrk (run + parse)   stats (median)
//!     ▼
//!  report (console table, target/bench/datapath.md)  plot (target/bench/datapath.png)
//! ```
//!
//! Network safety: every packet goes to an address that exists only inside namespaces this
//! benchmark creates (see topology.rs); nothing is attached to the root cgroup or to an
//! interface of the root network namespace, and everything made is removed by RAII guards, also
//! on failure and on Ctrl-C.

use std::path::Path;

use clap::{Args, Subcommand};

#[cfg(feature = "bench")]
mod plot;
#[cfg(feature = "bench")]
mod report;
#[cfg(feature = "bench")]
mod rules;
#[cfg(feature = "bench")]
mod scenario;
#[cfg(feature = "bench")]
mod skiff;
#[cfg(feature = "bench")]
mod stats;
#[cfg(feature = "bench")]
mod topology;
#[cfg(feature = "bench")]
mod wrk;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
    /// Setup already ran (set when the plain xtask hands over to its bench-enabled build).
    #[arg(long, hide = true, global = true)]
    pub setup_done: bool,
}

#[derive(Subcommand, Debug)]
enum Which {
    /// Service datapaths (skiff socket LB and tc NodePort, kube-proxy iptables and nftables
    /// rules) against direct traffic: new connections/s, keep-alive req/s, latency and
    /// programming time, at 1, 1,000 and 10,000 services. Writes target/bench/datapath.{md,png}.
    Datapath(DatapathArgs),
    /// The API server: writes at 1/16/64 clients on SQLite and etcd, watch fan-out, big lists,
    /// memory, and the cost of authentication and authorization. Writes target/bench/api.md.
    Api {
        /// Shorter runs and smaller data sets.
        #[arg(long)]
        quick: bool,
    },
    /// The scheduler: 30,000 pods of deployments of various sizes onto 1,000 simulated nodes;
    /// pods/s sustained, time until all are bound, API latency and server RSS meanwhile.
    /// Writes target/bench/scheduler.md.
    Scheduler {
        /// 100 nodes and 2,000 pods.
        #[arg(long)]
        quick: bool,
    },
    /// skiff-cni (eBPF redirect, and routed) against Debian's bridge + host-local: pod-to-pod
    /// TCP throughput and request/response latency on one node and across two (direct routing,
    /// and skiff's VXLAN overlay), ADD and DEL latency. Writes target/bench/cni.md.
    Cni,
    /// A `skiff up --sandbox` node: pod startup latency (10 pods one at a time, 100 back to
    /// back), EndpointSlice patch to the node's maps, the agent's RSS and CPU. Writes
    /// target/bench/pods.md.
    Pods,
}

/// Options of `cargo xtask bench datapath`.
#[derive(Args, Debug, Clone)]
pub struct DatapathArgs {
    /// Fast smoke run: 1 repetition, 2 s runs, 1 and 1,000 services (unless given explicitly).
    #[arg(long)]
    pub quick: bool,
    /// Service counts to measure (10 endpoints each), e.g. `1,1000,10000`.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Seconds per wrk run (default 5, 2 with --quick).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Repetitions of each new-connection run, reported as the median (default 3, 1 with --quick).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Measure only these datapaths beside the direct baseline, e.g. `skiff` or `skiff,nft`
    /// (default: skiff, iptables-legacy, iptables-nft, nft). Targets comparing with a datapath
    /// left out are reported as not measured.
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
}

/// In a debug xtask: builds skiff and xtask in release, runs `xtask bench WHICH` from there and
/// returns true (the benchmark ran); in the release xtask: false (run it here).
pub fn handed_to_release(root: &Path, which: &str, quick: bool) -> anyhow::Result<bool> {
    use anyhow::{Context as _, bail};
    if !cfg!(debug_assertions) {
        return Ok(false);
    }
    crate::step(
        "cargo build --release -p skiff -p xtask",
        crate::cargo().args(["build", "--release", "-p", "skiff", "-p", "xtask"]),
    )?;
    let target = crate::target_dir(root);
    let mut cmd = std::process::Command::new(target.join("release/xtask"));
    cmd.args(["bench", which, "--setup-done"])
        .env("CARGO_MANIFEST_DIR", root.join("xtask"));
    if quick {
        cmd.arg("--quick");
    }
    let status = cmd.status().context("running the release xtask")?;
    if !status.success() {
        bail!("bench {which} failed ({status})");
    }
    Ok(true)
}

/// Runs the benchmark named by `args`, from the workspace root.
#[cfg(feature = "bench")]
pub fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.which {
        Which::Datapath(datapath) => scenario::run(root, datapath),
        Which::Api { quick } => crate::bench_api::build_and_run(root, *quick),
        Which::Scheduler { quick } => crate::bench_scheduler::build_and_run(root, *quick),
        Which::Cni => crate::bench_cni::build_and_run(root),
        Which::Pods => crate::bench_pods::build_and_run(root),
    }
}

/// This xtask was built without the `bench` feature (as `cargo xtask` always is, since it must
/// build before setup has installed bpf-linker): build the bench-enabled xtask and hand over.
#[cfg(not(feature = "bench"))]
pub fn run(root: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    use std::{
        io::BufRead as _,
        os::unix::process::CommandExt as _,
        process::{Command, Stdio},
    };

    use anyhow::{Context as _, bail};

    // The API benchmark links no datapath: the plain xtask runs it itself.
    if let Which::Api { quick } = &args.which {
        return crate::bench_api::build_and_run(root, *quick);
    }
    // Nor does the scheduler benchmark (it re-runs itself from a release xtask).
    if let Which::Scheduler { quick } = &args.which {
        return crate::bench_scheduler::build_and_run(root, *quick);
    }
    // Nor the CNI benchmark: it runs the release plugin binary.
    if let Which::Cni = &args.which {
        return crate::bench_cni::build_and_run(root);
    }
    // The pods benchmark reads the node's pinned maps through the datapath crate, so it hands
    // over too. Release: skiff's programming times are measured in-process, and an unoptimised LbTable
    // would be measuring the compiler, not the datapath.
    eprintln!("==> building xtask --release with the bench feature (it links the datapath)");
    let mut child = crate::cargo()
        .args([
            "build",
            "--release",
            "--package",
            "xtask",
            "--features",
            "bench",
        ])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo build")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut executable = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "xtask"
            && let Some(exe) = msg["executable"].as_str()
        {
            executable = Some(exe.to_owned());
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("building xtask with the bench feature failed ({status})");
    }
    let executable = executable.context("cargo build named no xtask executable")?;
    // Another checkout sharing CARGO_TARGET_DIR may rebuild target/debug/xtask at any time:
    // run a private copy of this build.
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("xtask-bench");
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&executable, &copy)
        .with_context(|| format!("copying {executable} to {}", copy.display()))?;
    let err = Command::new(&copy)
        .args(std::env::args_os().skip(1))
        .arg("--setup-done")
        .exec();
    Err(err).with_context(|| format!("running {}", copy.display()))
}
