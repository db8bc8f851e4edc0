//! Running wrk and reading its report.
//!
//! Runs are `wrk -t1 -c32 -d<N>s --latency [-H 'Connection: close'] URL`, as in the kube-proxy
//! baseline. wrk's latency timer starts when the request is written, after connect(), so its
//! percentiles show the SYN path only as queueing under saturation.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};

use super::topology::run_bounded;

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkReport {
    /// `Requests/sec`.
    pub rps: f64,
    /// Completed requests.
    pub requests: u64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Socket errors of all kinds (connect, read, write, timeout).
    pub socket_errors: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
}

impl WrkReport {
    /// A run whose errors outnumber 1% of its requests did not measure the datapath.
    pub fn healthy(&self) -> bool {
        self.requests > 0 && (self.socket_errors + self.non_2xx) * 100 <= self.requests
    }
}

/// A duration as wrk prints it (`612.34us`, `1.20ms`, `2.00s`, `1.50m`), in microseconds.
fn parse_duration_us(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(value * factor)
}

/// Parses the output of `wrk --latency`.
pub fn parse(output: &str) -> anyhow::Result<WrkReport> {
    let mut rps = None;
    let mut requests = None;
    let (mut p50, mut p99) = (None, None);
    let mut socket_errors = 0;
    let mut non_2xx = 0;
    for line in output.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = parse_duration_us(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = parse_duration_us(v.trim());
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = count.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    let requests = requests.context("wrk printed no `N requests in` line")?;
    // wrk prints no latency distribution when nothing completed.
    let (p50_us, p99_us) = if requests == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (
            p50.context("wrk printed no 50% latency (was --latency given?)")?,
            p99.context("wrk printed no 99% latency")?,
        )
    };
    Ok(WrkReport {
        rps: rps.context("wrk printed no Requests/sec")?,
        requests,
        p50_us,
        p99_us,
        socket_errors,
        non_2xx,
    })
}

/// Runs wrk (already wrapped by `cmd` into its namespace and cgroup) against `url`.
pub fn run(
    mut cmd: Command,
    url: &str,
    duration: Duration,
    new_connections: bool,
) -> anyhow::Result<WrkReport> {
    cmd.args(["-t1", "-c32"])
        .arg(format!("-d{}s", duration.as_secs()))
        .arg("--latency");
    if new_connections {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    let out = run_bounded(cmd, duration + Duration::from_secs(30), "wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&stdout).with_context(|| format!("reading wrk's report:\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSE_RUN: &str = "\
Running 5s test @ http://10.96.39.250/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.66ms    2.01ms  27.05ms   71.35%
    Req/Sec     3.81k   240.11     4.20k    72.00%
  Latency Distribution
     50%    3.66ms
     75%    4.80ms
     90%    6.01ms
     99%    8.32ms
  18956 requests in 5.00s, 2.91MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
Requests/sec:   3790.31
Transfer/sec:    596.53KB
";

    #[test]
    fn parses_a_connection_close_run() {
        let r = parse(CLOSE_RUN).unwrap();
        assert!((r.rps - 3790.31).abs() < 1e-9);
        assert_eq!(r.requests, 18956);
        assert!((r.p50_us - 3660.0).abs() < 1e-6);
        assert!((r.p99_us - 8320.0).abs() < 1e-6);
        assert_eq!(r.socket_errors, 15);
        assert_eq!(r.non_2xx, 0);
        assert!(r.healthy());
    }

    #[test]
    fn parses_microseconds_seconds_and_non_2xx() {
        let out = "\
  Latency Distribution
     50%  612.00us
     75%  700.00us
     90%  800.00us
     99%    1.20s
  1000 requests in 2.00s, 1.00MB read
  Non-2xx or 3xx responses: 50
Requests/sec:    500.00
";
        let r = parse(out).unwrap();
        assert!((r.p50_us - 612.0).abs() < 1e-9);
        assert!((r.p99_us - 1.2e6).abs() < 1e-3);
        assert_eq!(r.non_2xx, 50);
        assert!(!r.healthy(), "5% non-2xx is not a measurement");
    }

    #[test]
    fn a_run_where_nothing_completed_parses_and_is_unhealthy() {
        let out = "\
Running 2s test @ http://198.18.0.1:30080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
  0 requests in 2.00s, 0.00B read
  Socket errors: connect 64231, read 0, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
";
        let r = parse(out).unwrap();
        assert_eq!((r.requests, r.socket_errors), (0, 64231));
        assert!(!r.healthy());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("unable to connect to 10.0.0.1:80 Connection refused").is_err());
        assert_eq!(parse_duration_us("12.5xs"), None);
        assert_eq!(parse_duration_us("1.50m"), Some(90e6));
    }
}
