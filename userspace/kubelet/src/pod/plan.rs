//! What a pod needs next, decided from its spec and what the runtime shows: the sandbox, init
//! containers one at a time in order, then the containers, restarts per restartPolicy with an
//! exponential back-off. Pure: the worker observes and executes.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::cri;

/// One sandbox as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxView {
    pub id: String,
    pub ready: bool,
    pub attempt: u32,
    pub ip: String,
}

/// The runtime's view of one pod.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The newest sandbox.
    pub sandbox: Option<SandboxView>,
    /// Container instances by container name, newest first.
    pub containers: HashMap<String, Vec<cri::ContainerStatus>>,
    /// Ids of the containers that belong to the newest sandbox.
    pub current: HashSet<String>,
}

impl Observed {
    pub fn latest(&self, name: &str) -> Option<&cri::ContainerStatus> {
        self.containers.get(name).and_then(|v| v.first())
    }

    /// The newest instance if it ran in the newest sandbox (init containers run again in a
    /// new sandbox).
    pub fn latest_current(&self, name: &str) -> Option<&cri::ContainerStatus> {
        self.latest(name).filter(|c| self.current.contains(&c.id))
    }

    pub fn previous(&self, name: &str) -> Option<&cri::ContainerStatus> {
        self.containers.get(name).and_then(|v| v.get(1))
    }
}

pub fn exited(c: &cri::ContainerStatus) -> bool {
    c.state == cri::ContainerState::ContainerExited as i32
}

pub fn running(c: &cri::ContainerStatus) -> bool {
    c.state == cri::ContainerState::ContainerRunning as i32
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop everything of the pod (its sandbox died, or the pod is finished).
    StopPod,
    CreateSandbox {
        attempt: u32,
    },
    Start {
        name: String,
        init: bool,
        attempt: u32,
    },
}

/// A container's waiting reason and message, as status shows it.
pub type Waiting = HashMap<String, (String, String)>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub waiting: Waiting,
    /// When a back-off ends and the pod needs another look.
    pub requeue: Option<Duration>,
}

/// Where the pod stands, from the spec and the observed containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub init_done: bool,
    /// Finished for good: `Some(true)` succeeded, `Some(false)` failed.
    pub finished: Option<bool>,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether the pod has finished (restartPolicy decides which exits are final).
pub fn progress(pod: &Pod, obs: &Observed) -> Progress {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = restart_policy(pod);
    let mut init_done = true;
    for c in spec.init_containers.iter().flatten() {
        match obs.latest_current(&c.name) {
            Some(s) if exited(s) && s.exit_code == 0 => {}
            Some(s) if exited(s) && policy == "Never" => {
                return Progress {
                    init_done: false,
                    finished: Some(false),
                };
            }
            _ => {
                init_done = false;
                break;
            }
        }
    }
    if !init_done || spec.containers.is_empty() {
        return Progress {
            init_done,
            finished: None,
        };
    }
    let finished = match policy {
        "Never" | "OnFailure" => {
            let all: Option<Vec<i32>> = spec
                .containers
                .iter()
                .map(|c| {
                    obs.latest(&c.name)
                        .filter(|s| exited(s))
                        .map(|s| s.exit_code)
                })
                .collect();
            all.and_then(|codes| {
                let ok = codes.iter().all(|c| *c == 0);
                // OnFailure restarts failures: only all-succeeded is final.
                (policy == "Never" || ok).then_some(ok)
            })
        }
        _ => None,
    };
    Progress {
        init_done,
        finished,
    }
}

/// Restart back-off per container: the first restart is immediate, then 10 s doubling to 300 s
/// (configurable), counted from the container's exit.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, (Duration, i64)>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// How long `key` must still wait after an exit at `finished_at` (nanoseconds since the
    /// epoch, like CRI times), or `None` when it may restart now.
    pub fn remaining(&mut self, key: &str, finished_at: i64, now: i64) -> Option<Duration> {
        let &(delay, last) = self.entries.get(key)?;
        // A container that stayed up long after its last restart starts over from `initial`.
        if nanos(now - last) > 2 * self.max {
            self.entries.remove(key);
            return None;
        }
        let since = nanos(now - finished_at);
        (since < delay).then(|| delay - since)
    }

    /// Records a restart of `key` now: the next one waits longer.
    pub fn record(&mut self, key: &str, now: i64) {
        let next = match self.entries.get(key) {
            None => self.initial,
            Some((d, _)) => (*d * 2).min(self.max),
        };
        self.entries.insert(key.to_owned(), (next, now));
    }

    /// The current delay of `key` (for the CrashLoopBackOff message).
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|(d, _)| *d)
    }
}

fn nanos(n: i64) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(0))
}

/// The next steps for `pod`. Records restarts it decides in `backoff`.
pub fn plan(pod: &Pod, obs: &Observed, backoff: &mut Backoff, now: i64) -> Plan {
    let mut plan = Plan::default();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = restart_policy(pod);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let progress = progress(pod, obs);
    if progress.finished.is_some() {
        if obs.sandbox.as_ref().is_some_and(|s| s.ready) {
            plan.actions.push(Action::StopPod);
        }
        return plan;
    }
    match &obs.sandbox {
        Some(s) if s.ready => {}
        Some(s) => {
            plan.actions.push(Action::StopPod);
            plan.actions.push(Action::CreateSandbox {
                attempt: s.attempt + 1,
            });
            return plan;
        }
        None => {
            plan.actions.push(Action::CreateSandbox { attempt: 0 });
            return plan;
        }
    }
    let mut restart = |plan: &mut Plan, name: &str, init: bool, last: &cri::ContainerStatus| {
        let key = name.to_owned();
        match backoff.remaining(&key, last.finished_at, now) {
            Some(left) => {
                let delay = backoff.delay(&key).unwrap_or_default();
                plan.waiting.insert(
                    key,
                    (
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={name} pod={pod_name}",
                            delay.as_secs()
                        ),
                    ),
                );
                plan.requeue = Some(plan.requeue.map_or(left, |r| r.min(left)));
            }
            None => {
                backoff.record(&key, now);
                plan.actions.push(Action::Start {
                    name: key,
                    init,
                    attempt: last.metadata.as_ref().map_or(0, |m| m.attempt) + 1,
                });
            }
        }
    };
    if !progress.init_done {
        for c in spec.init_containers.iter().flatten() {
            match obs.latest_current(&c.name) {
                None => {
                    // Attempts keep counting across sandboxes: the runtime names containers
                    // by (name, attempt).
                    let attempt = obs
                        .latest(&c.name)
                        .and_then(|l| l.metadata.as_ref())
                        .map_or(0, |m| m.attempt + 1);
                    plan.actions.push(Action::Start {
                        name: c.name.clone(),
                        init: true,
                        attempt,
                    });
                    return plan;
                }
                Some(s) if exited(s) && s.exit_code == 0 => continue,
                Some(s) if exited(s) => {
                    // Never was decided in `progress` (the pod failed).
                    restart(&mut plan, &c.name, true, s);
                    return plan;
                }
                Some(_) => return plan,
            }
        }
        return plan;
    }
    for c in &spec.containers {
        match obs.latest(&c.name) {
            None => plan.actions.push(Action::Start {
                name: c.name.clone(),
                init: false,
                attempt: 0,
            }),
            Some(s) if exited(s) => {
                let again = match policy {
                    "Never" => false,
                    "OnFailure" => s.exit_code != 0,
                    _ => true,
                };
                if again {
                    restart(&mut plan, &c.name, false, s);
                }
            }
            Some(_) => {}
        }
    }
    plan
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    const S: i64 = 1_000_000_000;

    pub fn pod(init: &[&str], containers: &[&str], policy: &str) -> Pod {
        let c = |n: &&str| Container {
            name: (*n).to_owned(),
            image: Some("busybox:1.35".into()),
            ..Default::default()
        };
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("uid-1".into());
        p.spec = Some(PodSpec {
            init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
            containers: containers.iter().map(c).collect(),
            restart_policy: Some(policy.into()),
            ..Default::default()
        });
        p
    }

    pub fn status(
        name: &str,
        attempt: u32,
        state: cri::ContainerState,
        code: i32,
        finished: i64,
    ) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: format!("{name}-{attempt}"),
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt,
            }),
            state: state as i32,
            exit_code: code,
            started_at: finished - S,
            finished_at: finished,
            ..Default::default()
        }
    }

    fn observed(containers: Vec<cri::ContainerStatus>) -> Observed {
        let mut obs = Observed {
            sandbox: Some(SandboxView {
                id: "sb".into(),
                ready: true,
                attempt: 0,
                ip: "10.244.0.5".into(),
            }),
            ..Default::default()
        };
        for c in containers {
            let name = c.metadata.as_ref().unwrap().name.clone();
            obs.current.insert(c.id.clone());
            obs.containers.entry(name).or_default().insert(0, c);
        }
        obs
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_secs(10), Duration::from_secs(300))
    }

    fn start(name: &str, init: bool, attempt: u32) -> Action {
        Action::Start {
            name: name.into(),
            init,
            attempt,
        }
    }

    use cri::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};

    #[test]
    fn a_new_pod_gets_a_sandbox_first() {
        let p = plan(
            &pod(&[], &["app"], "Always"),
            &Observed::default(),
            &mut backoff(),
            0,
        );
        assert_eq!(p.actions, vec![Action::CreateSandbox { attempt: 0 }]);
    }

    #[test]
    fn a_dead_sandbox_is_replaced_with_the_next_attempt() {
        let mut obs = observed(vec![]);
        obs.sandbox.as_mut().unwrap().ready = false;
        obs.sandbox.as_mut().unwrap().attempt = 2;
        let p = plan(&pod(&[], &["app"], "Always"), &obs, &mut backoff(), 0);
        assert_eq!(
            p.actions,
            vec![Action::StopPod, Action::CreateSandbox { attempt: 3 }]
        );
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order_before_the_containers() {
        let p = pod(&["i1", "i2"], &["a", "b"], "Always");
        let mut b = backoff();
        assert_eq!(
            plan(&p, &observed(vec![]), &mut b, 10 * S).actions,
            vec![start("i1", true, 0)]
        );
        // i1 still running: nothing else starts.
        let obs = observed(vec![status("i1", 0, Running, 0, 0)]);
        assert!(plan(&p, &obs, &mut b, 10 * S).actions.is_empty());
        let obs = observed(vec![status("i1", 0, Exited, 0, 5 * S)]);
        assert_eq!(
            plan(&p, &obs, &mut b, 10 * S).actions,
            vec![start("i2", true, 0)]
        );
        let obs = observed(vec![
            status("i1", 0, Exited, 0, 5 * S),
            status("i2", 0, Exited, 0, 6 * S),
        ]);
        assert_eq!(
            plan(&p, &obs, &mut b, 10 * S).actions,
            vec![start("a", false, 0), start("b", false, 0)]
        );
    }

    #[test]
    fn a_new_sandbox_runs_the_init_containers_again_with_the_next_attempt() {
        let p = pod(&["i1"], &["a"], "Always");
        let mut obs = observed(vec![
            status("i1", 0, Exited, 0, S),
            status("a", 0, Exited, 137, 2 * S),
        ]);
        // The containers ran in a sandbox that has been replaced.
        obs.current.clear();
        obs.sandbox.as_mut().unwrap().id = "sb2".into();
        assert_eq!(
            plan(&p, &obs, &mut backoff(), 3 * S).actions,
            vec![start("i1", true, 1)]
        );
        assert!(!progress(&p, &obs).init_done);
    }

    #[test]
    fn a_failed_init_container_fails_the_pod_under_never_and_retries_otherwise() {
        let obs = observed(vec![status("i1", 0, Exited, 3, 5 * S)]);
        let never = pod(&["i1"], &["a"], "Never");
        assert_eq!(progress(&never, &obs).finished, Some(false));
        assert!(
            plan(&never, &obs, &mut backoff(), 6 * S)
                .actions
                .contains(&Action::StopPod)
        );
        let always = pod(&["i1"], &["a"], "Always");
        assert_eq!(
            plan(&always, &obs, &mut backoff(), 6 * S).actions,
            vec![start("i1", true, 1)]
        );
    }

    #[test]
    fn restarts_back_off_exponentially_up_to_the_cap() {
        let p = pod(&[], &["app"], "Always");
        let mut b = backoff();
        // Exit at t=100 s: the first restart is immediate.
        let obs = observed(vec![status("app", 0, Exited, 1, 100 * S)]);
        assert_eq!(
            plan(&p, &obs, &mut b, 100 * S).actions,
            vec![start("app", false, 1)]
        );
        // Exits again at 101 s: 10 s back-off.
        let obs = observed(vec![status("app", 1, Exited, 1, 101 * S)]);
        let waiting = plan(&p, &obs, &mut b, 105 * S);
        assert!(waiting.actions.is_empty());
        assert_eq!(waiting.waiting["app"].0, "CrashLoopBackOff");
        assert_eq!(
            waiting.waiting["app"].1,
            "back-off 10s restarting failed container=app pod=p"
        );
        assert_eq!(waiting.requeue, Some(Duration::from_secs(6)));
        assert_eq!(
            plan(&p, &obs, &mut b, 111 * S).actions,
            vec![start("app", false, 2)]
        );
        // Then 20 s, 40 s, ... capped at 300 s.
        let obs = observed(vec![status("app", 2, Exited, 1, 112 * S)]);
        assert_eq!(
            plan(&p, &obs, &mut b, 131 * S).requeue,
            Some(Duration::from_secs(1))
        );
        for _ in 0..10 {
            b.record("app", 132 * S);
        }
        assert_eq!(b.delay("app"), Some(Duration::from_secs(300)));
    }

    #[test]
    fn restart_policy_decides_which_exits_restart() {
        let codes = [("ok", 0), ("bad", 2)];
        let obs = observed(
            codes
                .iter()
                .map(|(n, c)| status(n, 0, Exited, *c, S))
                .collect(),
        );
        let names = ["ok", "bad"];
        let always = plan(&pod(&[], &names, "Always"), &obs, &mut backoff(), 2 * S);
        assert_eq!(
            always.actions,
            vec![start("ok", false, 1), start("bad", false, 1)]
        );
        // OnFailure: only the failed one restarts; the pod is not finished.
        let on_failure = plan(&pod(&[], &names, "OnFailure"), &obs, &mut backoff(), 2 * S);
        assert_eq!(on_failure.actions, vec![start("bad", false, 1)]);
        // Never: the pod is finished (failed): stop it, start nothing.
        let never = pod(&[], &names, "Never");
        assert_eq!(progress(&never, &obs).finished, Some(false));
        assert_eq!(
            plan(&never, &obs, &mut backoff(), 2 * S).actions,
            vec![Action::StopPod]
        );
        // OnFailure with every container succeeded is finished (succeeded).
        let all_ok = observed(vec![status("ok", 0, Exited, 0, S)]);
        assert_eq!(
            progress(&pod(&[], &["ok"], "OnFailure"), &all_ok).finished,
            Some(true)
        );
    }
}
