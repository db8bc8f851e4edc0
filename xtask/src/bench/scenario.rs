//! `cargo xtask bench datapath`: what is measured, in which order, and how.
//!
//! One backend namespace (nginx, 10 endpoint addresses) lives for the whole run. Every
//! configuration (a datapath at a service count) gets a fresh node namespace and external-client
//! namespace, programs its datapath (timed: that is the "initial load" of the programming
//! table), checks every target with curl, then runs wrk: the `Connection: close` repetitions
//! interleaved over the targets, then the keep-alive repetitions the same way. Before every run:
//! `conntrack -F`, a pause, and a wait until the machine is idle. At the largest service count
//! the configuration also times one-endpoint updates. The direct (no rules) configuration runs
//! first and last; its pooled median is the baseline of every ratio.

use std::{
    fmt, fs,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sys::signal::{SigSet, Signal};
use skiff_test_support::Cgroup;

use super::{
    DatapathArgs, report, rules,
    rules::{NodePort, Spec, Version},
    skiff::{self, Skiff},
    topology::{
        BACKEND_PORT, Backend, NODE_EXT_IP, Node, WorkDir, endpoint_ip, run_bounded,
        run_bounded_with_stdin, run_ok, wait_idle,
    },
    wrk::{self, WrkReport},
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT/SIGTERM/SIGHUP arrived: every loop then stops and the guards clean up.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Endpoints per service, as in the baseline.
pub const ENDPOINTS: usize = 10;
/// The NodePort of the targeted (last) service.
pub const NODE_PORT: u16 = 30080;
/// Longest wait for an idle machine before a run; a run that starts busy is counted as such.
const IDLE_WAIT: Duration = Duration::from_secs(10);
/// The plain endpoint that "non-service traffic" connects to (the baseline's 10.244.0.5).
const PLAIN_ENDPOINT: u8 = 3;

/// A way of getting from client to service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Datapath {
    /// No rules, no programs: the baseline.
    Direct,
    /// skiff: socket LB (connect4 on the client cgroup) and tc on the node's interfaces.
    Skiff,
    IptablesLegacy,
    IptablesNft,
    /// kube-proxy's nftables mode in shape (gen.py's nft variant).
    Nft,
}

impl Datapath {
    pub const RULES: [Self; 3] = [Self::IptablesLegacy, Self::IptablesNft, Self::Nft];
    /// Everything measured against the direct baseline, in the order of the runs.
    pub const MEASURED: [Self; 4] = [
        Self::Skiff,
        Self::IptablesLegacy,
        Self::IptablesNft,
        Self::Nft,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct (no rules)",
            Self::Skiff => "skiff",
            Self::IptablesLegacy => "iptables-legacy",
            Self::IptablesNft => "iptables-nft",
            Self::Nft => "nft",
        }
    }
}

/// Where a wrk run connects to, from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The last service's ClusterIP, from the node (skiff: from the socket-LB cgroup).
    Service,
    /// A plain endpoint IP from the node, through the same ruleset / programs.
    Endpoint,
    /// The last service's NodePort on the node's external address, from the ext namespace.
    NodePort,
    /// A plain endpoint IP from the ext namespace, forwarded by the node (no rules).
    Forwarded,
}

impl Target {
    pub const fn label(self, datapath: Datapath) -> &'static str {
        match (self, datapath) {
            (Self::Service, Datapath::Skiff) => "ClusterIP, socket LB",
            (Self::Service, _) => "ClusterIP (last svc)",
            (Self::Endpoint, Datapath::Direct) => "pod IP from node",
            (Self::Endpoint, _) => "pod IP, same ruleset",
            (Self::NodePort, Datapath::Skiff) => "NodePort, tc",
            (Self::NodePort, _) => "NodePort (last svc)",
            (Self::Forwarded, _) => "pod IP via node (fwd)",
        }
    }

    /// Whether the client is the external namespace (then the baseline is [`Target::Forwarded`]).
    pub const fn external(self) -> bool {
        matches!(self, Self::NodePort | Self::Forwarded)
    }

    fn url(self, services: usize) -> String {
        match self {
            Self::Service => format!(
                "http://{}:{}/",
                rules::vip(services - 1),
                rules::SERVICE_PORT
            ),
            Self::Endpoint | Self::Forwarded => {
                format!("http://{}:{BACKEND_PORT}/", endpoint_ip(PLAIN_ENDPOINT))
            }
            Self::NodePort => format!("http://{NODE_EXT_IP}:{NODE_PORT}/"),
        }
    }
}

/// The wrk runs of one target in one configuration.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub datapath: Datapath,
    /// Service count; `None` for the direct baseline.
    pub services: Option<usize>,
    pub target: Target,
    /// "start"/"end" for the two direct blocks, empty otherwise.
    pub phase: &'static str,
    pub close: Vec<WrkReport>,
    pub keepalive: Vec<WrkReport>,
    /// Why this target could not be measured.
    pub failed: Option<String>,
    /// What the curl check saw.
    pub checked: String,
}

/// Programming operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProgOp {
    /// All services from empty, one transaction / file / upsert loop.
    FullLoad,
    /// One endpoint of one service changed in a table of the largest size.
    EndpointChange,
    /// A restarted agent adopting the pinned maps (skiff only).
    Reopen,
    /// [`ProgOp::FullLoad`] with endpoints of its own per service (skiff only).
    FullLoadDistinct,
    /// [`ProgOp::EndpointChange`] in that table (skiff only).
    EndpointChangeDistinct,
}

/// Timings of one programming operation.
#[derive(Debug, Clone)]
pub struct Programming {
    pub datapath: Datapath,
    pub services: usize,
    pub op: ProgOp,
    pub samples: Vec<Duration>,
    /// How it was done (the command or API).
    pub how: String,
}

/// Everything a run found, for the report.
#[derive(Debug, Default)]
pub struct Results {
    pub measurements: Vec<Measurement>,
    pub programming: Vec<Programming>,
    /// Runs that started while the machine was not idle (someone else was using the CPUs).
    pub busy_runs: usize,
    pub total_runs: usize,
    pub notes: Vec<String>,
}

/// Resolved options.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub sizes: Vec<usize>,
    pub duration: Duration,
    pub reps: usize,
    /// Timed repetitions of each one-endpoint update (iptables/nft).
    pub update_reps: usize,
    /// Timed one-endpoint changes for skiff (cheap, so many).
    pub skiff_changes: usize,
    /// Pause between runs, after `conntrack -F`.
    pub settle: Duration,
    /// The datapaths measured beside the direct baseline.
    pub datapaths: Vec<Datapath>,
}

impl Settings {
    fn resolve(args: &DatapathArgs) -> anyhow::Result<Self> {
        let quick = args.quick;
        let mut sizes = args.sizes.clone().unwrap_or_else(|| {
            if quick {
                vec![1, 1000]
            } else {
                vec![1, 1000, 10_000]
            }
        });
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.is_empty() || sizes[0] == 0 {
            bail!("--sizes needs service counts of at least 1");
        }
        if let Some(&big) = sizes.iter().find(|&&s| s > rules::MAX_SERVICES) {
            bail!(
                "--sizes {big}: at most {} services fit the VIP layout",
                rules::MAX_SERVICES
            );
        }
        let duration = Duration::from_secs(args.duration.unwrap_or(if quick { 2 } else { 5 }));
        if duration.is_zero() {
            bail!("--duration must be at least 1 second");
        }
        let reps = args.reps.unwrap_or(if quick { 1 } else { 3 }).max(1);
        let datapaths = match &args.only {
            None => Datapath::MEASURED.to_vec(),
            Some(names) => {
                let mut chosen = Vec::new();
                for name in names {
                    let Some(d) = Datapath::MEASURED.into_iter().find(|d| d.label() == name) else {
                        bail!(
                            "--only {name:?}: the datapaths are skiff, iptables-legacy, iptables-nft and nft"
                        );
                    };
                    chosen.push(d);
                }
                Datapath::MEASURED
                    .into_iter()
                    .filter(|d| chosen.contains(d))
                    .collect()
            }
        };
        Ok(Self {
            quick,
            sizes,
            duration,
            reps,
            update_reps: reps,
            skiff_changes: if quick { 51 } else { 201 },
            settle: Duration::from_secs(if quick { 1 } else { 2 }),
            datapaths,
        })
    }

    /// The size at which updates are timed: the largest.
    pub fn program_size(&self) -> usize {
        *self.sizes.last().expect("at least one size")
    }
}

/// Prints progress lines with the elapsed time.
pub struct Progress {
    started: Instant,
    runs_done: usize,
    runs_planned: usize,
}

impl Progress {
    pub fn line(&self, msg: impl fmt::Display) {
        let s = self.started.elapsed().as_secs();
        eprintln!("[{:>3}:{:02}] {msg}", s / 60, s % 60);
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

struct Ctx<'a> {
    settings: &'a Settings,
    backend: &'a mut Backend,
    work: &'a WorkDir,
    progress: Progress,
    results: Results,
}

pub fn run(root: &Path, args: &DatapathArgs) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("the datapath benchmark needs root (network namespaces, cgroups, bpf())");
    }
    let settings = Settings::resolve(args)?;
    for tool in [
        "wrk",
        "nginx",
        "curl",
        "conntrack",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "nft",
        "nsenter",
    ] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            bail!("{tool} is not installed (cargo xtask setup installs it)");
        }
    }
    watch_signals()?;

    let out_dir = root.join("target/bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let env = report::Environment::probe(root);
    let configs = settings.sizes.len() * settings.datapaths.len() + 2;
    let targets = settings.sizes.len() * settings.datapaths.len() * 3 + 4;
    let runs_planned = targets * settings.reps * 2;
    let per_run = settings.duration + settings.settle + Duration::from_millis(1500);
    eprintln!(
        "==> bench datapath: sizes {:?}, {} s runs, {} repetition(s); {configs} configurations, \
         {runs_planned} wrk runs (about {} min of load, plus ruleset loads{})",
        settings.sizes,
        settings.duration.as_secs(),
        settings.reps,
        (per_run * runs_planned as u32).as_secs() / 60,
        if settings.sizes.contains(&10_000) && settings.datapaths.contains(&Datapath::Nft) {
            "; nft loads 10,000 services in one transaction, about 3 min"
        } else {
            ""
        }
    );

    let work = WorkDir::new()?;
    let progress = Progress {
        started: Instant::now(),
        runs_done: 0,
        runs_planned,
    };
    progress.line("starting the backend namespace and nginx");
    let mut backend = Backend::start(&work)?;
    let mut ctx = Ctx {
        settings: &settings,
        backend: &mut backend,
        work: &work,
        progress,
        results: Results::default(),
    };

    configuration(&mut ctx, Datapath::Direct, None, "start")?;
    for &size in &settings.sizes {
        for &datapath in &settings.datapaths {
            configuration(&mut ctx, datapath, Some(size), "")?;
        }
    }
    configuration(&mut ctx, Datapath::Direct, None, "end")?;
    let elapsed = ctx.progress.elapsed();
    let results = ctx.results;
    drop(backend);

    let report = report::Report::new(env, settings.clone(), results, elapsed);
    println!("{}", report.console_table());
    let md = out_dir.join("datapath.md");
    fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let png = out_dir.join("datapath.png");
    super::plot::draw(&report, &png).with_context(|| format!("drawing {}", png.display()))?;
    println!("{}", report.targets_summary());
    eprintln!("==> wrote {} and {}", md.display(), png.display());
    let failures = report.unexpected_failures();
    if !failures.is_empty() {
        bail!(
            "some datapaths could not be measured (see the report): {}",
            failures.join("; ")
        );
    }
    Ok(())
}

/// Blocks the stop signals in every thread (threads made later inherit the mask) and turns
/// them into [`interrupted`] on a thread of their own, so a Ctrl-C unwinds through the guards
/// instead of killing the process with its namespaces still there.
fn watch_signals() -> anyhow::Result<()> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().context("blocking the stop signals")?;
    thread::spawn(move || {
        while let Ok(sig) = set.wait() {
            eprintln!("==> {sig} received: stopping and cleaning up");
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
    Ok(())
}

fn sleep_interruptibly(d: Duration) {
    let deadline = Instant::now() + d;
    while !interrupted() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
}

/// What the client side of a configuration needs to run a command against a target.
struct Clients<'a> {
    node: &'a Node,
    lb_cgroup: Option<&'a Cgroup>,
}

impl Clients<'_> {
    fn command(&self, target: Target, program: &str) -> Command {
        match (target.external(), self.lb_cgroup) {
            (true, _) => self.node.ext.command(program),
            (false, Some(cg)) => self.node.ns.command_in_cgroup(cg, program),
            (false, None) => self.node.ns.command(program),
        }
    }
}

/// One datapath at one service count: set up, check, measure, tear down. A failure here is
/// recorded against its targets and the run goes on (an interrupt ends it).
fn configuration(
    ctx: &mut Ctx<'_>,
    datapath: Datapath,
    services: Option<usize>,
    phase: &'static str,
) -> anyhow::Result<()> {
    let title = match services {
        Some(n) => format!(
            "{} · {n} service(s) x {ENDPOINTS} endpoints",
            datapath.label()
        ),
        None => format!("{} · {phase}", datapath.label()),
    };
    ctx.progress.line(format!("── {title}"));
    if !ctx.backend.alive() {
        bail!("nginx in the backend namespace died");
    }
    let targets: &[Target] = match datapath {
        Datapath::Direct => &[Target::Endpoint, Target::Forwarded],
        _ => &[Target::Service, Target::Endpoint, Target::NodePort],
    };
    let first = ctx.results.measurements.len();
    for &target in targets {
        ctx.results.measurements.push(Measurement {
            datapath,
            services,
            target,
            phase,
            close: Vec::new(),
            keepalive: Vec::new(),
            failed: None,
            checked: String::new(),
        });
    }
    let result = configure_and_measure(ctx, datapath, services.unwrap_or(1), first);
    if let Err(err) = result {
        if interrupted() {
            return Err(err);
        }
        let msg = format!("{err:#}");
        ctx.progress.line(format!("   FAILED: {msg}"));
        ctx.results.notes.push(format!("{title}: {msg}"));
        for m in &mut ctx.results.measurements[first..] {
            if m.failed.is_none() && m.keepalive.len() < ctx.settings.reps {
                m.failed = Some(msg.clone());
            }
        }
    }
    let idle = wait_idle(Duration::from_secs(30));
    if !idle {
        ctx.progress
            .line("   (the machine did not become idle after teardown within 30 s)");
    }
    Ok(())
}

fn configure_and_measure(
    ctx: &mut Ctx<'_>,
    datapath: Datapath,
    services: usize,
    first: usize,
) -> anyhow::Result<()> {
    let node = Node::create(ctx.backend)?;
    let spec = Spec {
        services,
        endpoints: ENDPOINTS,
        node_port: Some(NodePort {
            service: services - 1,
            node_ip: NODE_EXT_IP,
            port: NODE_PORT,
        }),
    };
    // Field order matters on the way out: skiff's programs go before the cgroup and the node.
    let lb_cgroup = (datapath == Datapath::Skiff).then(|| Cgroup::new("lb"));
    let mut skiff = None;
    match datapath {
        Datapath::Direct => {}
        Datapath::Skiff => {
            let cgroup = lb_cgroup.as_ref().expect("made above");
            let mut s = Skiff::attach(&node, cgroup)?;
            let mut table: Vec<_> = (0..services)
                .map(|i| skiff::cluster_ip(i, ENDPOINTS, Version::A))
                .collect();
            table.push(skiff::node_port(NODE_EXT_IP, NODE_PORT, ENDPOINTS));
            let took = s.install(&table)?;
            ctx.progress.line(format!(
                "   programmed {} services through LbTable in {}",
                table.len(),
                fmt_duration(took)
            ));
            ctx.results.programming.push(Programming {
                datapath,
                services,
                op: ProgOp::FullLoad,
                samples: vec![took],
                how: "LbTable::upsert per service on the pinned maps (in-process)".to_owned(),
            });
            skiff = Some(s);
        }
        Datapath::IptablesLegacy | Datapath::IptablesNft | Datapath::Nft => {
            node.route_service_range();
            let (file, text) = if datapath == Datapath::Nft {
                ("rules.nft", rules::nft(&spec)?)
            } else {
                ("rules.iptables", rules::iptables(&spec)?)
            };
            let path = ctx.work.path().join(file);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            wait_idle(IDLE_WAIT);
            let (took, how) = apply_rules(&node, datapath, &path, false)?;
            ctx.progress.line(format!(
                "   loaded the ruleset with {how} in {}",
                fmt_duration(took)
            ));
            ctx.results.programming.push(Programming {
                datapath,
                services,
                op: ProgOp::FullLoad,
                samples: vec![took],
                how,
            });
        }
    }

    let clients = Clients {
        node: &node,
        lb_cgroup: lb_cgroup.as_ref(),
    };
    let mut live = Vec::new();
    for idx in first..ctx.results.measurements.len() {
        let target = ctx.results.measurements[idx].target;
        let stats_before = skiff.as_ref().map(Skiff::stats).transpose()?;
        match check(&clients, target, services) {
            Ok(seen) => {
                ctx.results.measurements[idx].checked = seen;
                live.push(idx);
            }
            Err(err) if target == Target::NodePort => {
                let mut msg = format!("{err:#}");
                if let (Some(s), Some(before)) = (&skiff, &stats_before) {
                    let after = s.stats()?;
                    msg.push_str(&format!(
                        " (the tc program saw {} packets during the check)",
                        after.tc_packets - before.tc_packets
                    ));
                }
                ctx.progress
                    .line(format!("   {} FAILED: {msg}", target.label(datapath)));
                ctx.results.measurements[idx].failed = Some(msg);
            }
            Err(err) => return Err(err.context(format!("checking {}", target.label(datapath)))),
        }
    }

    // New connections first, then keep-alive; each repeated, interleaved over the targets.
    let settings = ctx.settings;
    for new_connections in [true, false] {
        for rep in 0..settings.reps {
            for &idx in &live {
                if ctx.results.measurements[idx].failed.is_some() {
                    continue;
                }
                let target = ctx.results.measurements[idx].target;
                let what = format!(
                    "{} {}/{} · {}",
                    if new_connections {
                        "new conns"
                    } else {
                        "keep-alive"
                    },
                    rep + 1,
                    settings.reps,
                    target.label(datapath)
                );
                match one_run(
                    ctx,
                    &node,
                    &clients,
                    target,
                    services,
                    new_connections,
                    &what,
                ) {
                    Ok(r) if new_connections => ctx.results.measurements[idx].close.push(r),
                    Ok(r) => ctx.results.measurements[idx].keepalive.push(r),
                    Err(err) if target == Target::NodePort && !interrupted() => {
                        ctx.results.measurements[idx].failed = Some(format!("{err:#}"));
                    }
                    Err(err) => return Err(err),
                }
            }
        }
    }

    if datapath != Datapath::Direct && services == settings.program_size() {
        updates(ctx, &node, datapath, services, skiff.as_mut())?;
    }
    if datapath != Datapath::Direct {
        teardown_rules(&node, datapath);
    }
    drop(skiff);
    drop(node);
    Ok(())
}

/// One wrk run after the between-runs hygiene; unhealthy runs are errors.
fn one_run(
    ctx: &mut Ctx<'_>,
    node: &Node,
    clients: &Clients<'_>,
    target: Target,
    services: usize,
    new_connections: bool,
    what: &str,
) -> anyhow::Result<WrkReport> {
    if interrupted() {
        bail!("interrupted");
    }
    node.flush_conntrack();
    sleep_interruptibly(ctx.settings.settle);
    let idle = wait_idle(IDLE_WAIT);
    ctx.results.total_runs += 1;
    if !idle {
        ctx.results.busy_runs += 1;
    }
    ctx.progress.runs_done += 1;
    let report = wrk::run(
        clients.command(target, "wrk"),
        &target.url(services),
        ctx.settings.duration,
        new_connections,
    )?;
    let unit = if new_connections { "conn/s" } else { "req/s" };
    ctx.progress.line(format!(
        "   run {}/{} {what}: {:.0} {unit}, p50 {} p99 {}{}{}",
        ctx.progress.runs_done,
        ctx.progress.runs_planned,
        report.rps,
        fmt_us(report.p50_us),
        fmt_us(report.p99_us),
        if report.socket_errors + report.non_2xx > 0 {
            format!(
                ", {} socket errors, {} non-2xx",
                report.socket_errors, report.non_2xx
            )
        } else {
            String::new()
        },
        if idle { "" } else { " (machine was busy)" },
    ));
    if !report.healthy() {
        bail!(
            "wrk to {} completed {} requests with {} socket errors and {} non-2xx responses",
            target.url(services),
            report.requests,
            report.socket_errors,
            report.non_2xx
        );
    }
    Ok(report)
}

/// Five curl requests to a target; returns which endpoints answered.
fn check(clients: &Clients<'_>, target: Target, services: usize) -> anyhow::Result<String> {
    let url = target.url(services);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let mut cmd = clients.command(target, "curl");
        cmd.args(["-sS", "--max-time", "2", &url]);
        let out = run_bounded(cmd, Duration::from_secs(10), "curl")?;
        if !out.status.success() {
            bail!(
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !answer.starts_with("10.244.0.") {
            bail!("curl {url}: unexpected answer {answer:?}");
        }
        seen.insert(answer);
    }
    Ok(format!(
        "5/5 answered by {}",
        seen.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// Applies a ruleset (or an update with `update`) in the node; returns the wall time of the
/// tool, measured around the nsenter'd process (which adds about a millisecond).
fn apply_rules(
    node: &Node,
    datapath: Datapath,
    file: &Path,
    update: bool,
) -> anyhow::Result<(Duration, String)> {
    let (program, args): (&str, &[&str]) = match (datapath, update) {
        (Datapath::IptablesLegacy, false) => ("iptables-legacy-restore", &[]),
        (Datapath::IptablesLegacy, true) => ("iptables-legacy-restore", &["--noflush"]),
        (Datapath::IptablesNft, false) => ("iptables-nft-restore", &[]),
        (Datapath::IptablesNft, true) => ("iptables-nft-restore", &["--noflush"]),
        (Datapath::Nft, _) => ("nft", &["-f", "-"]),
        _ => bail!("{} has no ruleset", datapath.label()),
    };
    let how = format!("{program} {}", args.join(" ")).trim().to_owned();
    let input = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut cmd = node.ns.command(program);
    cmd.args(args);
    let started = Instant::now();
    let out = run_bounded_with_stdin(cmd, input.into(), Duration::from_secs(900), &how)?;
    let took = started.elapsed();
    if !out.status.success() {
        bail!(
            "{how} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((took, how))
}

/// One-endpoint updates at the largest size (and, for skiff, re-adopting the maps).
fn updates(
    ctx: &mut Ctx<'_>,
    node: &Node,
    datapath: Datapath,
    services: usize,
    skiff: Option<&mut Skiff>,
) -> anyhow::Result<()> {
    let svc = services / 2;
    ctx.progress.line(format!(
        "   timing one-endpoint changes of service {svc} in the {services}-service table"
    ));
    wait_idle(IDLE_WAIT);
    if let Some(s) = skiff {
        let samples = s.endpoint_changes(ctx.settings.skiff_changes, |v| {
            skiff::cluster_ip(svc, ENDPOINTS, v)
        })?;
        let us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        ctx.progress.line(format!(
            "   {} changes: median {} p99 {}",
            samples.len(),
            fmt_us(super::stats::median(&us).unwrap_or(f64::NAN)),
            fmt_us(super::stats::quantile(&us, 0.99).unwrap_or(f64::NAN)),
        ));
        ctx.results.programming.push(Programming {
            datapath,
            services,
            op: ProgOp::EndpointChange,
            samples,
            how: "LbTable::upsert of the service with one backend replaced (in-process)".to_owned(),
        });
        let reopen: Vec<Duration> = (0..3).map(|_| s.reopen()).collect::<Result<_, _>>()?;
        ctx.results.programming.push(Programming {
            datapath,
            services,
            op: ProgOp::Reopen,
            samples: reopen,
            how: "LbTable::open on the pinned maps (a restarted agent adopting them)".to_owned(),
        });
        distinct_endpoints(ctx, services)?;
        return Ok(());
    }
    let mut version = Version::A;
    let mut samples = Vec::new();
    let mut how = String::new();
    for _ in 0..ctx.settings.update_reps {
        let next = version.other();
        let (file, text) = if datapath == Datapath::Nft {
            (
                "update.nft",
                rules::nft_update(svc, ENDPOINTS, version, next),
            )
        } else {
            (
                "update.iptables",
                rules::iptables_update(svc, ENDPOINTS, version, next),
            )
        };
        let path = ctx.work.path().join(file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        wait_idle(IDLE_WAIT);
        let (took, h) = apply_rules(node, datapath, &path, true)?;
        ctx.progress
            .line(format!("   {h} (one endpoint): {}", fmt_duration(took)));
        samples.push(took);
        how = h;
        version = next;
    }
    ctx.results.programming.push(Programming {
        datapath,
        services,
        op: ProgOp::EndpointChange,
        samples,
        how: format!(
            "{how}: {}",
            if datapath == Datapath::Nft {
                "add the new endpoint chain, flush + rewrite the service chain, delete the old chain"
            } else {
                "the service chain redeclared and rewritten, new SEP chain, old one flushed and -X"
            }
        ),
    });
    Ok(())
}

/// The same programming with endpoints of its own per service (10 x services backends, as
/// pods are), in a separate table no program reads: the traffic configurations share 10
/// endpoints across all services (as gen.py does), which keeps skiff's backend map tiny.
fn distinct_endpoints(ctx: &mut Ctx<'_>, services: usize) -> anyhow::Result<()> {
    let svc = services / 2;
    let mut table = Skiff::detached()?;
    let all: Vec<_> = (0..services)
        .map(|i| skiff::distinct(i, ENDPOINTS, Version::A))
        .collect();
    wait_idle(IDLE_WAIT);
    let took = table.install(&all)?;
    ctx.progress.line(format!(
        "   distinct endpoints: {} services x {ENDPOINTS} own endpoints programmed in {}",
        services,
        fmt_duration(took)
    ));
    ctx.results.programming.push(Programming {
        datapath: Datapath::Skiff,
        services,
        op: ProgOp::FullLoadDistinct,
        samples: vec![took],
        how: format!(
            "as above, but every service has {ENDPOINTS} endpoints of its own ({} backends)",
            services * ENDPOINTS
        ),
    });
    let samples = table.endpoint_changes(ctx.settings.skiff_changes, |v| {
        skiff::distinct(svc, ENDPOINTS, v)
    })?;
    let us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    ctx.progress.line(format!(
        "   distinct endpoints: {} changes: median {} p99 {}",
        samples.len(),
        fmt_us(super::stats::median(&us).unwrap_or(f64::NAN)),
        fmt_us(super::stats::quantile(&us, 0.99).unwrap_or(f64::NAN)),
    ));
    ctx.results.programming.push(Programming {
        datapath: Datapath::Skiff,
        services,
        op: ProgOp::EndpointChangeDistinct,
        samples,
        how: format!(
            "LbTable::upsert with one backend replaced, in the table with {} backends",
            services * ENDPOINTS
        ),
    });
    Ok(())
}

/// Empties the node's ruleset before the namespace goes, so its (asynchronous) cleanup does not
/// overlap the next configuration's measurements.
fn teardown_rules(node: &Node, datapath: Datapath) {
    let cmds: &[&[&str]] = match datapath {
        Datapath::IptablesLegacy => &[
            &["iptables-legacy", "-t", "nat", "-F"],
            &["iptables-legacy", "-t", "nat", "-X"],
        ],
        Datapath::IptablesNft => &[
            &["iptables-nft", "-t", "nat", "-F"],
            &["iptables-nft", "-t", "nat", "-X"],
        ],
        Datapath::Nft => &[&["nft", "flush", "ruleset"]],
        Datapath::Direct | Datapath::Skiff => &[],
    };
    for args in cmds {
        let mut cmd = node.ns.command(args[0]);
        cmd.args(&args[1..]);
        let _ = run_ok(cmd, Duration::from_secs(300), args[0]);
    }
}

pub fn fmt_us(us: f64) -> String {
    if us.is_nan() {
        "-".to_owned()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn fmt_duration(d: Duration) -> String {
    fmt_us(d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(only: Option<&[&str]>) -> DatapathArgs {
        DatapathArgs {
            quick: true,
            sizes: None,
            duration: None,
            reps: None,
            only: only.map(|o| o.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn only_picks_datapaths_in_run_order_and_names_the_choices_on_a_typo() {
        assert_eq!(
            Settings::resolve(&args(None)).unwrap().datapaths,
            Datapath::MEASURED
        );
        assert_eq!(
            Settings::resolve(&args(Some(&["nft", "skiff"])))
                .unwrap()
                .datapaths,
            [Datapath::Skiff, Datapath::Nft]
        );
        let err = Settings::resolve(&args(Some(&["ipvs"]))).unwrap_err();
        assert!(
            err.to_string()
                .contains("skiff, iptables-legacy, iptables-nft and nft"),
            "{err}"
        );
    }
}
