//! `skiff up`: starts what exists of a single-node cluster. With `--sandbox` the node gets its
//! own network namespace, cgroup and bpffs directory, all removed again on exit.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal};
use skiff_datapath::{Datapath, DatapathConfig, cgroup2_mount, detach_all};
use tracing::{info, warn};

use crate::cli::UpArgs;

/// What a sandbox made; removed in reverse order on drop.
struct Sandbox {
    name: String,
    netns: bool,
    cgroup: Option<PathBuf>,
    bpffs: Option<PathBuf>,
}

impl Sandbox {
    fn create(name: &str) -> anyhow::Result<Self> {
        let mut sandbox = Self {
            name: name.to_owned(),
            netns: false,
            cgroup: None,
            bpffs: None,
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
        if let Some(bpffs) = &self.bpffs
            && let Err(e) = detach_all(bpffs)
        {
            warn!(error = %e, "removing the sandbox's eBPF pins");
        }
        if let Some(cgroup) = &self.cgroup {
            // The sandbox is going away: whatever still runs in it goes with it.
            for pid in fs::read_to_string(cgroup.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse() {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            for _ in 0..100 {
                if fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
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
             host's root cgroup and interfaces, which waits for the node agent"
        );
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("skiff up needs root (network namespaces, cgroups, bpf())");
    }
    fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;

    // Block the stop signals before any thread exists, so they are waited for, not delivered.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;

    let sandbox = Sandbox::create(&args.sandbox_name)?;
    let cgroup = sandbox.cgroup.clone().expect("made by create");
    let bpffs = sandbox.bpffs.clone().expect("made by create");
    let mut datapath = Datapath::load(DatapathConfig {
        bpffs: bpffs.clone(),
        ..DatapathConfig::default()
    })?;
    datapath.attach_cgroup(&cgroup)?;
    info!(sandbox = %sandbox.name, cgroup = %cgroup.display(), bpffs = %bpffs.display(), "sandbox node ready");

    let name = &sandbox.name;
    println!(
        "\
skiff up: sandbox node {name:?}

  COMPONENT                    STATE
  network namespace            ready         /run/netns/{name}
  cgroup (v2)                  ready         {cgroup}
  eBPF socket load balancer    attached      pins under {bpffs}
  eBPF tc (NodePort)           not yet       waits for the node agent to wire the node's interfaces
  API server + store           not built yet (issue: Control plane I)
  controllers + scheduler      not built yet (issue: Control plane III)
  node agent (kubelet, proxy, DNS)  not built yet (issue: the node agent)

Try the datapath:
  skiff lb add --bpffs {bpffs} --frontend 10.96.0.10:80 --backends 127.0.0.1:8080
  skiff lb list --bpffs {bpffs}
  nsenter --net=/run/netns/{name} sh -c 'echo $$ > {cgroup}/cgroup.procs; exec sh'

Ctrl-C stops skiff and removes the sandbox.",
        cgroup = cgroup.display(),
        bpffs = bpffs.display(),
    );

    let signal = signals.wait().context("waiting for SIGINT/SIGTERM")?;
    info!(%signal, "stopping; removing the sandbox");
    drop(datapath);
    drop(sandbox);
    Ok(())
}
