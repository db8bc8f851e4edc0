//! Liveness, readiness and startup probes: one task per (container run, probe) that runs the
//! handler (exec through CRI ExecSync, httpGet, tcpSocket) on its period and tells the pod's
//! worker when the outcome flips. Network probes connect from the kubelet's network namespace
//! (the node's) to the pod IP, as the kubelet does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Notify,
    task::JoinHandle,
};
use tracing::debug;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

/// The outcome so far of one probe of one container run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided yet (initial delay, or below the thresholds).
    Unknown,
    Success,
    Failure,
}

type Results = Arc<Mutex<HashMap<(String, Kind), Outcome>>>;

/// The probes of one pod.
pub struct Probes {
    tasks: HashMap<(String, Kind), JoinHandle<()>>,
    results: Results,
    /// Woken when an outcome changes.
    pub changed: Arc<Notify>,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            tasks: HashMap::new(),
            results: Arc::default(),
            changed: Arc::new(Notify::new()),
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
        Kind::Startup => c.startup_probe.as_ref(),
    }
}

impl Probes {
    /// Makes the probe tasks match `running`: (container spec, id of its running instance).
    /// Tasks of runs that ended stop.
    pub fn reconcile<R: Runtime>(
        &mut self,
        runtime: &Arc<R>,
        pod_ip: &str,
        running: &[(&Container, String)],
    ) {
        let mut wanted = HashMap::new();
        for (c, id) in running {
            for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
                if let Some(p) = probe_of(c, kind) {
                    wanted.insert((id.clone(), kind), ((*c).clone(), p.clone()));
                }
            }
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        if let Ok(mut results) = self.results.lock() {
            results.retain(|key, _| wanted.contains_key(key));
        }
        for (key, (container, probe)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run_probe(
                Arc::clone(runtime),
                key.clone(),
                container,
                probe,
                pod_ip.to_owned(),
                Arc::clone(&self.results),
                Arc::clone(&self.changed),
            ));
            self.tasks.insert(key, task);
        }
    }

    pub fn outcome(&self, id: &str, kind: Kind) -> Outcome {
        self.results
            .lock()
            .ok()
            .and_then(|r| r.get(&(id.to_owned(), kind)).copied())
            .unwrap_or(Outcome::Unknown)
    }

    /// Whether the run's startup probe (if any) has succeeded: until then the other probes
    /// wait and the container is not started.
    pub fn started(&self, c: &Container, id: &str) -> bool {
        c.startup_probe.is_none() || self.outcome(id, Kind::Startup) == Outcome::Success
    }

    /// Readiness of a running container: started and, with a readiness probe, passing it.
    pub fn ready(&self, c: &Container, id: &str) -> bool {
        self.started(c, id)
            && (c.readiness_probe.is_none()
                || self.outcome(id, Kind::Readiness) == Outcome::Success)
    }

    /// Why the run must be restarted: a failed liveness or startup probe.
    pub fn must_restart(&self, id: &str) -> Option<Kind> {
        [Kind::Liveness, Kind::Startup]
            .into_iter()
            .find(|k| self.outcome(id, *k) == Outcome::Failure)
    }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(
        v.and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default),
    )
}

async fn run_probe<R: Runtime>(
    runtime: Arc<R>,
    key: (String, Kind),
    container: Container,
    probe: Probe,
    pod_ip: String,
    results: Results,
    changed: Arc<Notify>,
) {
    let kind = key.1;
    let initial = Duration::from_secs(
        probe
            .initial_delay_seconds
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
    );
    let period = secs(probe.period_seconds, 10);
    let timeout = secs(probe.timeout_seconds, 1);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(initial).await;
    let (mut successes, mut failures) = (0, 0);
    loop {
        // Liveness and readiness wait for the startup probe.
        let gated = kind != Kind::Startup
            && container.startup_probe.is_some()
            && results
                .lock()
                .ok()
                .and_then(|r| r.get(&(key.0.clone(), Kind::Startup)).copied())
                != Some(Outcome::Success);
        if !gated {
            let ok = check(&*runtime, &key.0, &container, &probe, &pod_ip, timeout).await;
            if ok {
                successes += 1;
                failures = 0;
            } else {
                failures += 1;
                successes = 0;
            }
            let outcome = if successes >= success_threshold {
                Some(Outcome::Success)
            } else if failures >= failure_threshold {
                Some(Outcome::Failure)
            } else {
                None
            };
            if let Some(outcome) = outcome {
                let before = results
                    .lock()
                    .ok()
                    .and_then(|mut r| r.insert(key.clone(), outcome));
                if before != Some(outcome) {
                    debug!(container = %container.name, ?kind, ?outcome, "probe outcome");
                    changed.notify_one();
                }
                // A startup probe is done once it succeeds; a liveness failure ends the run.
                if (kind == Kind::Startup && outcome == Outcome::Success)
                    || (kind == Kind::Liveness && outcome == Outcome::Failure)
                {
                    return;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Runs the probe's handler once.
async fn check<R: Runtime>(
    runtime: &R,
    id: &str,
    container: &Container,
    probe: &Probe,
    pod_ip: &str,
    timeout: Duration,
) -> bool {
    let port = |p: &IntOrString| -> Option<u16> {
        match p {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        }
    };
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return matches!(runtime.exec_sync(id, cmd, timeout).await, Ok(out) if out.exit_code == 0);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_owned());
        let Some(port) = port(&tcp.port) else {
            return false;
        };
        return matches!(
            tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        );
    }
    if let Some(http) = &probe.http_get {
        let host = http.host.clone().unwrap_or_else(|| pod_ip.to_owned());
        let Some(port) = port(&http.port) else {
            return false;
        };
        if http.scheme.as_deref() == Some("HTTPS") {
            debug!(container = %container.name, "HTTPS probes are not supported; failing");
            return false;
        }
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: String = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n{headers}\r\n"
        );
        let attempt = async {
            let mut s = TcpStream::connect((host.as_str(), port)).await.ok()?;
            s.write_all(request.as_bytes()).await.ok()?;
            let mut head = [0_u8; 16];
            let mut n = 0;
            while n < 12 {
                let r = s.read(&mut head[n..]).await.ok()?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            // "HTTP/1.1 200 ..."
            let line = String::from_utf8_lossy(&head[..n]).into_owned();
            line.split_whitespace().nth(1)?.parse::<u16>().ok()
        };
        return matches!(
            tokio::time::timeout(timeout, attempt).await,
            Ok(Some(code)) if (200..400).contains(&code)
        );
    }
    // gRPC probes are not supported yet: passing beats restarting a healthy container.
    true
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, TCPSocketAction};
    use tokio::net::TcpListener;

    use super::*;
    use crate::fake::FakeRuntime;

    fn container() -> Container {
        Container {
            name: "app".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exec_probe_passes_on_exit_zero_only() {
        let fake = FakeRuntime::new();
        let probe = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        let t = Duration::from_secs(1);
        // The fake names the container by id lookup; an unknown id still answers 0.
        assert!(check(&fake, "c1", &container(), &probe, "", t).await);
        fake.set_exec_result("", 1);
        assert!(!check(&fake, "c1", &container(), &probe, "", t).await);
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_loopback_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = i32::from(listener.local_addr().unwrap().port());
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0_u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let code = if req.starts_with("GET /healthz ") {
                    "200 OK"
                } else {
                    "500 Oops"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let fake = FakeRuntime::new();
        let t = Duration::from_secs(1);
        let http = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                host: Some("127.0.0.1".into()),
                path: Some(path.into()),
                port: IntOrString::Int(port),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check(&fake, "c", &container(), &http("/healthz"), "", t).await);
        assert!(!check(&fake, "c", &container(), &http("/broken"), "", t).await);
        let tcp = |port: i32| Probe {
            tcp_socket: Some(TCPSocketAction {
                host: Some("127.0.0.1".into()),
                port: IntOrString::Int(port),
            }),
            ..Default::default()
        };
        assert!(check(&fake, "c", &container(), &tcp(port), "", t).await);
        server.abort();
        // Nothing listens on port 1 of loopback.
        assert!(!check(&fake, "c", &container(), &tcp(1), "", t).await);
    }
}
