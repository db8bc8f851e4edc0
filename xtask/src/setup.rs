//! `cargo xtask setup`: everything the build and the tests need on a fresh machine of the
//! project's kind (Debian 12, rustup with stable and nightly). Each step checks first and does
//! nothing when its work is done, so a second run takes seconds.

use std::{env, fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, bail};

/// Debian packages the project and its tests use. Later issues add theirs here.
const APT_PACKAGES: &[&str] = &[
    // network namespaces, veths, tc, nsenter
    "iproute2",
    "util-linux",
    // container runtimes and image tools for the kubelet and CNI tests
    "containerd",
    "runc",
    "busybox-static",
    "umoci",
    "skopeo",
    "docker-registry",
    // Debian's CNI plugins (chained with skiff-cni in tests; the bridge baseline) and podman,
    // a third-party runtime that execs skiff-cni through its CNI backend
    "containernetworking-plugins",
    "podman",
    // etcd for the HA store
    "etcd-server",
    "etcd-client",
    // kube-proxy baselines and conntrack inspection
    "iptables",
    "nftables",
    "conntrack",
    // load tools for the benchmarks, the HTTP server they load, and the font of their charts
    "wrk",
    "iperf3",
    "nginx",
    "fonts-dejavu-core",
    // eBPF inspection
    "bpftool",
    // protoc and the well-known .proto files (k8s-cri and etcd-client build scripts)
    "protobuf-compiler",
    "libprotobuf-dev",
    "curl",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The Python Kubernetes client the API tests drive skiff with, as its users would.
const PYTHON_KUBERNETES: &str = "kubernetes==37.0.2";
const NIGHTLY: &str = "nightly";

pub fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    bpffs_mounted()?;
    python_client()?;
    eprintln!(
        "==> setup: ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn apt_packages() -> anyhow::Result<()> {
    // dpkg-query exits non-zero when any package is unknown; its output still lists the rest.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(APT_PACKAGES)
        .output()
        .context("running dpkg-query (is this a Debian machine?)")?;
    let listed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !listed.lines().any(|l| l == format!("{pkg} installed")))
        .collect();
    if missing.is_empty() {
        eprintln!("==> setup: {} Debian packages present", APT_PACKAGES.len());
        return Ok(());
    }
    eprintln!("==> setup: installing {}", missing.join(" "));
    if !crate::is_root() {
        bail!(
            "missing Debian packages; as root run: apt-get update && apt-get install -y \
             --no-install-recommends {}",
            missing.join(" ")
        );
    }
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            // Without an init system invoke-rc.d would still start nginx, containerd and etcd
            // from their postinst scripts; tests and benchmarks start their own, sandboxed.
            .env("RUNLEVEL", "1")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(
        output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--print", "sysroot"]))?
            .trim(),
    ))
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if nightly_sysroot().is_err() {
        eprintln!("==> setup: installing the {NIGHTLY} toolchain");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.exists() {
        eprintln!("==> setup: {NIGHTLY} rust-src present");
        return Ok(());
    }
    eprintln!("==> setup: adding rust-src to {NIGHTLY} (-Z build-std=core needs it)");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// bpf-linker is built against the nightly toolchain's own libLLVM, so it must be rebuilt
/// whenever that toolchain changes: `rustc +nightly -vV` is the cache key.
fn bpf_linker() -> anyhow::Result<()> {
    let home = cargo_home();
    let state = home.join("skiff");
    let stamp = state.join("bpf-linker.stamp");
    let linker = home.join("bin/bpf-linker");
    let rustc_vv = output(Command::new("rustup").args(["run", NIGHTLY, "rustc", "-vV"]))?;
    let key = format!("bpf-linker {BPF_LINKER_VERSION}\n{rustc_vv}");
    let works = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works && fs::read_to_string(&stamp).is_ok_and(|s| s == key) {
        eprintln!("==> setup: bpf-linker {BPF_LINKER_VERSION} present for this nightly");
        return Ok(());
    }

    let major = rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc +nightly -vV` shows no LLVM version")?
        .to_owned();
    let lib = nightly_sysroot()?.join("lib");
    let llvm_so = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;

    // An LLVM "prefix" whose lib/ holds the nightly's libLLVM under the names bpf-linker's
    // build links against (-lLLVM) and loads at run time (its SONAME, through RUNPATH).
    let prefix = state.join("llvm-rust");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in [
        PathBuf::from("libLLVM.so"),
        PathBuf::from(
            llvm_so
                .file_name()
                .context("libLLVM path has a file name")?,
        ),
    ] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm_so, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm_so.display()))?;
    }

    eprintln!(
        "==> setup: building bpf-linker {BPF_LINKER_VERSION} against {} (about a minute)",
        llvm_so.display()
    );
    status(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&state)
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--locked", "--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .arg("--root")
            .arg(&home),
    )?;
    fs::write(&stamp, key).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// The virtualenv holding the Python Kubernetes client: `python_env()/bin/python`.
pub fn python_env() -> PathBuf {
    PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/skiff/python")
}

fn python_client() -> anyhow::Result<()> {
    let env = python_env();
    let python = env.join("bin/python");
    let wanted = PYTHON_KUBERNETES.split("==").nth(1).unwrap_or_default();
    let installed = Command::new(&python)
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == wanted);
    if installed {
        eprintln!("==> setup: Python client {PYTHON_KUBERNETES} present");
        return Ok(());
    }
    eprintln!(
        "==> setup: installing the Python client {PYTHON_KUBERNETES} into {}",
        env.display()
    );
    if !python.exists() {
        status(Command::new("python3").arg("-m").arg("venv").arg(&env))?;
    }
    status(Command::new(env.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        PYTHON_KUBERNETES,
    ]))
}

fn bpffs_mounted() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    if !crate::is_root() {
        bail!("/sys/fs/bpf is not mounted; as root run: mount -t bpf bpf /sys/fs/bpf");
    }
    eprintln!("==> setup: mounting bpffs at /sys/fs/bpf");
    status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
