//! A pod's status from what the runtime shows: phase, conditions, IPs and one
//! containerStatus per container (state, lastState, restartCount, image, ids).

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::plan::{Observed, Waiting, exited, progress, running};
use crate::runtime::cri;

/// What the probes say about a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// Started, and the readiness probe passes (or there is none).
    pub ready: bool,
}

/// What status needs beyond the pod and the runtime's view.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub host_ip: String,
    /// Prefix of container ids (`containerd` gives `containerd://ID`).
    pub runtime_name: &'a str,
    /// Probe verdicts by container name; absent means no probes (started and ready when
    /// running).
    pub readiness: &'a HashMap<String, Probed>,
    pub now: Timestamp,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(nanos)).ok())
        .flatten()
        .map(Time)
}

fn terminated(c: &cri::ContainerStatus, runtime: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: c.exit_code,
            reason: Some(if c.reason.is_empty() {
                if c.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_owned()
            } else {
                c.reason.clone()
            }),
            message: (!c.message.is_empty()).then(|| c.message.clone()),
            started_at: time(c.started_at),
            finished_at: time(c.finished_at),
            container_id: Some(format!("{runtime}://{}", c.id)),
            signal: None,
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(
    c: &Container,
    obs: &Observed,
    waiting_for: &Waiting,
    ctx: &Context<'_>,
    default_waiting: &str,
) -> ContainerStatus {
    let latest = obs.latest(&c.name);
    let previous = obs.previous(&c.name);
    let restart_count = latest
        .and_then(|l| l.metadata.as_ref())
        .map_or(0, |m| i32::try_from(m.attempt).unwrap_or(i32::MAX));
    let (state, last_state) = match (waiting_for.get(&c.name), latest) {
        // Waiting to restart (back-off or a failed start): the last run is lastState.
        (Some((reason, message)), Some(l)) if exited(l) => (
            waiting(reason, Some(message.clone())),
            Some(terminated(l, ctx.runtime_name)),
        ),
        (Some((reason, message)), _) => (
            waiting(reason, Some(message.clone())),
            previous.map(|p| terminated(p, ctx.runtime_name)),
        ),
        (None, Some(l)) if running(l) => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(l.started_at),
                }),
                ..Default::default()
            },
            previous.map(|p| terminated(p, ctx.runtime_name)),
        ),
        (None, Some(l)) if exited(l) => (
            terminated(l, ctx.runtime_name),
            previous.map(|p| terminated(p, ctx.runtime_name)),
        ),
        (None, Some(_)) => (
            waiting("ContainerCreating", None),
            previous.map(|p| terminated(p, ctx.runtime_name)),
        ),
        (None, None) => (waiting(default_waiting, None), None),
    };
    let is_running = latest.is_some_and(running) && state.running.is_some();
    let probed = ctx.readiness.get(&c.name).copied().unwrap_or(Probed {
        started: true,
        ready: true,
    });
    let ready = is_running && probed.ready;
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|l| l.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|l| format!("{}://{}", ctx.runtime_name, l.id)),
        ready,
        started: Some(is_running && probed.started),
        restart_count,
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

fn condition(
    previous: Option<&PodStatus>,
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status does.
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: (!ok).then(|| reason.map(str::to_owned)).flatten(),
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The pod's status. `waiting_for` holds containers the kubelet holds back (CrashLoopBackOff,
/// image or config errors).
pub fn compute(pod: &Pod, obs: &Observed, waiting_for: &Waiting, ctx: &Context<'_>) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let previous = pod.status.as_ref();
    let prog = progress(pod, obs);
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, obs, waiting_for, ctx, "PodInitializing"))
        .collect();
    let default_waiting = if prog.init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, obs, waiting_for, ctx, default_waiting))
        .collect();
    let phase = match prog.finished {
        Some(true) => "Succeeded",
        Some(false) => "Failed",
        None if !prog.init_done => "Pending",
        None => {
            // Running once every container has started at least once (a restarting one
            // counts: it has a lastState).
            let started = statuses.iter().all(|s| {
                let st = s.state.as_ref();
                st.is_some_and(|st| st.running.is_some() || st.terminated.is_some())
                    || s.last_state
                        .as_ref()
                        .is_some_and(|l| l.terminated.is_some())
            });
            if started { "Running" } else { "Pending" }
        }
    };
    let sandbox_ready = obs.sandbox.as_ref().is_some_and(|s| s.ready);
    let containers_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let host_network = spec.host_network.unwrap_or(false);
    let pod_ip = obs
        .sandbox
        .as_ref()
        .map(|s| s.ip.clone())
        .filter(|ip| !ip.is_empty())
        .or_else(|| previous.and_then(|p| p.pod_ip.clone()))
        // A host-network pod has the node's address.
        .or_else(|| (host_network && !ctx.host_ip.is_empty()).then(|| ctx.host_ip.clone()));
    let scheduled = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned())
        .unwrap_or_else(|| condition(None, "PodScheduled", true, None, ctx.now));
    let not_ready = if prog.finished.is_some() {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition(
            previous,
            "PodReadyToStartContainers",
            sandbox_ready,
            None,
            ctx.now,
        ),
        condition(
            previous,
            "Initialized",
            prog.init_done || prog.finished == Some(true),
            Some("ContainersNotInitialized"),
            ctx.now,
        ),
        condition(
            previous,
            "Ready",
            containers_ready,
            Some(not_ready),
            ctx.now,
        ),
        condition(
            previous,
            "ContainersReady",
            containers_ready,
            Some(not_ready),
            ctx.now,
        ),
        scheduled,
    ];
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(ctx.host_ip.clone()).filter(|ip| !ip.is_empty()),
        host_ips: Some(vec![HostIP {
            ip: ctx.host_ip.clone(),
        }])
        .filter(|_| !ctx.host_ip.is_empty()),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: previous
            .and_then(|p| p.start_time.clone())
            .or(Some(Time(ctx.now))),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        qos_class: previous
            .and_then(|p| p.qos_class.clone())
            .or_else(|| Some(super::spec::qos_class(pod).to_owned())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use cri::ContainerState::{
        ContainerCreated as Created, ContainerExited as Exited, ContainerRunning as Running,
    };

    use super::{
        super::plan::SandboxView,
        super::plan::tests::{pod, status},
        *,
    };

    const S: i64 = 1_000_000_000;

    fn observed(containers: Vec<cri::ContainerStatus>) -> Observed {
        let mut obs = Observed {
            sandbox: Some(SandboxView {
                id: "sb".into(),
                ready: true,
                attempt: 0,
                ip: "10.244.0.7".into(),
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

    fn ctx(readiness: &HashMap<String, Probed>) -> Context<'_> {
        Context {
            host_ip: "192.0.2.10".into(),
            runtime_name: "containerd",
            readiness,
            now: Timestamp::from_second(1_000).unwrap(),
        }
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a str {
        &s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
            .status
    }

    #[test]
    fn a_running_pod_is_ready_with_ips_and_container_ids() {
        let r = HashMap::new();
        let mut c = status("app", 0, Running, 0, 0);
        c.started_at = 500 * S;
        c.image_ref = "sha256:abc".into();
        let s = compute(
            &pod(&[], &["app"], "Always"),
            &observed(vec![c]),
            &Waiting::new(),
            &ctx(&r),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(s.host_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(cond(&s, "Initialized"), "True");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("containerd://app-0"));
        assert_eq!(cs.image_id, "sha256:abc");
        assert!(cs.ready);
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            Some(Time(Timestamp::from_second(500).unwrap()))
        );
    }

    #[test]
    fn crash_loop_shows_waiting_with_the_last_termination_and_restart_count() {
        let r = HashMap::new();
        let obs = observed(vec![
            status("app", 0, Exited, 1, 10 * S),
            status("app", 1, Exited, 1, 20 * S),
        ]);
        let waiting = Waiting::from([(
            "app".to_owned(),
            ("CrashLoopBackOff".to_owned(), "back-off 10s".to_owned()),
        )]);
        let s = compute(&pod(&[], &["app"], "Always"), &obs, &waiting, &ctx(&r));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert_eq!(last.container_id.as_deref(), Some("containerd://app-1"));
    }

    #[test]
    fn pending_while_initializing_and_terminal_phases_per_policy() {
        let r = HashMap::new();
        let p = pod(&["init"], &["app"], "Always");
        let s = compute(
            &p,
            &observed(vec![status("init", 0, Running, 0, 0)]),
            &Waiting::new(),
            &ctx(&r),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized"), "False");
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            app.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing")
        );
        // A created-but-not-started container keeps the pod Pending.
        let s = compute(
            &pod(&[], &["app"], "Always"),
            &observed(vec![status("app", 0, Created, 0, 0)]),
            &Waiting::new(),
            &ctx(&r),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let done = observed(vec![status("app", 0, Exited, 0, S)]);
        let s = compute(
            &pod(&[], &["app"], "Never"),
            &done,
            &Waiting::new(),
            &ctx(&r),
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let failed = observed(vec![status("app", 0, Exited, 2, S)]);
        let s = compute(
            &pod(&[], &["app"], "Never"),
            &failed,
            &Waiting::new(),
            &ctx(&r),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn readiness_probe_failure_makes_the_pod_not_ready_and_transition_times_stick() {
        let r = HashMap::from([(
            "app".to_owned(),
            Probed {
                started: true,
                ready: false,
            },
        )]);
        let mut p = pod(&[], &["app"], "Always");
        let obs = observed(vec![status("app", 0, Running, 0, 0)]);
        let s = compute(&p, &obs, &Waiting::new(), &ctx(&r));
        assert_eq!(cond(&s, "Ready"), "False");
        // Computed again later with the same outcome: the transition time stays.
        p.status = Some(s.clone());
        let mut later = ctx(&r);
        later.now = Timestamp::from_second(2_000).unwrap();
        let again = compute(&p, &obs, &Waiting::new(), &later);
        assert_eq!(again, s);
    }
}
