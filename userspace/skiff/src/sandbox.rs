//! `skiff up`: a single-node cluster from one command: `skiff server` on the host and `skiff agent`
//! for the node. With `--sandbox` the node gets its own network namespace, cgroup and bpffs
//! directory, all removed again on exit.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal};
use skiff_datapath::{cgroup2_mount, detach_all};
use tracing::{info, warn};

use crate::cli::UpArgs;

/// What a sandbox made; removed in reverse order on drop.
struct Sandbox {
    name: String,
    netns: bool,
    cgroup: Option<PathBuf>,
    bpffs: Option<PathBuf>,
    /// The agent's state (containerd's mounts live under it).
    data_dir: Option<PathBuf>,
}

impl Sandbox {
    fn create(name: &str, data_dir: &Path) -> anyhow::Result<Self> {
        let mut sandbox = Self {
            name: name.to_owned(),
            netns: false,
            cgroup: None,
            bpffs: None,
            data_dir: Some(data_dir.to_owned()),
        };
        if Path::new("/run/netns").join(name).exists() {
            bail!(
                "network namespace {name} exists already: another `skiff up --sandbox` runs, or \
                 one was killed (remove it with `ip netns del {name}`)"
            );
        }
        ip(&["netns", "add", name])?;
        sandbox.netns = true;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        let cgroup = cgroup2_mount()
            .context("no cgroup v2 hierarchy is mounted (looked at /sys/fs/cgroup/unified and /sys/fs/cgroup)")?
            .join(name);
        fs::create_dir_all(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        sandbox.cgroup = Some(cgroup);
        sandbox.bpffs = Some(Path::new("/sys/fs/bpf").join(name));
        Ok(sandbox)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(bpffs) = &self.bpffs {
            if let Err(e) = detach_all(bpffs) {
                warn!(error = %e, "removing the sandbox's eBPF pins");
            }
            // Pins skiff-proxy does not own (the CNI plugin's program and endpoint map) go too:
            // unlinking a pin is what unpins it.
            if bpffs.exists()
                && let Err(e) = fs::remove_dir_all(bpffs)
            {
                warn!(error = %e, path = %bpffs.display(), "removing the sandbox's bpffs directory");
            }
        }
        if self.cgroup.is_some() {
            // The sandbox is going away: whatever still runs in it (containerd's shims, the
            // pods) goes with it, in every hierarchy runc made the pods' cgroups in.
            skiff_kubelet::cleanup::remove_cgroup_trees(&self.name);
        }
        if let Some(data_dir) = &self.data_dir {
            for m in skiff_kubelet::cleanup::unmount_under(data_dir) {
                warn!(mount = %m, "unmounting what the node's containerd left");
            }
        }
        if self.netns
            && let Err(e) = ip(&["netns", "del", &self.name])
        {
            warn!(error = %e, "removing the sandbox network namespace");
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2); `cargo xtask setup` installs it")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub fn up(args: &UpArgs) -> anyhow::Result<()> {
    if !args.sandbox {
        bail!(
            "only `skiff up --sandbox` exists so far: without --sandbox skiff would attach to this \
             host's root cgroup and interfaces; run `skiff server` and `skiff agent` for that"
        );
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("skiff up needs root (network namespaces, cgroups, bpf())");
    }
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;

    // Block the stop signals before any thread exists, so they are waited for, not delivered
    // (the children unblock them again: see main).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    let server = Child::server(args)?;
    let sandbox = Sandbox::create(&args.sandbox_name, &args.data_dir)?;
    let cgroup = sandbox.cgroup.clone().expect("made by create");
    let bpffs = sandbox.bpffs.clone().expect("made by create");
    let url = format!("https://{}", args.listen);
    let token = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(crate::token::create(&crate::token::CreateArgs::new(
            &args.data_dir,
            &url,
            jiff::SignedDuration::from_hours(1),
            "skiff up: the sandbox node joining",
        )))
        .context("making a bootstrap token for the sandbox node")?;
    let agent = Child::agent(args, &url, &token, &sandbox.name, &cgroup, &bpffs)?;
    info!(sandbox = %sandbox.name, cgroup = %cgroup.display(), bpffs = %bpffs.display(), "sandbox node ready");

    let name = &sandbox.name;
    println!(
        "\
skiff up: a single-node cluster, node {name:?} in a sandbox

  COMPONENT                       STATE
  API server + SQLite store       running   https://{listen} (pid {server_pid}, log {server_log})
  controllers + scheduler         running   in the server, leader-elected
  node agent                      running   pid {agent_pid}, log {agent_log}
    network namespace             ready     /run/netns/{name}
    cgroup (v2)                   ready     {cgroup}
    kubelet + containerd          running   pods run in the sandbox (images: skiff image load --data-dir {data_dir} ARCHIVE)
    skiff-cni                     installed pod network from the node's pod CIDR
    eBPF socket load balancer     attached  pins under {bpffs}
    cluster DNS                   answering 10.96.0.10:53 inside the sandbox
    in-cluster API                forwarding kubernetes.default (10.96.0.1:443) to the API server

Point kubectl at it:
  export KUBECONFIG={kubeconfig}
  kubectl get nodes,pods -A

Inspect the node's service maps:
  skiff lb list --bpffs {bpffs}

Ctrl-C stops skiff and removes the sandbox.",
        listen = args.listen,
        server_pid = server.process.id(),
        server_log = server.log.display(),
        agent_pid = agent.process.id(),
        agent_log = agent.log.display(),
        kubeconfig = args.data_dir.join("kubeconfig.yaml").display(),
        data_dir = args.data_dir.display(),
        cgroup = cgroup.display(),
        bpffs = bpffs.display(),
    );

    let signal = signals.wait().context("waiting for SIGINT/SIGTERM")?;
    info!(%signal, "stopping; removing the sandbox");
    agent.stop();
    drop(sandbox);
    server.stop();
    Ok(())
}

/// A skiff process `up` started (the server on the host, the agent for the sandbox node), with
/// its log under the data dir; stopped with SIGTERM (it drains) when `skiff up` ends.
struct Child {
    process: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// `skiff server` on the host, so kubectl on the host reaches it.
    fn server(args: &UpArgs) -> anyhow::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe().context("finding the skiff binary")?);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&args.data_dir)
            .arg("--listen")
            .arg(args.listen.to_string());
        Self::start(cmd, &args.data_dir.join("server.log"), "API server ready")
    }

    /// `skiff agent` for the sandbox node: it stays on the host (where the API server is) and
    /// works inside the sandbox's namespace and cgroup.
    fn agent(
        args: &UpArgs,
        url: &str,
        token: &str,
        node: &str,
        cgroup: &Path,
        bpffs: &Path,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe().context("finding the skiff binary")?);
        cmd.args([
            "agent",
            "--server",
            url,
            "--token",
            token,
            "--node-name",
            node,
        ])
        .arg("--ca-file")
        .arg(args.data_dir.join("tls").join("ca.crt"))
        .arg("--data-dir")
        .arg(args.data_dir.join("agent"))
        .arg("--netns")
        .arg(Path::new("/run/netns").join(node))
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--bpffs")
        .arg(bpffs);
        for registry in &args.insecure_registries {
            cmd.args(["--insecure-registry", registry]);
        }
        Self::start(
            cmd,
            &args.data_dir.join("agent.log"),
            "cluster DNS answering",
        )
    }

    /// Starts `cmd` with stderr to `log` and waits until `ready` appears in it.
    fn start(mut cmd: Command, log: &Path, ready: &str) -> anyhow::Result<Self> {
        // Truncated: `ready` in it is this run's.
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let process = cmd
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut child = Self {
            process,
            log: log.to_owned(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.contains(ready) {
                return Ok(child);
            }
            if let Some(status) = child.process.try_wait()? {
                bail!("{cmd:?} exited ({status}):\n{}", text.trim_end());
            }
            if std::time::Instant::now() > deadline {
                bail!("{cmd:?} was not ready after 60 s; see {}", log.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.process.id()).unwrap_or(0));
        if nix::sys::signal::kill(pid, Signal::SIGTERM).is_ok() {
            for _ in 0..100 {
                if matches!(self.process.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        warn!(pid = self.process.id(), "did not stop in 10 s; killing it");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Still running here: `up` failed after starting it, or it ignored SIGTERM.
        if matches!(self.process.try_wait(), Ok(None)) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
