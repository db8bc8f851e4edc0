//! The scheduler without IO: watch events in, decisions out (bind this pod to that node, or
//! this pod fits nowhere and why). `run` feeds it and carries the decisions out.

use std::{collections::HashSet, sync::Arc};

use tokio::time::Instant;

use crate::{
    cache::{Cache, NodeChange},
    filter::{self, Reason},
    model::{NodeSpec, PodInfo},
    queue::Queue,
};

/// What a scheduling cycle decided.
#[derive(Debug)]
pub enum Decision {
    /// The pod is assumed on the node; the binding must be written.
    Bind { pod: Arc<PodInfo>, node: String },
    /// No node fits. `changed` says whether the message differs from the pod's last one.
    Unschedulable {
        pod: Arc<PodInfo>,
        message: String,
        changed: bool,
    },
}

/// How a binding request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindOutcome {
    Bound,
    /// 409 or 404: the pod is bound elsewhere or gone; the watch will say which.
    Gone,
    /// Anything else: try again after backoff.
    Failed,
}

/// One feasible node's raw scores, before normalisation.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    node: usize,
    /// Least allocated plus balanced allocation, 0..=200.
    resources: i64,
    owner_pods: i64,
    preferred_affinity: i64,
    intolerable_taints: i64,
}

pub struct Core {
    pub cache: Cache,
    pub queue: Queue,
    scheduler_name: String,
    rng: u64,
    candidates: Vec<Candidate>,
    reasons: Vec<Reason>,
}

impl Core {
    pub fn new(scheduler_name: String, queue: Queue, seed: u64) -> Self {
        Self {
            cache: Cache::default(),
            queue,
            scheduler_name,
            rng: seed | 1,
            candidates: Vec::new(),
            reasons: Vec::new(),
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64: tie-breaking needs no quality beyond "not always the first node".
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    pub fn apply_node(&mut self, spec: NodeSpec, now: Instant) {
        if self.cache.upsert_node(spec) != NodeChange::Unchanged {
            self.queue.move_unschedulable(now, |_| true);
        }
    }

    pub fn delete_node(&mut self, name: &str) {
        self.cache.remove_node(name);
    }

    pub fn apply_pod(&mut self, pod: PodInfo, now: Instant) {
        let pod = Arc::new(pod);
        if let Some(node) = pod.node_name.clone() {
            self.queue.remove(&pod.uid);
            if pod.terminal {
                self.delete_pod(&pod.uid, now);
                return;
            }
            let new = !self.cache.pods.contains_key(&pod.uid);
            self.cache.add_pod(Arc::clone(&pod), &node, false);
            if new && !pod.labels.is_empty() {
                // A new neighbour may satisfy some waiting pod's affinity.
                self.queue.move_affinity_failures(now);
            }
            return;
        }
        if self.cache.pods.get(&pod.uid).is_some_and(|p| p.assumed) {
            // Our binding is in flight; the pod's next event will show it bound.
            return;
        }
        if pod.scheduler_name != self.scheduler_name || pod.terminal || pod.deleting || pod.gated {
            self.queue.remove(&pod.uid);
            return;
        }
        self.queue.upsert(pod, now);
    }

    pub fn delete_pod(&mut self, uid: &str, now: Instant) {
        self.queue.remove(uid);
        if self.cache.remove_pod(uid).is_some() {
            self.queue.move_unschedulable(now, |_| true);
        }
    }

    /// After a re-list: forgets pods and nodes the list did not contain.
    pub fn retain_pods(&mut self, uids: &HashSet<String>, now: Instant) {
        self.queue.retain(uids);
        let gone: Vec<String> = self
            .cache
            .pods
            .iter()
            .filter(|(uid, p)| !p.assumed && !uids.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            self.delete_pod(&uid, now);
        }
    }

    pub fn retain_nodes(&mut self, names: &HashSet<String>) {
        let gone: Vec<String> = self
            .cache
            .nodes
            .iter()
            .filter_map(|n| n.spec.as_ref())
            .filter(|s| !names.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        for name in gone {
            self.cache.remove_node(&name);
        }
    }

    /// Schedules the next pod of the active queue, if any.
    pub fn schedule_next(&mut self) -> Option<Decision> {
        let pod = self.queue.pop()?;
        match self.find_node(&pod) {
            Ok(node) => {
                let name = self.cache.nodes[node]
                    .spec
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                self.cache.add_pod(Arc::clone(&pod), &name, true);
                Some(Decision::Bind { pod, node: name })
            }
            Err((message, affinity)) => {
                self.queue.unschedulable(&pod.uid, affinity, Instant::now());
                let entry = self.queue.get_mut(&pod.uid);
                let changed = entry
                    .as_ref()
                    .is_none_or(|e| e.last_message.as_deref() != Some(message.as_str()));
                if let Some(e) = entry {
                    e.last_message = Some(message.clone());
                }
                Some(Decision::Unschedulable {
                    pod,
                    message,
                    changed,
                })
            }
        }
    }

    /// A binding request ended.
    pub fn bind_done(&mut self, uid: &str, outcome: BindOutcome, now: Instant) {
        match outcome {
            BindOutcome::Bound => {}
            BindOutcome::Gone | BindOutcome::Failed => {
                let assumed = self.cache.pods.get(uid).is_some_and(|p| p.assumed);
                if assumed {
                    self.cache.remove_pod(uid);
                }
                if outcome == BindOutcome::Gone {
                    self.queue.remove(uid);
                } else if assumed {
                    self.queue.error(uid, now);
                }
            }
        }
    }

    /// Filters then scores every node; the best node's slot, or the FailedScheduling message
    /// and whether pod affinity was among the reasons.
    pub fn find_node(&mut self, pod: &PodInfo) -> Result<usize, (String, bool)> {
        let affinity = filter::affinity_state(pod, &self.cache);
        let owner_counts = pod.owner.as_ref().and_then(|o| self.cache.owners.get(o));
        self.candidates.clear();
        self.reasons.clear();
        let mut total = 0;
        for (i, node) in self.cache.nodes.iter().enumerate() {
            let Some(spec) = node.spec.as_ref() else {
                continue;
            };
            total += 1;
            if !filter::fits(pod, &affinity, node, &mut self.reasons) {
                continue;
            }
            let fraction = |used: i64, alloc: i64| {
                if alloc <= 0 {
                    1.0
                } else {
                    (used as f64 / alloc as f64).min(1.0)
                }
            };
            let cpu = fraction(
                node.nonzero_cpu + pod.nonzero_cpu,
                spec.allocatable.cpu_millis,
            );
            let mem = fraction(
                node.nonzero_memory + pod.nonzero_memory,
                spec.allocatable.memory,
            );
            // Upstream's LeastAllocated (mean free share) and BalancedAllocation (1 - spread of
            // the shares), each 0..=100.
            let least = (1.0 - cpu + 1.0 - mem) * 50.0;
            let balanced = (1.0 - (cpu - mem).abs() / 2.0) * 100.0;
            #[expect(
                clippy::cast_possible_truncation,
                reason = "both scores are within 0..=100"
            )]
            let resources = least as i64 + balanced as i64;
            let preferred_affinity = pod
                .preferred_node_affinity
                .iter()
                .filter(|t| filter::term_matches(&t.preference, spec))
                .map(|t| i64::from(t.weight))
                .sum();
            self.candidates.push(Candidate {
                node: i,
                resources,
                owner_pods: owner_counts
                    .and_then(|c| c.get(&i))
                    .map_or(0, |n| i64::from(*n)),
                preferred_affinity,
                intolerable_taints: filter::intolerable_preferred(pod, spec),
            });
        }
        if self.candidates.is_empty() {
            return Err((failure_message(total, &mut self.reasons), {
                self.reasons.iter().any(|r| {
                    matches!(
                        r,
                        Reason::PodAffinity
                            | Reason::PodAntiAffinity
                            | Reason::ExistingAntiAffinity
                    )
                })
            }));
        }
        let max = |f: fn(&Candidate) -> i64| self.candidates.iter().map(f).max().unwrap_or(0);
        let max_owner = max(|c| c.owner_pods);
        let max_affinity = max(|c| c.preferred_affinity);
        let max_taints = max(|c| c.intolerable_taints);
        let normalized = |v: i64, max: i64, reverse: bool| {
            if max == 0 {
                return 100;
            }
            let s = v * 100 / max;
            if reverse { 100 - s } else { s }
        };
        let (mut best, mut best_score, mut ties) = (0, i64::MIN, 0u64);
        for k in 0..self.candidates.len() {
            let c = self.candidates[k];
            // Weights as upstream's defaults: spreading and node affinity 2, taints 3.
            let score = c.resources
                + 2 * normalized(c.owner_pods, max_owner, true)
                + 2 * if max_affinity == 0 {
                    0
                } else {
                    normalized(c.preferred_affinity, max_affinity, false)
                }
                + 3 * normalized(c.intolerable_taints, max_taints, true);
            if score > best_score {
                (best, best_score, ties) = (c.node, score, 1);
            } else if score == best_score {
                // Reservoir sampling: each tied node is equally likely.
                ties += 1;
                if self.random().is_multiple_of(ties) {
                    best = c.node;
                }
            }
        }
        Ok(best)
    }
}

/// Upstream's FitError message: "0/3 nodes are available: 1 node(s) had untolerated taint {a: b},
/// 2 Insufficient cpu." (counts per reason, sorted as strings).
pub fn failure_message(nodes: usize, reasons: &mut [Reason]) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".to_owned();
    }
    reasons.sort();
    let mut histogram: Vec<String> = Vec::new();
    let mut i = 0;
    while i < reasons.len() {
        let j = reasons[i..]
            .iter()
            .position(|r| *r != reasons[i])
            .map_or(reasons.len(), |n| i + n);
        histogram.push(format!("{} {}", j - i, reasons[i]));
        i = j;
    }
    histogram.sort();
    format!("0/{nodes} nodes are available: {}.", histogram.join(", "))
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use super::*;

    fn core() -> Core {
        Core::new(
            crate::DEFAULT_SCHEDULER_NAME.to_owned(),
            Queue::new(
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ),
            42,
        )
    }

    fn node(name: &str, cpu: &str, extra: Value) -> NodeSpec {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                n[k] = v;
            }
        }
        NodeSpec::from_node(&serde_json::from_value::<Node>(n).unwrap())
    }

    fn pod(name: &str, cpu: &str, owner: Option<&str>) -> PodInfo {
        let owners = owner.map(|o| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": o, "controller": true}]));
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap();
        PodInfo::from_pod(&p)
    }

    #[test]
    fn message_counts_reasons_like_upstream() {
        let mut reasons = vec![
            Reason::Insufficient("cpu".into()),
            Reason::UntoleratedTaint {
                key: "k".into(),
                value: "v".into(),
            },
            Reason::Insufficient("cpu".into()),
        ];
        assert_eq!(
            failure_message(3, &mut reasons),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu."
        );
        assert_eq!(
            failure_message(0, &mut []),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn spreads_a_workload_and_prefers_emptier_nodes() {
        let now = Instant::now();
        let mut c = core();
        for n in ["a", "b", "c"] {
            c.apply_node(node(n, "4", json!({})), now);
        }
        // Nine pods of one ReplicaSet: three per node, whichever order ties break in.
        for i in 0..9 {
            c.apply_pod(pod(&format!("p{i}"), "100m", Some("rs")), now);
        }
        let mut per_node: HashMap<String, usize> = HashMap::new();
        while let Some(d) = c.schedule_next() {
            let Decision::Bind { node, .. } = d else {
                panic!("unexpected {d:?}");
            };
            *per_node.entry(node).or_default() += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [3, 3, 3]);
        // A big pod of another workload goes to the node with the most room.
        c.apply_node(node("big", "64", json!({})), now);
        c.apply_pod(pod("x", "2", None), now);
        let Some(Decision::Bind { node, .. }) = c.schedule_next() else {
            panic!()
        };
        assert_eq!(node, "big");
    }

    #[test]
    fn preferred_node_affinity_wins_ties() {
        let now = Instant::now();
        let mut c = core();
        c.apply_node(node("a", "4", json!({})), now);
        c.apply_node(
            node(
                "b",
                "4",
                json!({"metadata": {"name": "b", "labels": {"disk": "ssd"}}}),
            ),
            now,
        );
        let mut p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d", "uid": "p"},
            "spec": {"containers": [{"name": "c"}], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}}})).unwrap();
        for i in 0..5 {
            p.metadata.uid = Some(format!("p{i}"));
            c.apply_pod(PodInfo::from_pod(&p), now);
            let Some(Decision::Bind { node, .. }) = c.schedule_next() else {
                panic!()
            };
            assert_eq!(node, "b");
        }
    }

    #[test]
    fn assumed_pods_take_room_until_their_binding_fails() {
        let now = Instant::now();
        let mut c = core();
        c.apply_node(node("a", "1", json!({})), now);
        c.apply_pod(pod("p1", "600m", None), now);
        c.apply_pod(pod("p2", "600m", None), now);
        assert!(matches!(c.schedule_next(), Some(Decision::Bind { .. })));
        let Some(Decision::Unschedulable {
            message, changed, ..
        }) = c.schedule_next()
        else {
            panic!()
        };
        assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu.");
        assert!(changed);
        // p1's binding fails: its room is released and p2 is moved by the event... p1 retries.
        c.bind_done("p1", BindOutcome::Failed, now);
        assert_eq!(c.cache.nodes[0].requested.cpu_millis, 0);
        c.queue.flush(now + Duration::from_secs(1));
        let Some(Decision::Bind { pod, .. }) = c.schedule_next() else {
            panic!()
        };
        assert_eq!(pod.uid, "p1");
        // A conflict (bound elsewhere): dropped from the queue, the watch will tell the truth.
        c.bind_done("p1", BindOutcome::Gone, now);
        assert!(c.queue.get("p1").is_none());
    }

    #[test]
    fn other_schedulers_pods_and_bound_pods_are_not_queued() {
        let now = Instant::now();
        let mut c = core();
        let mut p = pod("mine", "1m", None);
        c.apply_pod(p.clone(), now);
        p.uid = "theirs".into();
        p.scheduler_name = "other".into();
        c.apply_pod(p.clone(), now);
        p.uid = "gated".into();
        p.scheduler_name = crate::DEFAULT_SCHEDULER_NAME.into();
        p.gated = true;
        c.apply_pod(p.clone(), now);
        p.gated = false;
        p.uid = "bound".into();
        p.scheduler_name = crate::DEFAULT_SCHEDULER_NAME.into();
        p.node_name = Some("a".into());
        c.apply_pod(p, now);
        assert_eq!(c.queue.len(), 1);
        assert!(c.queue.get("mine").is_some());
        assert_eq!(c.cache.pods["bound"].node, c.cache.node_index("a").unwrap());
    }
}
