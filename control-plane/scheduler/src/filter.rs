//! Filters: whether a pod fits a node, and if not, why, worded as upstream's scheduler words it
//! (the words end up in the FailedScheduling event that `kubectl describe pod` shows). Filters
//! run cheapest first and stop at the first that fails, as upstream's framework does.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
};

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorTerm, PodAffinityTerm, Taint, Toleration,
};
use skiff_controllers::placement::tolerates;

use crate::{
    cache::{Cache, NodeState},
    model::{NodeSpec, PodInfo, selector_matches},
};

/// Why a node was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Unschedulable,
    UntoleratedTaint { key: String, value: String },
    NodeAffinity,
    Ports,
    Insufficient(String),
    TooManyPods,
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unschedulable => f.write_str("node(s) were unschedulable"),
            Self::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Self::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Self::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Self::Insufficient(resource) => write!(f, "Insufficient {resource}"),
            Self::TooManyPods => f.write_str("Too many pods"),
            Self::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Self::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Self::ExistingAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
        }
    }
}

pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first NoSchedule/NoExecute taint the pod does not tolerate.
pub fn untolerated_taint<'a>(pod: &PodInfo, node: &'a NodeSpec) -> Option<&'a Taint> {
    node.taints.iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerated(&pod.tolerations, taint)
    })
}

/// PreferNoSchedule taints the pod does not tolerate (for scoring).
pub fn intolerable_preferred(pod: &PodInfo, node: &NodeSpec) -> i64 {
    let n = node
        .taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&pod.tolerations, t))
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One nodeSelectorTerm: its expressions and fields ANDed; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeSpec) -> bool {
    skiff_controllers::placement::term_matches(term, &node.labels, &node.name)
}

fn node_selector_matches(selector: &NodeSelector, node: &NodeSpec) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
}

pub fn node_affinity_matches(pod: &PodInfo, node: &NodeSpec) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .required_node_affinity
            .as_ref()
            .is_none_or(|s| node_selector_matches(s, node))
}

/// What pod (anti-)affinity needs to know about the placed pods, computed once per scheduling
/// cycle of a pod (per node it is then set lookups).
#[derive(Debug, Default)]
pub struct AffinityState {
    /// Per required affinity term: its topology key and the values where matching pods run.
    affinity: Vec<(String, HashSet<String>)>,
    /// No placed pod matches any affinity term but the pod matches its own terms: the first pod
    /// of a group may go anywhere (upstream's rule).
    affinity_bypass: bool,
    anti: Vec<(String, HashSet<String>)>,
    /// Topology domains that placed pods' anti-affinity terms forbid this pod.
    existing_anti: Vec<(String, String)>,
}

impl AffinityState {
    pub fn is_empty(&self) -> bool {
        self.affinity.is_empty() && self.anti.is_empty() && self.existing_anti.is_empty()
    }
}

/// Whether `target` (a pod) is selected by `term` written in a pod of `owner_namespace`.
fn term_selects(term: &PodAffinityTerm, owner_namespace: &str, target: &PodInfo) -> bool {
    let namespaces = term.namespaces.as_deref().unwrap_or_default();
    let all_namespaces = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    let namespace_ok = all_namespaces
        || if namespaces.is_empty() {
            target.namespace == owner_namespace
        } else {
            namespaces.contains(&target.namespace)
        };
    namespace_ok && selector_matches(term.label_selector.as_ref(), &target.labels)
}

pub fn affinity_state(pod: &PodInfo, cache: &Cache) -> AffinityState {
    let mut state = AffinityState::default();
    for uid in &cache.anti_affinity_pods {
        let Some(placed) = cache.pods.get(uid) else {
            continue;
        };
        for term in &placed.info.required_pod_anti_affinity {
            if term_selects(term, &placed.info.namespace, pod)
                && let Some(v) = cache.node_label(placed.node, &term.topology_key)
            {
                state
                    .existing_anti
                    .push((term.topology_key.clone(), v.to_owned()));
            }
        }
    }
    if pod.required_pod_affinity.is_empty() && pod.required_pod_anti_affinity.is_empty() {
        return state;
    }
    let terms = |list: &[PodAffinityTerm]| {
        list.iter()
            .map(|t| (t.topology_key.clone(), HashSet::new()))
            .collect::<Vec<_>>()
    };
    state.affinity = terms(&pod.required_pod_affinity);
    state.anti = terms(&pod.required_pod_anti_affinity);
    let mut any_affinity_match = false;
    for placed in cache.pods.values() {
        if placed.info.uid == pod.uid {
            continue;
        }
        for (term, (key, values)) in pod.required_pod_affinity.iter().zip(&mut state.affinity) {
            if term_selects(term, &pod.namespace, &placed.info) {
                any_affinity_match = true;
                if let Some(v) = cache.node_label(placed.node, key) {
                    values.insert(v.to_owned());
                }
            }
        }
        for (term, (key, values)) in pod.required_pod_anti_affinity.iter().zip(&mut state.anti) {
            if term_selects(term, &pod.namespace, &placed.info)
                && let Some(v) = cache.node_label(placed.node, key)
            {
                values.insert(v.to_owned());
            }
        }
    }
    state.affinity_bypass = !any_affinity_match
        && pod
            .required_pod_affinity
            .iter()
            .all(|t| term_selects(t, &pod.namespace, pod));
    state
}

/// Runs the filters in upstream's order; on failure pushes the reasons and returns false.
pub fn fits(
    pod: &PodInfo,
    affinity: &AffinityState,
    node: &NodeState,
    reasons: &mut Vec<Reason>,
) -> bool {
    let Some(spec) = node.spec.as_ref() else {
        return false;
    };
    if spec.unschedulable {
        let taint = Taint {
            key: UNSCHEDULABLE_TAINT.to_owned(),
            effect: "NoSchedule".to_owned(),
            ..Taint::default()
        };
        if !tolerated(&pod.tolerations, &taint) {
            reasons.push(Reason::Unschedulable);
            return false;
        }
    }
    if let Some(taint) = untolerated_taint(pod, spec) {
        reasons.push(Reason::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
        });
        return false;
    }
    if !node_affinity_matches(pod, spec) {
        reasons.push(Reason::NodeAffinity);
        return false;
    }
    if pod
        .host_ports
        .iter()
        .any(|p| node.host_ports.iter().any(|q| p.conflicts(q)))
    {
        reasons.push(Reason::Ports);
        return false;
    }
    let before = reasons.len();
    if node.pods + 1 > spec.allocatable_pods {
        reasons.push(Reason::TooManyPods);
    }
    let (req, used, alloc) = (&pod.requests, &node.requested, &spec.allocatable);
    if req.cpu_millis > 0 && used.cpu_millis + req.cpu_millis > alloc.cpu_millis {
        reasons.push(Reason::Insufficient("cpu".to_owned()));
    }
    if req.memory > 0 && used.memory + req.memory > alloc.memory {
        reasons.push(Reason::Insufficient("memory".to_owned()));
    }
    if req.ephemeral_storage > 0
        && used.ephemeral_storage + req.ephemeral_storage > alloc.ephemeral_storage
    {
        reasons.push(Reason::Insufficient("ephemeral-storage".to_owned()));
    }
    for (name, amount) in &req.scalar {
        if *amount > 0 && used.scalar(name) + amount > alloc.scalar(name) {
            reasons.push(Reason::Insufficient(name.clone()));
        }
    }
    if reasons.len() > before {
        return false;
    }
    if affinity.is_empty() {
        return true;
    }
    let label = |key: &str| spec.labels.get(key).map(String::as_str);
    if !affinity.affinity_bypass
        && !affinity
            .affinity
            .iter()
            .all(|(key, values)| label(key).is_some_and(|v| values.contains(v)))
    {
        reasons.push(Reason::PodAffinity);
        return false;
    }
    if affinity
        .anti
        .iter()
        .any(|(key, values)| label(key).is_some_and(|v| values.contains(v)))
    {
        reasons.push(Reason::PodAntiAffinity);
        return false;
    }
    if affinity
        .existing_anti
        .iter()
        .any(|(key, value)| label(key) == Some(value.as_str()))
    {
        reasons.push(Reason::ExistingAntiAffinity);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use serde_json::{Value, json};

    use super::*;
    use crate::model::Resources;

    fn pod(spec: Value) -> PodInfo {
        pod_with("p", json!({}), spec)
    }

    fn pod_with(name: &str, labels: Value, spec: Value) -> PodInfo {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c"}]);
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
            "spec": spec}))
        .unwrap();
        PodInfo::from_pod(&p)
    }

    fn node(name: &str, labels: Value, spec: Value) -> NodeState {
        let n = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2"}}}))
        .unwrap();
        NodeState {
            spec: Some(NodeSpec::from_node(&n)),
            ..NodeState::default()
        }
    }

    fn check(pod: &PodInfo, node: &NodeState) -> Vec<Reason> {
        let mut reasons = Vec::new();
        let ok = fits(pod, &AffinityState::default(), node, &mut reasons);
        assert_eq!(ok, reasons.is_empty());
        reasons
    }

    #[test]
    fn resources() {
        let mut n = node("n", json!({}), json!({}));
        let p = pod(json!({}));
        let mut big = p.clone();
        big.requests = Resources {
            cpu_millis: 800,
            memory: 1 << 29,
            ..Resources::default()
        };
        assert!(check(&big, &n).is_empty());
        n.requested = Resources {
            cpu_millis: 300,
            memory: 1 << 29,
            ..Resources::default()
        };
        assert_eq!(check(&big, &n), vec![Reason::Insufficient("cpu".into())]);
        n.requested.memory = (1 << 29) + 1;
        assert_eq!(
            check(&big, &n),
            vec![
                Reason::Insufficient("cpu".into()),
                Reason::Insufficient("memory".into())
            ]
        );
        n.requested = Resources::default();
        n.pods = 2;
        assert_eq!(check(&p, &n), vec![Reason::TooManyPods]);
        let mut gpu = p.clone();
        gpu.requests.scalar = vec![("example.com/gpu".into(), 1)];
        n.pods = 0;
        assert_eq!(
            check(&gpu, &n),
            vec![Reason::Insufficient("example.com/gpu".into())]
        );
    }

    #[test]
    fn taints_and_tolerations() {
        let n = node(
            "n",
            json!({}),
            json!({"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "soft", "effect": "PreferNoSchedule"}]}),
        );
        assert_eq!(
            check(&pod(json!({})), &n),
            vec![Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into()
            }]
        );
        assert_eq!(
            Reason::UntoleratedTaint {
                key: "dedicated".into(),
                value: "gpu".into()
            }
            .to_string(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        let equal = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
        );
        assert!(check(&equal, &n).is_empty());
        let wrong = pod(json!({"tolerations": [{"key": "dedicated", "value": "cpu"}]}));
        assert!(!check(&wrong, &n).is_empty());
        let exists = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(check(&exists, &n).is_empty());
        let other_effect = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}),
        );
        assert!(!check(&other_effect, &n).is_empty());
        let everything = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert!(check(&everything, &n).is_empty());
        assert_eq!(intolerable_preferred(&equal, n.spec.as_ref().unwrap()), 1);
        assert_eq!(
            intolerable_preferred(&everything, n.spec.as_ref().unwrap()),
            0
        );
    }

    #[test]
    fn unschedulable_nodes() {
        let n = node("n", json!({}), json!({"unschedulable": true}));
        assert_eq!(check(&pod(json!({})), &n), vec![Reason::Unschedulable]);
        let tolerant = pod(json!({"tolerations": [
            {"key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(check(&tolerant, &n).is_empty());
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node("n1", json!({"disk": "ssd", "gen": "5"}), json!({}));
        assert!(check(&pod(json!({"nodeSelector": {"disk": "ssd"}})), &n).is_empty());
        assert_eq!(
            check(&pod(json!({"nodeSelector": {"disk": "hdd"}})), &n),
            vec![Reason::NodeAffinity]
        );
        let affinity = |terms: Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
            )
        };
        let ok = |terms: Value| check(&affinity(terms), &n).is_empty();
        assert!(ok(
            json!([{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}]}])
        ));
        assert!(!ok(
            json!([{"matchExpressions": [{"key": "disk", "operator": "NotIn", "values": ["ssd"]}]}])
        ));
        assert!(ok(
            json!([{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])
        ));
        assert!(ok(
            json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}])
        ));
        assert!(ok(
            json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}])
        ));
        assert!(!ok(
            json!([{"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["5"]}]}])
        ));
        assert!(!ok(
            json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["x"]}]}])
        ));
        assert!(ok(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
        ));
        assert!(!ok(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}])
        ));
        // Terms are ORed, an empty term matches nothing.
        assert!(ok(
            json!([{}, {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])
        ));
        assert!(!ok(json!([{}])));
    }

    #[test]
    fn host_ports() {
        let mut n = node("n", json!({}), json!({}));
        let p = pod(json!({}));
        let mut web = p.clone();
        web.host_ports = vec![crate::model::HostPort {
            protocol: "TCP".into(),
            ip: String::new(),
            port: 8080,
        }];
        assert!(check(&web, &n).is_empty());
        n.host_ports = web.host_ports.clone();
        assert_eq!(check(&web, &n), vec![Reason::Ports]);
        assert!(check(&p, &n).is_empty());
    }

    #[test]
    fn pod_affinity_and_anti_affinity() {
        let mut cache = Cache::default();
        for (name, zone) in [("a", "z1"), ("b", "z2"), ("c", "z2")] {
            let n = node(name, json!({"zone": zone}), json!({}));
            cache.upsert_node(n.spec.unwrap());
        }
        let db = Arc::new(pod_with("db", json!({"app": "db"}), json!({})));
        cache.add_pod(db, "b", false);
        let term = |app: &str| json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "zone"}]);
        let near_db = pod(
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}}),
        );
        let away_from_db = pod(
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db")}}}),
        );
        let feasible = |p: &PodInfo, cache: &Cache| {
            let state = affinity_state(p, cache);
            let mut out: Vec<(String, Vec<Reason>)> = Vec::new();
            for n in &cache.nodes {
                let mut reasons = Vec::new();
                fits(p, &state, n, &mut reasons);
                out.push((n.spec.as_ref().unwrap().name.clone(), reasons));
            }
            out
        };
        let r = feasible(&near_db, &cache);
        assert_eq!(r[0].1, vec![Reason::PodAffinity]);
        assert!(r[1].1.is_empty() && r[2].1.is_empty(), "{r:?}");
        let r = feasible(&away_from_db, &cache);
        assert!(r[0].1.is_empty());
        assert_eq!(r[2].1, vec![Reason::PodAntiAffinity]);
        // Nothing matches a term for "cache" pods, and the pod is not one: nowhere fits.
        let near_cache = pod(
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache")}}}),
        );
        assert!(
            feasible(&near_cache, &cache)
                .iter()
                .all(|(_, r)| r == &vec![Reason::PodAffinity])
        );
        // ... but the first pod of a group that selects itself goes anywhere.
        let first = pod_with(
            "first",
            json!({"app": "cache"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache")}}}),
        );
        assert!(feasible(&first, &cache).iter().all(|(_, r)| r.is_empty()));
        // A placed pod's anti-affinity keeps matching pods out of its zone (symmetry).
        let loner = Arc::new(pod_with(
            "loner",
            json!({}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web")}}}),
        ));
        cache.add_pod(loner, "a", false);
        let web = pod_with("web", json!({"app": "web"}), json!({}));
        let r = feasible(&web, &cache);
        assert_eq!(r[0].1, vec![Reason::ExistingAntiAffinity]);
        assert!(r[1].1.is_empty());
    }
}
