//! Turning [`Results`] into the console table, target/bench/datapath.md and the target checks.

use std::{fmt::Write as _, fs, path::Path, process::Command, time::Duration};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::{
    scenario::{
        Datapath, ENDPOINTS, Measurement, NODE_PORT, ProgOp, Programming, Results, Settings,
        Target, fmt_us,
    },
    stats::{median, min_max, quantile},
};

/// The machine and tools a run measured on.
#[derive(Debug, Clone)]
pub struct Environment {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub commit: String,
    pub tools: Vec<String>,
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program).args(args).output().map_or_else(
        |_| format!("{program}: not found"),
        |o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_owned()
        },
    )
}

impl Environment {
    pub fn probe(root: &Path) -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
        let memory = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        let mut commit = first_line(
            "git",
            &[
                "-C",
                &root.to_string_lossy(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        );
        if Command::new("git")
            .args(["-C", &root.to_string_lossy(), "diff", "--quiet", "HEAD"])
            .status()
            .is_ok_and(|s| !s.success())
        {
            commit.push_str(" (with uncommitted changes)");
        }
        Self {
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory,
            commit,
            tools: vec![
                first_line("wrk", &["-v"])
                    .split(" Copyright")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                first_line("nginx", &["-v"]),
                first_line("iptables-legacy", &["-V"]),
                first_line("iptables-nft", &["-V"]),
                first_line("nft", &["-v"]),
                first_line("conntrack", &["-V"]),
            ],
        }
    }
}

/// One measured row with its summaries.
#[derive(Debug, Clone)]
pub struct Row {
    pub m: Measurement,
    pub close: Option<f64>,
    pub close_range: Option<(f64, f64)>,
    pub keepalive: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub close_ratio: Option<f64>,
    pub keepalive_ratio: Option<f64>,
}

/// A target of the issue and whether this run met it.
#[derive(Debug, Clone)]
pub struct Check {
    pub target: &'static str,
    pub measured: String,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    NotMeasured,
}

impl Status {
    const fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "**missed**",
            Self::NotMeasured => "not measured",
        }
    }
}

pub struct Report {
    pub env: Environment,
    pub settings: Settings,
    pub results: Results,
    pub elapsed: Duration,
    pub rows: Vec<Row>,
    /// Pooled direct medians: (from the node, forwarded from ext) x (new conn, keep-alive).
    pub baseline: Baseline,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline {
    pub node_close: Option<f64>,
    pub node_keepalive: Option<f64>,
    pub fwd_close: Option<f64>,
    pub fwd_keepalive: Option<f64>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_k(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v >= 10_000.0 => format!("{:.1}k", v / 1000.0),
        Some(v) if v >= 1000.0 => format!("{:.2}k", v / 1000.0),
        Some(v) => format!("{v:.0}"),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn fmt_services(n: Option<usize>) -> String {
    n.map_or_else(|| "-".to_owned(), thousands)
}

pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    pub fn new(env: Environment, settings: Settings, results: Results, elapsed: Duration) -> Self {
        let pooled = |target: Target, keepalive: bool| {
            let values: Vec<f64> = results
                .measurements
                .iter()
                .filter(|m| m.datapath == Datapath::Direct && m.target == target)
                .flat_map(|m| {
                    let runs = if keepalive { &m.keepalive } else { &m.close };
                    runs.iter().map(|r| r.rps).collect::<Vec<_>>()
                })
                .collect();
            median(&values)
        };
        let baseline = Baseline {
            node_close: pooled(Target::Endpoint, false),
            node_keepalive: pooled(Target::Endpoint, true),
            fwd_close: pooled(Target::Forwarded, false),
            fwd_keepalive: pooled(Target::Forwarded, true),
        };
        let rows = results
            .measurements
            .iter()
            .map(|m| {
                let rps: Vec<f64> = m.close.iter().map(|r| r.rps).collect();
                let p50: Vec<f64> = m.close.iter().map(|r| r.p50_us).collect();
                let p99: Vec<f64> = m.close.iter().map(|r| r.p99_us).collect();
                let close = median(&rps);
                let ka: Vec<f64> = m.keepalive.iter().map(|r| r.rps).collect();
                let keepalive = median(&ka);
                let (base_close, base_ka) = if m.target.external() {
                    (baseline.fwd_close, baseline.fwd_keepalive)
                } else {
                    (baseline.node_close, baseline.node_keepalive)
                };
                Row {
                    m: m.clone(),
                    close,
                    close_range: min_max(&rps),
                    keepalive,
                    p50: median(&p50),
                    p99: median(&p99),
                    close_ratio: ratio(close, base_close),
                    keepalive_ratio: ratio(keepalive, base_ka),
                }
            })
            .collect();
        Self {
            env,
            settings,
            results,
            elapsed,
            rows,
            baseline,
        }
    }

    /// The row of a datapath, size and target.
    pub fn row(&self, datapath: Datapath, services: usize, target: Target) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.m.datapath == datapath && r.m.services == Some(services) && r.m.target == target
        })
    }

    pub fn programming(
        &self,
        datapath: Datapath,
        services: usize,
        op: ProgOp,
    ) -> Option<&Programming> {
        self.results
            .programming
            .iter()
            .find(|p| p.datapath == datapath && p.services == services && p.op == op)
    }

    fn close_cell(row: &Row) -> String {
        match (&row.m.failed, row.close, row.close_range) {
            (Some(_), _, _) => "failed".to_owned(),
            (None, Some(c), Some((lo, hi))) if row.m.close.len() > 1 => {
                format!(
                    "{} ({}–{})",
                    fmt_k(Some(c)),
                    fmt_k(Some(lo)),
                    fmt_k(Some(hi))
                )
            }
            (None, c, _) => fmt_k(c),
        }
    }

    fn datapath_cell(row: &Row) -> String {
        if row.m.phase.is_empty() {
            row.m.datapath.label().to_owned()
        } else {
            format!("{} [{}]", row.m.datapath.label(), row.m.phase)
        }
    }

    pub fn console_table(&self) -> String {
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED).set_header(vec![
            "datapath",
            "services",
            "target",
            "new conn/s (min–max)",
            "x direct",
            "keep-alive req/s",
            "x direct",
            "p50 / p99 (new conn)",
        ]);
        for row in &self.rows {
            table.add_row(vec![
                Self::datapath_cell(row),
                fmt_services(row.m.services),
                row.m.target.label(row.m.datapath).to_owned(),
                Self::close_cell(row),
                fmt_ratio(row.close_ratio),
                fmt_k(row.keepalive),
                fmt_ratio(row.keepalive_ratio),
                format!(
                    "{} / {}",
                    fmt_us(row.p50.unwrap_or(f64::NAN)),
                    fmt_us(row.p99.unwrap_or(f64::NAN))
                ),
            ]);
        }
        let mut out = format!(
            "Datapath benchmark ({} s runs, medians of {}; ratios against the pooled \
             direct medians: pod IP from node for node-side targets, pod IP via node for NodePort)\n",
            self.settings.duration.as_secs(),
            self.settings.reps
        );
        out.push_str(&table.to_string());
        out.push('\n');
        let mut prog = Table::new();
        prog.load_style(UTF8_FULL_CONDENSED).set_header(vec![
            "programming",
            "services",
            "operation",
            "time",
        ]);
        for p in &self.results.programming {
            prog.add_row(vec![
                p.datapath.label().to_owned(),
                thousands(p.services),
                op_label(p.op).to_owned(),
                prog_cell(p),
            ]);
        }
        out.push_str(&prog.to_string());
        out
    }

    pub fn checks(&self) -> Vec<Check> {
        let sizes = &self.settings.sizes;
        let largest = *sizes.last().expect("at least one size");
        let mut checks = Vec::new();

        // 1. Socket LB vs no rules, at every size.
        let mut measured = Vec::new();
        let mut ok = true;
        let mut any = false;
        for &n in sizes {
            match self.row(Datapath::Skiff, n, Target::Service) {
                Some(r) if r.m.failed.is_none() => {
                    any = true;
                    let (c, k) = (r.close_ratio, r.keepalive_ratio);
                    ok &= c.is_some_and(|c| c >= 0.95) && k.is_some_and(|k| k >= 0.95);
                    measured.push(format!(
                        "{}: new conn {}x, keep-alive {}x",
                        thousands(n),
                        fmt_ratio(c),
                        fmt_ratio(k)
                    ));
                }
                Some(r) => {
                    ok = false;
                    any = true;
                    measured.push(format!("{}: failed ({})", thousands(n), short(r)));
                }
                None => {}
            }
        }
        checks.push(Check {
            target: "socket LB >= 0.95x the no-rules baseline at every service count (new connections and keep-alive)",
            measured: measured.join("; "),
            status: status(any, ok),
        });

        // 2. Socket LB vs nft.
        let mut measured = Vec::new();
        let mut ok = true;
        let mut any = false;
        for &n in sizes {
            let (Some(s), Some(f)) = (
                self.row(Datapath::Skiff, n, Target::Service),
                self.row(Datapath::Nft, n, Target::Service),
            ) else {
                continue;
            };
            any = true;
            let c = ratio(s.close, f.close);
            let k = ratio(s.keepalive, f.keepalive);
            ok &= c.is_some_and(|c| c >= 1.0) && k.is_some_and(|k| k >= 1.0);
            measured.push(format!(
                "{}: new conn {}x nft, keep-alive {}x nft",
                thousands(n),
                fmt_ratio(c),
                fmt_ratio(k)
            ));
        }
        checks.push(Check {
            target: "socket LB >= nft native (same ClusterIP, same service count)",
            measured: measured.join("; "),
            status: status(any, ok),
        });

        // 3. Non-service traffic at 10,000 services.
        checks.push(match self.row(Datapath::Skiff, 10_000, Target::Endpoint) {
            Some(r) if r.m.failed.is_none() => Check {
                target: "non-service traffic >= 0.95x of no rules at 10,000 services",
                measured: format!(
                    "pod IP from the LB cgroup: new conn {}x, keep-alive {}x",
                    fmt_ratio(r.close_ratio),
                    fmt_ratio(r.keepalive_ratio)
                ),
                status: status(
                    true,
                    r.close_ratio.is_some_and(|c| c >= 0.95)
                        && r.keepalive_ratio.is_some_and(|k| k >= 0.95),
                ),
            },
            Some(r) => Check {
                target: "non-service traffic >= 0.95x of no rules at 10,000 services",
                measured: format!("failed ({})", short(r)),
                status: Status::Missed,
            },
            None => Check {
                target: "non-service traffic >= 0.95x of no rules at 10,000 services",
                measured: format!(
                    "10,000 services not in this run{}",
                    self.row(Datapath::Skiff, largest, Target::Endpoint)
                        .and_then(|r| r.close_ratio)
                        .map(|c| format!(" (at {}: new conn {c:.2}x)", thousands(largest)))
                        .unwrap_or_default()
                ),
                status: Status::NotMeasured,
            },
        });

        // 4. tc NodePort vs iptables NodePort at 1 service.
        let np = |d: Datapath, n: usize| self.row(d, n, Target::NodePort);
        checks.push(match np(Datapath::Skiff, 1) {
            None => Check {
                target: "tc NodePort >= iptables' NodePort at 1 service",
                measured: "1 service not in this run".to_owned(),
                status: Status::NotMeasured,
            },
            Some(r) if r.m.failed.is_some() => Check {
                target: "tc NodePort >= iptables' NodePort at 1 service",
                measured: format!("skiff NodePort failed: {}", short(r)),
                status: Status::Missed,
            },
            Some(r) => {
                let best = [Datapath::IptablesLegacy, Datapath::IptablesNft]
                    .into_iter()
                    .filter_map(|d| np(d, 1).and_then(|r| r.close))
                    .fold(None, |acc: Option<f64>, v| {
                        Some(acc.map_or(v, |a| a.max(v)))
                    });
                let ok = matches!((r.close, best), (Some(a), Some(b)) if a >= b);
                Check {
                    target: "tc NodePort >= iptables' NodePort at 1 service",
                    measured: format!(
                        "skiff {} conn/s vs best iptables {} conn/s",
                        fmt_k(r.close),
                        fmt_k(best)
                    ),
                    status: status(best.is_some(), ok),
                }
            }
        });

        // 5. tc NodePort flat as services grow.
        let smallest = sizes[0];
        checks.push(
            match (np(Datapath::Skiff, smallest), np(Datapath::Skiff, largest)) {
                (Some(a), Some(b))
                    if a.m.failed.is_none() && b.m.failed.is_none() && smallest != largest =>
                {
                    let r = ratio(b.close, a.close);
                    Check {
                        target: "tc NodePort flat as services grow (largest / smallest >= 0.90)",
                        measured: format!(
                            "{} conn/s at {} vs {} at {}: {}x",
                            fmt_k(b.close),
                            thousands(largest),
                            fmt_k(a.close),
                            thousands(smallest),
                            fmt_ratio(r)
                        ),
                        status: status(true, r.is_some_and(|r| r >= 0.90)),
                    }
                }
                (Some(a), Some(b)) if a.m.failed.is_some() || b.m.failed.is_some() => Check {
                    target: "tc NodePort flat as services grow (largest / smallest >= 0.90)",
                    measured: "skiff NodePort failed".to_owned(),
                    status: Status::Missed,
                },
                _ => Check {
                    target: "tc NodePort flat as services grow (largest / smallest >= 0.90)",
                    measured: "needs two service counts".to_owned(),
                    status: Status::NotMeasured,
                },
            },
        );

        // 6. Full programming at 10k vs iptables-restore. iptables has a SEP chain per service
        // and endpoint whether or not services share endpoints, so the like-for-like skiff
        // number is the table with endpoints of its own per service; it decides the status.
        let full = |d: Datapath, n: usize, op: ProgOp| {
            self.programming(d, n, op)
                .and_then(|p| median(&secs(&p.samples)))
        };
        let prog_target = "full programming of 10,000 x 10 >= 20x faster than iptables-restore";
        let at = if sizes.contains(&10_000) {
            10_000
        } else {
            largest
        };
        let fastest = [Datapath::IptablesLegacy, Datapath::IptablesNft]
            .into_iter()
            .filter_map(|d| full(d, at, ProgOp::FullLoad).map(|t| (t, d)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let shared = full(Datapath::Skiff, at, ProgOp::FullLoad);
        let own = full(Datapath::Skiff, at, ProgOp::FullLoadDistinct);
        let speedup = |skiff: Option<f64>| Some(fastest?.0 / skiff?);
        let decisive = speedup(own.or(shared));
        let measured = format!(
            "{}skiff {} with own endpoints per service ({}), {} with 10 shared endpoints ({}), vs {} {}",
            if at == 10_000 {
                String::new()
            } else {
                format!("10,000 services not in this run; at {}: ", thousands(at))
            },
            own.map_or_else(|| "-".to_owned(), fmt_secs),
            speedup(own).map_or_else(|| "-".to_owned(), |s| format!("{s:.0}x")),
            shared.map_or_else(|| "-".to_owned(), fmt_secs),
            speedup(shared).map_or_else(|| "-".to_owned(), |s| format!("{s:.0}x")),
            fastest.map_or("iptables-restore", |(_, d)| d.label()),
            fastest.map_or_else(|| "-".to_owned(), |(t, _)| fmt_secs(t)),
        );
        checks.push(Check {
            target: prog_target,
            measured,
            status: if at == 10_000 {
                status(decisive.is_some(), decisive.is_some_and(|s| s >= 20.0))
            } else {
                Status::NotMeasured
            },
        });

        // 7. Single endpoint change; the table with endpoints of its own per service decides.
        let change_target = "single endpoint change within 1 ms (p99 of the timed changes)";
        let describe = |op: ProgOp| {
            let p = self.programming(Datapath::Skiff, largest, op)?;
            let us: Vec<f64> = p.samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            let p99 = quantile(&us, 0.99)?;
            Some((
                p99,
                format!(
                    "median {}, p99 {}, max {} ({} changes)",
                    fmt_us(median(&us).unwrap_or(f64::NAN)),
                    fmt_us(p99),
                    fmt_us(min_max(&us).map_or(f64::NAN, |(_, hi)| hi)),
                    us.len()
                ),
            ))
        };
        let shared = describe(ProgOp::EndpointChange);
        let own = describe(ProgOp::EndpointChangeDistinct);
        checks.push(match own.as_ref().or(shared.as_ref()) {
            Some(&(p99, _)) => Check {
                target: change_target,
                measured: format!(
                    "in a {}-service table: own endpoints per service {}; 10 shared endpoints {}",
                    thousands(largest),
                    own.as_ref().map_or("-", |o| o.1.as_str()),
                    shared.as_ref().map_or("-", |o| o.1.as_str()),
                ),
                status: status(true, p99 <= 1000.0),
            },
            None => Check {
                target: change_target,
                measured: "not timed (skiff's configuration failed)".to_owned(),
                status: Status::Missed,
            },
        });
        checks
    }

    pub fn targets_summary(&self) -> String {
        let mut out = String::from("Targets from the issue:\n");
        for c in self.checks() {
            let _ = writeln!(
                out,
                "  [{}] {}\n        {}",
                c.status.label().trim_matches('*'),
                c.target,
                c.measured
            );
        }
        out
    }

    /// Targets that could not be measured, other than NodePorts (a NodePort that fails is a
    /// result: the tc translation may not be in this build yet).
    pub fn unexpected_failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.m.failed.is_some() && r.m.target != Target::NodePort)
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.m.datapath.label(),
                    fmt_services(r.m.services),
                    r.m.target.label(r.m.datapath)
                )
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let env = &self.env;
        let mut md = String::new();
        let _ = writeln!(md, "# skiff datapath benchmark\n");
        let _ = writeln!(
            md,
            "Measured on {} by `cargo xtask bench datapath{}` at commit {}, in {:.0} min.\n",
            env.date,
            if s.quick { " --quick" } else { "" },
            env.commit,
            self.elapsed.as_secs_f64() / 60.0
        );
        let _ = writeln!(
            md,
            "* **Machine:** kernel {}, {} CPUs ({}), {} of memory.",
            env.kernel, env.cpus, env.cpu_model, env.memory
        );
        let _ = writeln!(md, "* **Tools:** {}.", env.tools.join("; "));
        let _ = writeln!(
            md,
            "* **Load:** `wrk -t1 -c32 -d{}s --latency [-H 'Connection: close'] URL`. New connections and \
             keep-alive: median of {} repetition(s) each, interleaved over the targets of a \
             configuration (min–max of new connections in brackets). \
             Before every run: `conntrack -F` in the node, {} s pause, wait until the machine is idle \
             (< 8% CPU over 1 s, at most 10 s). Backend `tcp_max_tw_buckets=1024`, clients \
             `tcp_tw_reuse=1`.",
            s.duration.as_secs(),
            s.reps,
            s.settle.as_secs()
        );
        let _ = writeln!(
            md,
            "* **Services:** {} x {ENDPOINTS} endpoints; the ClusterIP target is the LAST service \
             (the end of iptables' KUBE-SERVICES walk), which also has NodePort {NODE_PORT}. \
             Rulesets: the Rust port of gen.py (xtask/src/bench/rules.rs); skiff: `LbTable` on \
             the pinned maps.",
            s.sizes
                .iter()
                .map(|&n| thousands(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            md,
            "* **Topology:** backend netns (nginx, 1 worker, 10.244.0.2–12) ── veth ── node netns \
             (rules or skiff; wrk for ClusterIP and pod-IP targets; skiff's wrk runs in a cgroup \
             with connect4 attached; tc on both node interfaces) ── veth ── ext netns (wrk for \
             NodePort targets). A fresh node netns per configuration.",
        );
        let _ = writeln!(
            md,
            "* **Ratios** divide by the pooled median of the direct runs (start and end): \
             \"pod IP from node\" for node-side targets ({} new conn/s, {} keep-alive), \"pod IP \
             via node\" (forwarded, no rules) for NodePort targets ({} / {}).",
            fmt_k(self.baseline.node_close),
            fmt_k(self.baseline.node_keepalive),
            fmt_k(self.baseline.fwd_close),
            fmt_k(self.baseline.fwd_keepalive)
        );
        let _ = writeln!(
            md,
            "* **Noise:** {} of {} runs started while the machine was busy (another process used \
             the CPUs). The baseline measured ±10–25% between runs on this kind of VM: read \
             differences under ~10% as noise.\n",
            self.results.busy_runs, self.results.total_runs
        );

        let _ = writeln!(md, "## Targets from the issue\n");
        let _ = writeln!(md, "| target | measured | status |\n|---|---|---|");
        for c in self.checks() {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                c.target,
                c.measured,
                c.status.label()
            );
        }

        let _ = writeln!(md, "\n## Traffic\n");
        let _ = writeln!(
            md,
            "| datapath | services | target | new conn/s median (min–max) | x direct | keep-alive req/s | x direct | p50 / p99, new conn | checked |\n|---|---|---|---|---|---|---|---|---|"
        );
        for row in &self.rows {
            let checked = match &row.m.failed {
                Some(why) => format!("FAILED: {}", why.replace('|', "\\|").replace('\n', " ")),
                None => row.m.checked.clone(),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                Self::datapath_cell(row),
                fmt_services(row.m.services),
                row.m.target.label(row.m.datapath),
                Self::close_cell(row),
                fmt_ratio(row.close_ratio),
                fmt_k(row.keepalive),
                fmt_ratio(row.keepalive_ratio),
                fmt_us(row.p50.unwrap_or(f64::NAN)),
                fmt_us(row.p99.unwrap_or(f64::NAN)),
                checked
            );
        }

        let _ = writeln!(md, "\n## Programming time\n");
        let _ = writeln!(
            md,
            "Initial loads are single runs (the load of each configuration above, into an empty \
             node). Updates change one endpoint of service {} in the {}-service table, \
             alternating between two endpoint sets so every apply is a real change. Tool times \
             are wall time around the nsenter'd process (about 1 ms of that is nsenter and exec); \
             skiff's are timed in-process.\n",
            s.program_size() / 2,
            thousands(s.program_size())
        );
        let _ = writeln!(
            md,
            "| datapath | services | operation | time | samples | how |\n|---|---|---|---|---|---|"
        );
        for p in &self.results.programming {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                p.datapath.label(),
                thousands(p.services),
                op_label(p.op),
                prog_cell(p),
                p.samples.len(),
                p.how
            );
        }
        for (op, what) in [
            (
                ProgOp::EndpointChange,
                "10 endpoints shared by all services",
            ),
            (
                ProgOp::EndpointChangeDistinct,
                "10 endpoints of its own per service",
            ),
        ] {
            if let Some(p) = self.programming(Datapath::Skiff, s.program_size(), op) {
                let us: Vec<f64> = p.samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
                let _ = writeln!(
                    md,
                    "\nskiff single-endpoint change ({what}): median {:.1} µs, p99 {:.1} µs, max {:.1} µs over {} changes.",
                    median(&us).unwrap_or(f64::NAN),
                    quantile(&us, 0.99).unwrap_or(f64::NAN),
                    min_max(&us).map_or(f64::NAN, |(_, hi)| hi),
                    us.len()
                );
            }
        }
        if !self.results.notes.is_empty() {
            let _ = writeln!(md, "\n## Failures\n");
            for n in &self.results.notes {
                let _ = writeln!(md, "* {n}");
            }
        }
        let _ = writeln!(md, "\n![plot](datapath.png)");
        md
    }
}

fn status(any: bool, ok: bool) -> Status {
    match (any, ok) {
        (false, _) => Status::NotMeasured,
        (true, true) => Status::Met,
        (true, false) => Status::Missed,
    }
}

fn short(row: &Row) -> String {
    let why = row.m.failed.clone().unwrap_or_default();
    let first = why.lines().next().unwrap_or_default();
    if first.chars().count() > 160 {
        format!("{}…", first.chars().take(160).collect::<String>())
    } else {
        first.to_owned()
    }
}

fn secs(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(Duration::as_secs_f64).collect()
}

fn fmt_secs(s: f64) -> String {
    fmt_us(s * 1e6)
}

pub const fn op_label(op: ProgOp) -> &'static str {
    match op {
        ProgOp::FullLoad => "initial load from empty",
        ProgOp::EndpointChange => "one endpoint changed",
        ProgOp::Reopen => "agent restart: adopt pinned maps",
        ProgOp::FullLoadDistinct => "initial load, own endpoints per service",
        ProgOp::EndpointChangeDistinct => "one endpoint changed, own endpoints per service",
    }
}

fn prog_cell(p: &Programming) -> String {
    let v = secs(&p.samples);
    match (median(&v), min_max(&v)) {
        (Some(m), Some((lo, hi))) if v.len() > 1 => {
            format!("{} ({}–{})", fmt_secs(m), fmt_secs(lo), fmt_secs(hi))
        }
        (Some(m), _) => fmt_secs(m),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::fmt_duration;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1), "1");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn compact_numbers() {
        assert_eq!(fmt_k(Some(25_850.0)), "25.9k");
        assert_eq!(fmt_k(Some(3_790.0)), "3.79k");
        assert_eq!(fmt_k(Some(512.0)), "512");
        assert_eq!(fmt_k(None), "-");
        assert_eq!(fmt_duration(Duration::from_micros(250)), "250 µs");
    }
}
