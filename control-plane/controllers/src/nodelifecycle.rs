//! The node lifecycle controller: a node whose kubelet stops renewing its Lease (and posting its
//! Ready heartbeat) for `node_monitor_grace` gets its conditions set to Unknown and its pods
//! marked not ready; nodes not Ready carry the `unreachable` / `not-ready` taints (NoSchedule and
//! NoExecute) until they recover; pods on a NoExecute-tainted node are evicted once their
//! toleration of the taints runs out (upstream's node-lifecycle and taint-eviction controllers).
//!
//! Freshness is judged by when this controller *saw* the Lease or heartbeat change, on its own
//! clock, as upstream does, so clock skew between node and server cannot fake a live node.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, NodeCondition, Pod, Taint, Toleration},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{ControllerError, Ctx, events::EventType, placement::tolerates, pods};

const COMPONENT: &str = "node-controller";
const EVICTION_COMPONENT: &str = "taint-eviction-controller";
const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The kubelet conditions that become Unknown with Ready.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// When this controller last saw a sign of life from a node.
struct Probe {
    renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    observed: Instant,
}

struct Monitor {
    ctx: Arc<Ctx>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    probes: HashMap<String, Probe>,
    /// Pods already deleted by eviction, so one eviction makes one event.
    evicted: HashSet<String>,
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let node_watch = watcher(
        Api::<Node>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(node_writer)
    .for_each(|_| async {});
    let lease_watch = watcher(
        Api::<Lease>::namespaced(ctx.client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(lease_writer)
    .for_each(|_| async {});
    let mut monitor = Monitor {
        ctx,
        nodes,
        leases,
        probes: HashMap::new(),
        evicted: HashSet::new(),
    };
    let monitoring = async move {
        let _ = monitor.nodes.wait_until_ready().await;
        let _ = monitor.leases.wait_until_ready().await;
        info!("node lifecycle controller started");
        loop {
            let wait = monitor.tick().await;
            tokio::time::sleep(wait).await;
        }
    };
    tokio::join!(node_watch, lease_watch, monitoring);
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The taints this controller owns, as (key, effect).
fn managed(t: &Taint) -> bool {
    [TAINT_UNREACHABLE, TAINT_NOT_READY, TAINT_UNSCHEDULABLE].contains(&t.key.as_str())
}

/// The managed taints a node should carry, given its Ready status and schedulability.
pub(crate) fn desired_taints(
    ready: Option<&str>,
    unschedulable: bool,
) -> Vec<(&'static str, &'static str)> {
    let mut taints = Vec::new();
    let key = match ready {
        Some("True") | None => None,
        Some("False") => Some(TAINT_NOT_READY),
        Some(_) => Some(TAINT_UNREACHABLE),
    };
    if let Some(key) = key {
        taints.push((key, "NoSchedule"));
        taints.push((key, "NoExecute"));
    }
    if unschedulable {
        taints.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    taints
}

/// How long `pod` may stay on a node with `taints` (its NoExecute ones): `None` forever,
/// `Some(ZERO)` not at all (a taint it does not tolerate).
pub(crate) fn toleration_time(pod: &Pod, taints: &[&Taint]) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut min: Option<Duration> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(Duration::ZERO);
        }
        for t in used {
            if let Some(secs) = t.toleration_seconds {
                let d = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
                min = Some(min.map_or(d, |m| m.min(d)));
            }
        }
    }
    min
}

fn since(t: Timestamp) -> Duration {
    let now = Timestamp::now();
    if t >= now {
        return Duration::ZERO;
    }
    Duration::try_from(now.duration_since(t)).unwrap_or(Duration::ZERO)
}

impl Monitor {
    /// One pass over every node; returns how long to wait before the next.
    async fn tick(&mut self) -> Duration {
        let period = self.ctx.options.node_monitor_period;
        let mut next = period;
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.probes.retain(|n, _| names.contains(n));
        for node in nodes {
            match self.check(&node).await {
                Ok(Some(wait)) => next = next.min(wait),
                Ok(None) => {}
                Err(e) => {
                    debug!(node = %node.name_any(), error = %e, "node check failed; retrying");
                }
            }
        }
        next.max(Duration::from_millis(100))
    }

    async fn check(&mut self, node: &Node) -> Result<Option<Duration>, ControllerError> {
        let name = node.name_any();
        let lease = self
            .leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
        let renew = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let ready = condition(node, "Ready");
        let heartbeat = ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
        let now = Instant::now();
        let probe = self.probes.entry(name.clone()).or_insert(Probe {
            renew,
            heartbeat,
            observed: now,
        });
        if probe.renew != renew || probe.heartbeat != heartbeat {
            probe.renew = renew;
            probe.heartbeat = heartbeat;
            probe.observed = now;
        }
        let stale = now.duration_since(probe.observed) > self.ctx.options.node_monitor_grace;
        let mut status = ready.map(|c| c.status.clone());
        if stale && status.as_deref() != Some("Unknown") {
            self.mark_unknown(&name).await?;
            status = Some("Unknown".into());
        }
        let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        let taints = self
            .sync_taints(node, status.as_deref(), unschedulable)
            .await?;
        let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
        if no_execute.is_empty() {
            return Ok(None);
        }
        self.evict(&name, &no_execute).await
    }

    /// Ready and the other kubelet conditions become Unknown; the node's pods become not ready.
    async fn mark_unknown(&self, name: &str) -> Result<(), ControllerError> {
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut node = api.get_status(name).await?;
        let now = Time(Timestamp::now());
        let status = node.status.get_or_insert_default();
        let conditions = status.conditions.get_or_insert_default();
        for type_ in KUBELET_CONDITIONS {
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    if c.status != "Unknown" {
                        c.status = "Unknown".into();
                        c.last_transition_time = Some(now.clone());
                    }
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                }
                None => conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(now.clone()),
                    last_heartbeat_time: None,
                }),
            }
        }
        let node = api
            .replace_status(name, &PostParams::default(), &node)
            .await?;
        warn!(node = name, "node stopped posting status; marked Unknown");
        let msg = format!("Node {name} status is now: NodeNotReady");
        self.ctx
            .events
            .publish(COMPONENT, &node, EventType::Normal, "NodeNotReady", &msg)
            .await;
        self.mark_pods_not_ready(name).await
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, ControllerError> {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        Ok(api.list(&params).await?.items)
    }

    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), ControllerError> {
        for pod in self.pods_on(node).await? {
            if !pods::is_ready(&pod) {
                continue;
            }
            let mut conditions = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                c.status = "False".into();
                c.last_transition_time = Some(Time(Timestamp::now()));
            }
            let api: Api<Pod> = Api::namespaced(
                self.ctx.client.clone(),
                &pod.namespace().unwrap_or_default(),
            );
            let patch = json!({"status": {"conditions": conditions}});
            api.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            self.ctx
                .events
                .publish(
                    COMPONENT,
                    &pod,
                    EventType::Warning,
                    "NodeNotReady",
                    "Node is not ready",
                )
                .await;
        }
        Ok(())
    }

    /// Brings the node's managed taints to what its state asks; returns its taints after.
    async fn sync_taints(
        &self,
        node: &Node,
        ready: Option<&str>,
        unschedulable: bool,
    ) -> Result<Vec<Taint>, ControllerError> {
        let current: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let wanted = desired_taints(ready, unschedulable);
        let mut have: Vec<(&str, &str)> = current
            .iter()
            .filter(|t| managed(t))
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        have.sort_unstable();
        let mut want = wanted.clone();
        want.sort_unstable();
        if have == want {
            return Ok(current);
        }
        let now = Time(Timestamp::now());
        let mut taints: Vec<Taint> = current
            .iter()
            .filter(|t| !managed(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
            .cloned()
            .collect();
        for (key, effect) in &wanted {
            if !taints.iter().any(|t| t.key == *key && t.effect == *effect) {
                taints.push(Taint {
                    key: (*key).into(),
                    effect: (*effect).into(),
                    time_added: Some(now.clone()),
                    value: None,
                });
            }
        }
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let mut fresh = node.clone();
        fresh.spec.get_or_insert_default().taints = Some(taints.clone());
        // The cached node's resourceVersion makes a concurrent change a conflict, retried next pass.
        api.replace(&node.name_any(), &PostParams::default(), &fresh)
            .await?;
        info!(node = %node.name_any(), taints = ?wanted, "node taints updated");
        Ok(taints)
    }

    /// Deletes the pods whose toleration of `taints` ran out; returns when the next one does.
    async fn evict(
        &mut self,
        node: &str,
        taints: &[&Taint],
    ) -> Result<Option<Duration>, ControllerError> {
        // The timer starts when the node was tainted (or the pod arrived, if later).
        let tainted = taints
            .iter()
            .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
            .min()
            .unwrap_or_else(Timestamp::now);
        let mut next: Option<Duration> = None;
        for pod in self.pods_on(node).await? {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(allowed) = toleration_time(&pod, taints) else {
                continue;
            };
            let start = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(tainted, |c| c.0.max(tainted));
            let elapsed = since(start);
            if elapsed < allowed {
                let left = allowed - elapsed;
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
            if self.evicted.insert(uid) {
                info!(pod = %format!("{ns}/{name}"), node, "evicted a pod from a tainted node");
                let msg = format!("Marking for deletion Pod {ns}/{name}");
                self.ctx
                    .events
                    .publish(
                        EVICTION_COMPONENT,
                        &pod,
                        EventType::Normal,
                        "TaintManagerEviction",
                        &msg,
                    )
                    .await;
            }
            if self.evicted.len() > 100_000 {
                self.evicted.clear();
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: None,
            value: None,
        }
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}))
            .unwrap()
    }

    #[test]
    fn taints_follow_readiness() {
        assert!(desired_taints(Some("True"), false).is_empty());
        assert_eq!(
            desired_taints(Some("Unknown"), false),
            vec![
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert_eq!(
            desired_taints(Some("False"), true),
            vec![
                (TAINT_NOT_READY, "NoSchedule"),
                (TAINT_NOT_READY, "NoExecute"),
                (TAINT_UNSCHEDULABLE, "NoSchedule")
            ]
        );
    }

    #[test]
    fn toleration_time_is_the_shortest_matching_one() {
        let unreachable = taint(TAINT_UNREACHABLE, "NoExecute");
        let defaults = pod(json!([
            {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
        ]));
        assert_eq!(
            toleration_time(&defaults, &[&unreachable]),
            Some(Duration::from_secs(2))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(toleration_time(&forever, &[&unreachable]), None);
        let none = pod(json!([{"key": "other", "operator": "Exists"}]));
        assert_eq!(
            toleration_time(&none, &[&unreachable]),
            Some(Duration::ZERO)
        );
        let wrong_effect =
            pod(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]));
        assert_eq!(
            toleration_time(&wrong_effect, &[&unreachable]),
            Some(Duration::ZERO)
        );
        let mut valued = taint("dedicated", "NoExecute");
        valued.value = Some("gpu".into());
        let equal = pod(json!([{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]));
        assert_eq!(toleration_time(&equal, &[&valued]), None);
        let unequal = pod(json!([{"key": "dedicated", "value": "cpu", "effect": "NoExecute"}]));
        assert_eq!(toleration_time(&unequal, &[&valued]), Some(Duration::ZERO));
    }
}
