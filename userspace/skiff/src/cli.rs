//! The command line: clap definitions and what each command does.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use skiff_datapath::{
    Algorithm, Attachment, Backend, CtFlow, Datapath, DatapathConfig, Frontend, LbTable,
    PinnedLbMaps, Service, ServiceKind, attachments, detach_all, gc_conntrack, map_usage,
    read_conntrack, read_stats,
};

use crate::{
    output::{Format, table},
    sandbox,
};

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "A Kubernetes-compatible cluster in one binary, with an eBPF datapath"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a single-node cluster (today: the eBPF datapath in a sandbox; see the status it prints).
    Up(UpArgs),
    /// Run the control plane: the Kubernetes API server and its store.
    Server(crate::server::ServerArgs),
    /// Run a node: join the cluster, then its service load balancer and cluster DNS.
    Agent(crate::agent::AgentArgs),
    /// Bootstrap tokens for joining nodes.
    #[command(subcommand)]
    Token(crate::token::TokenCommand),
    /// Images for nodes without a registry.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Load, attach and pin the eBPF programs, or remove them.
    #[command(subcommand)]
    Datapath(DatapathCommand),
    /// Inspect and edit the service load-balancing maps directly (works with no agent running).
    #[command(subcommand)]
    Lb(LbCommand),
    /// Inspect connection tracking of north-south (NodePort, LoadBalancer) flows.
    #[command(subcommand)]
    Ct(CtCommand),
    /// Print the version.
    Version,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import an OCI or docker image archive into the containerd of the node that runs from
    /// DATA_DIR (like `kind load image-archive`).
    Load {
        archive: PathBuf,
        /// The node's state directory: `skiff up`'s data dir, or `skiff agent`'s.
        #[arg(long, default_value = "/var/lib/skiff")]
        data_dir: PathBuf,
    },
}

/// `skiff image load`: finds the node's containerd under the data dir and imports the archive.
fn image_load(archive: &Path, data_dir: &Path) -> anyhow::Result<()> {
    if !archive.is_file() {
        anyhow::bail!("{} is not an image archive file", archive.display());
    }
    let socket = [data_dir.join("agent"), data_dir.to_owned()]
        .iter()
        .map(|d| crate::node::containerd_socket(d))
        .find(|s| s.exists())
        .with_context(|| {
            format!(
                "no node containerd under {}: is `skiff up` or `skiff agent` running with that --data-dir?",
                data_dir.display()
            )
        })?;
    skiff_kubelet::image::import(&socket, archive)?;
    println!(
        "{} imported into the node's containerd ({})",
        archive.display(),
        socket.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// State directory: the store, the cluster's certificates and the admin kubeconfig
    /// (DATA_DIR/kubeconfig.yaml).
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// Where the API server listens (kubectl on this machine reaches it there).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: std::net::SocketAddr,
    /// Run the node in its own network namespace and cgroup, leaving the host untouched.
    #[arg(long)]
    pub sandbox: bool,
    /// Name of the sandbox (network namespace, cgroup and bpffs directory).
    #[arg(long, default_value = "skiff-sandbox")]
    pub sandbox_name: String,
    /// A registry (HOST[:PORT], as seen from the node) pulled from over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

#[derive(Args, Debug, Clone)]
struct BpffsArg {
    /// bpffs directory holding skiff's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/skiff")]
    bpffs: PathBuf,
}

#[derive(Subcommand, Debug)]
enum DatapathCommand {
    /// Load the programs, attach them and pin everything, then exit (the programs keep running).
    Attach {
        #[command(flatten)]
        bpffs: BpffsArg,
        /// cgroup v2 directory whose processes get the socket load balancer.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// Interface (in this network namespace) that gets the tc program on ingress.
        #[arg(long)]
        iface: Vec<String>,
        /// Node address that NodePort flows to backends on other nodes are SNATed to
        /// (without it they keep the client's address).
        #[arg(long)]
        node_ip: Option<std::net::Ipv4Addr>,
        /// Capacity of the service map, used only when it is created.
        #[arg(long, default_value_t = DatapathConfig::default().services_max)]
        services_max: u32,
        /// Capacity of the backend map, used only when it is created.
        #[arg(long, default_value_t = DatapathConfig::default().backends_max)]
        backends_max: u32,
        /// Capacity of the conntrack map, used only when it is created.
        #[arg(long, default_value_t = DatapathConfig::default().ct_max)]
        ct_max: u32,
        /// Capacity of the Maglev map (table size times two banks per Maglev service), used
        /// only when it is created.
        #[arg(long, default_value_t = DatapathConfig::default().maglev_max)]
        maglev_max: u32,
    },
    /// Detach every program and remove every map under the bpffs directory.
    Detach {
        #[command(flatten)]
        bpffs: BpffsArg,
    },
    /// Show what is attached and the datapath counters.
    Status {
        #[command(flatten)]
        bpffs: BpffsArg,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

#[derive(Subcommand, Debug)]
enum CtCommand {
    /// List tracked flows.
    List {
        #[command(flatten)]
        bpffs: BpffsArg,
        /// Only flows to this frontend (VIP:PORT).
        #[arg(long)]
        frontend: Option<std::net::SocketAddrV4>,
        /// Only flows from or to this address.
        #[arg(long)]
        address: Option<std::net::Ipv4Addr>,
        /// Include expired entries (they linger until reused or evicted).
        #[arg(long)]
        all: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Delete expired entries now (the agent does this periodically).
    Gc {
        #[command(flatten)]
        bpffs: BpffsArg,
    },
    /// Entries against capacity of every map that fills up (the map-pressure numbers).
    Stats {
        #[command(flatten)]
        bpffs: BpffsArg,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

#[derive(Subcommand, Debug)]
enum LbCommand {
    /// Add a service, or replace the backend set of an existing one.
    Add {
        #[command(flatten)]
        bpffs: BpffsArg,
        /// VIP:PORT[/PROTO] (protocol defaults to TCP).
        #[arg(long)]
        frontend: Frontend,
        /// Comma-separated IP:PORT list; "" for a service with no backends.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        backends: Vec<String>,
        #[arg(long, default_value = "random")]
        algorithm: Algorithm,
        /// sessionAffinity ClientIP timeout in seconds (0 = no affinity).
        #[arg(long, default_value_t = 0)]
        affinity: u32,
        #[arg(long = "type", default_value = "clusterip")]
        kind: ServiceKind,
    },
    /// Remove a service.
    Del {
        #[command(flatten)]
        bpffs: BpffsArg,
        #[arg(long)]
        frontend: Frontend,
    },
    /// List every service with its backends.
    List {
        #[command(flatten)]
        bpffs: BpffsArg,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => sandbox::up(&args),
        Command::Server(args) => crate::server::run(&args),
        Command::Agent(args) => crate::agent::run(&args),
        Command::Token(cmd) => crate::token::run(cmd),
        Command::Image(ImageCommand::Load { archive, data_dir }) => image_load(&archive, &data_dir),
        Command::Datapath(cmd) => datapath(cmd),
        Command::Lb(cmd) => lb(cmd),
        Command::Ct(cmd) => ct(cmd),
        Command::Version => {
            println!("skiff {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn datapath(cmd: DatapathCommand) -> anyhow::Result<()> {
    match cmd {
        DatapathCommand::Attach {
            bpffs,
            cgroup,
            iface,
            node_ip,
            services_max,
            backends_max,
            ct_max,
            maglev_max,
        } => {
            if cgroup.is_none() && iface.is_empty() {
                bail!("nothing to attach: give --cgroup PATH and/or --iface NAME");
            }
            let config = DatapathConfig {
                bpffs: bpffs.bpffs,
                services_max,
                backends_max,
                ct_max,
                maglev_max,
                snat_ipv4: node_ip,
                ..DatapathConfig::default()
            };
            let mut dp = Datapath::load(config)?;
            if let Some(cgroup) = cgroup {
                report(
                    "connect4",
                    &cgroup.display().to_string(),
                    dp.attach_cgroup(&cgroup)?,
                );
            }
            for iface in iface {
                report("tc ingress", &iface, dp.attach_tc(&iface)?);
            }
            Ok(())
        }
        DatapathCommand::Detach { bpffs } => {
            let removed = detach_all(&bpffs.bpffs)?;
            println!(
                "removed {} pins under {}",
                removed.len(),
                bpffs.bpffs.display()
            );
            Ok(())
        }
        DatapathCommand::Status { bpffs, output } => status(&bpffs.bpffs, output),
    }
}

fn report(program: &str, target: &str, attachment: Attachment) {
    match attachment {
        Attachment::Attached => println!("{program}: attached to {target}"),
        Attachment::Adopted => println!("{program}: already attached to {target} (left running)"),
    }
}

fn status(bpffs: &Path, output: Format) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Status {
        bpffs: PathBuf,
        attachments: Vec<String>,
        stats: skiff_datapath::Stats,
    }
    let stats = read_stats(bpffs)?;
    let status = Status {
        bpffs: bpffs.to_owned(),
        attachments: attachments(bpffs),
        stats,
    };
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Table => {
            println!("bpffs: {}", bpffs.display());
            println!("attached: {}", status.attachments.join(", "));
            let counters = serde_json::to_value(stats)?;
            let rows = counters
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| vec![k.clone(), v.to_string()])
                .collect();
            println!("{}", table(&["counter", "value"], rows));
        }
    }
    Ok(())
}

fn lb(cmd: LbCommand) -> anyhow::Result<()> {
    match cmd {
        LbCommand::Add {
            bpffs,
            frontend,
            backends,
            algorithm,
            affinity,
            kind,
        } => {
            let backends = backends
                .iter()
                .filter(|b| !b.trim().is_empty())
                .map(|b| b.trim().parse::<Backend>())
                .collect::<Result<Vec<_>, _>>()?;
            let mut service = Service::new(frontend, backends);
            service.algorithm = algorithm;
            service.affinity_timeout = affinity;
            service.kind = kind;
            open_table(&bpffs.bpffs)?.upsert(&service)?;
            println!(
                "service {frontend} programmed with {} backends",
                service.backends.len()
            );
            Ok(())
        }
        LbCommand::Del { bpffs, frontend } => {
            if open_table(&bpffs.bpffs)?.delete(&frontend)? {
                println!("service {frontend} deleted");
                Ok(())
            } else {
                bail!("no service {frontend} under {}", bpffs.bpffs.display())
            }
        }
        LbCommand::List { bpffs, output } => {
            // Read-only: an agent may be writing these maps right now.
            let maps = PinnedLbMaps::open(&bpffs.bpffs)?;
            let services = LbTable::inspect(maps)
                .with_context(|| format!("reading the maps under {}", bpffs.bpffs.display()))?
                .list();
            let mut out = std::io::stdout().lock();
            match output {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&services)?)?,
                Format::Table => writeln!(out, "{}", services_table(&services))?,
            }
            Ok(())
        }
    }
}

fn ct(cmd: CtCommand) -> anyhow::Result<()> {
    match cmd {
        CtCommand::List {
            bpffs,
            frontend,
            address,
            all,
            output,
        } => {
            let flows: Vec<CtFlow> = read_conntrack(&bpffs.bpffs, monotonic_ns()?)?
                .into_iter()
                .filter(|f| all || f.expires_in_s >= 0)
                .filter(|f| frontend.is_none_or(|fe| f.frontend == fe))
                .filter(|f| address.is_none_or(|a| *f.source.ip() == a || *f.destination.ip() == a))
                .collect();
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&flows)?),
                Format::Table => {
                    let rows = flows
                        .iter()
                        .map(|f| {
                            vec![
                                f.protocol.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                                f.direction.to_owned(),
                                f.source.to_string(),
                                f.destination.to_string(),
                                f.frontend.to_string(),
                                f.backend_id.to_string(),
                                f.nat.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                                f.packets.to_string(),
                                if f.tcp_flags.is_empty() {
                                    "-".to_owned()
                                } else {
                                    f.tcp_flags.clone()
                                },
                                format!("{}s", f.expires_in_s),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &[
                                "proto",
                                "dir",
                                "source",
                                "destination",
                                "frontend",
                                "backend",
                                "nat",
                                "packets",
                                "flags",
                                "expires"
                            ],
                            rows
                        )
                    );
                }
            }
            Ok(())
        }
        CtCommand::Gc { bpffs } => {
            let removed = gc_conntrack(&bpffs.bpffs, monotonic_ns()?)?;
            println!("removed {removed} expired conntrack entries");
            Ok(())
        }
        CtCommand::Stats { bpffs, output } => {
            let usage = map_usage(&bpffs.bpffs)?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&usage)?),
                Format::Table => {
                    let rows = usage
                        .iter()
                        .map(|u| {
                            let pct = 100.0 * u.entries as f64 / f64::from(u.capacity.max(1));
                            vec![
                                u.name.to_owned(),
                                u.entries.to_string(),
                                u.capacity.to_string(),
                                format!("{pct:.1}%"),
                            ]
                        })
                        .collect();
                    println!("{}", table(&["map", "entries", "capacity", "used"], rows));
                }
            }
            Ok(())
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which stamps conntrack.
fn monotonic_ns() -> anyhow::Result<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .context("reading CLOCK_MONOTONIC")?;
    Ok(u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec()).unwrap_or(0))
}

fn open_table(bpffs: &Path) -> anyhow::Result<LbTable<PinnedLbMaps>> {
    let maps = PinnedLbMaps::open(bpffs)?;
    LbTable::open(maps).with_context(|| format!("reading the maps under {}", bpffs.display()))
}

fn services_table(services: &[Service]) -> String {
    let rows = services
        .iter()
        .map(|s| {
            let backends = if s.backends.is_empty() {
                "<none>".to_owned()
            } else {
                s.backends
                    .iter()
                    .map(|b| format!("{} ({})", b.address, b.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let affinity = if s.affinity_timeout == 0 {
                "None".to_owned()
            } else {
                format!("ClientIP {}s", s.affinity_timeout)
            };
            vec![
                s.frontend.to_string(),
                s.kind.to_string(),
                s.algorithm.to_string(),
                affinity,
                backends,
            ]
        })
        .collect();
    table(
        &["frontend", "type", "algorithm", "affinity", "backends"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lb_add_parses_frontend_and_backends() {
        let cli = Cli::try_parse_from([
            "skiff",
            "lb",
            "add",
            "--frontend",
            "10.96.0.10:53/udp",
            "--backends",
            "10.244.0.2:53,10.244.0.3:53",
            "--algorithm",
            "maglev",
        ])
        .unwrap();
        let Command::Lb(LbCommand::Add {
            frontend,
            backends,
            algorithm,
            ..
        }) = cli.command
        else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(frontend.to_string(), "10.96.0.10:53/UDP");
        assert_eq!(backends, ["10.244.0.2:53", "10.244.0.3:53"]);
        assert_eq!(algorithm, Algorithm::Maglev);
        assert!(Cli::try_parse_from(["skiff", "lb", "add", "--frontend", "10.96.0.10"]).is_err());
    }

    #[test]
    fn services_table_shows_every_backend_and_none_for_zero() {
        let frontend = Frontend::new(
            Ipv4Addr::new(10, 96, 0, 1),
            443,
            skiff_datapath::Protocol::Tcp,
        );
        let with = Service::new(
            frontend,
            vec![Backend::active(SocketAddrV4::new(
                Ipv4Addr::new(10, 244, 0, 5),
                6443,
            ))],
        );
        let without = Service::new(
            Frontend {
                port: 80,
                ..frontend
            },
            vec![],
        );
        let out = services_table(&[without, with]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("FRONTEND"));
        assert!(lines[1].contains("10.96.0.1:80/TCP") && lines[1].ends_with("<none>"));
        assert!(lines[2].contains("10.244.0.5:6443 (active)"));
    }
}
