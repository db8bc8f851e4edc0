//! xtask: skiff's developer commands (`cargo xtask setup | test | up | bench | codegen`).
#![forbid(unsafe_code)]

mod bench;
mod bench_api;
mod bench_api_auth;
mod bench_cni;
#[cfg(feature = "bench")]
mod bench_pods;
mod bench_scheduler;
mod codegen;
mod setup;

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build and the tests need (idempotent; fast when nothing is missing).
    Setup,
    /// The whole suite: fmt check, clippy -D warnings, unit tests and the privileged tests.
    Test {
        /// Leave out the tests that need root (they are `#[ignore]`d for plain `cargo test`).
        #[arg(long)]
        unprivileged: bool,
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Build skiff and run a sandboxed single-node cluster (Ctrl-C stops it and cleans up).
    Up,
    /// Benchmarks (never part of `test`): they need root and take minutes.
    Bench(bench::BenchArgs),
    /// Regenerate committed generated sources.
    Codegen {
        #[command(subcommand)]
        target: CodegenTarget,
    },
}

#[derive(Subcommand)]
enum CodegenTarget {
    /// skiff-api's protobuf field table (control-plane/api/src/protobuf/table.rs), from the
    /// k8s-pb and k8s-openapi sources and the Go types in a kubectl binary.
    Protobuf {
        /// A kubectl (any Go binary linking k8s.io/api) to read Go field types from.
        #[arg(long, default_value = codegen::DEFAULT_GO_BINARY)]
        go_binary: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    env::set_current_dir(&root).context("entering the workspace root")?;
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Test {
            unprivileged,
            test_args,
        } => {
            setup::run()?;
            test(unprivileged, &test_args)
        }
        Cmd::Up => {
            setup::run()?;
            up(&root)
        }
        Cmd::Bench(args) => {
            if !args.setup_done {
                setup::run()?;
            }
            bench::run(&root, &args)
        }
        Cmd::Codegen {
            target: CodegenTarget::Protobuf { go_binary },
        } => codegen::protobuf(&root, &go_binary),
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR").context("run this through `cargo xtask`")?;
    Ok(Path::new(&manifest)
        .parent()
        .context("xtask lives in the workspace root")?
        .to_owned())
}

/// `cargo` with ~/.cargo/bin (where setup installs bpf-linker) first on PATH.
/// Cargo's target directory: CARGO_TARGET_DIR when set (a shared one), else `root`/target.
fn target_dir(root: &Path) -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let mut paths = vec![setup::cargo_home().join("bin")];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    cmd.env(
        "PATH",
        env::join_paths(paths).unwrap_or_else(|_| OsString::from("/usr/bin")),
    );
    cmd
}

/// Every cargo invocation selects the same packages, so features unify the same way and
/// nothing is rebuilt between steps. xtask's `bench` feature is on so that clippy and the unit
/// tests cover the benchmarks (it needs the eBPF build, which these steps do anyway).
const PACKAGES: [&str; 5] = [
    "--workspace",
    "--exclude",
    "skiff-ebpf",
    "--features",
    "xtask/bench",
];

fn step(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("==> {name}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    eprintln!("==> {name}: ok in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn test(unprivileged: bool, test_args: &[String]) -> anyhow::Result<()> {
    let root = is_root();
    if !unprivileged && !root {
        bail!(
            "the privileged tests need root (netns, cgroup v2, bpf()); run as root, or pass \
             --unprivileged to run everything else"
        );
    }
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy -D warnings",
        cargo()
            .arg("clippy")
            .args(PACKAGES)
            .args(["--all-targets", "--", "-D", "warnings"]),
    )?;
    // The end-to-end tests drive the real `skiff` binary.
    step("cargo build", cargo().arg("build").args(PACKAGES))?;
    let mut cmd = cargo();
    cmd.arg("test").args(PACKAGES).arg("--");
    if !unprivileged {
        cmd.arg("--include-ignored");
    }
    cmd.args(test_args);
    step("cargo test", &mut cmd)?;
    if root {
        check_nothing_leaked()?;
    }
    Ok(())
}

/// Tests name what they make `skt<pid>-...` and must remove it, also when they fail. Once the
/// test processes have exited, anything named after a pid that no longer runs was left behind
/// (entries of a live process, such as a benchmark running beside, are not ours to judge).
fn check_nothing_leaked() -> anyhow::Result<()> {
    let mut leaked = Vec::new();
    for dir in [
        "/run/netns",
        "/sys/fs/bpf",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("skt")
                .and_then(|rest| rest.split_once('-'))
                .map(|(pid, _)| pid.to_owned())
            else {
                continue;
            };
            if !Path::new("/proc").join(&pid).exists() {
                leaked.push(entry.path());
            }
        }
    }
    if !leaked.is_empty() {
        bail!("tests left these behind: {leaked:?}");
    }
    Ok(())
}

fn up(root: &Path) -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask up` needs root: the sandbox is a network namespace and a cgroup");
    }
    step("cargo build", cargo().arg("build").args(PACKAGES))?;
    let target = target_dir(root);
    let data_dir = target.join("skiff-up");
    let err = Command::new(target.join("debug/skiff"))
        .args(["up", "--sandbox", "--data-dir"])
        .arg(&data_dir)
        .exec();
    Err(err).context("starting target/debug/skiff")
}

fn is_root() -> bool {
    // The effective uid, read without unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
