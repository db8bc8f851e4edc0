//! What the scheduler needs of pods and nodes, extracted once per watch event so that the per-node
//! work of a scheduling cycle is integer arithmetic and small map lookups, never re-parsing.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Container, Node, NodeSelector, Pod, PodAffinityTerm, PodSpec, PreferredSchedulingTerm,
        Taint, Toleration,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

use skiff_controllers::quantity::{cpu_millis, units};

/// Requests (of a pod) or allocatable amounts (of a node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (e.g. `example.com/gpu`), sorted by name.
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    fn from_map(
        map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Self {
        let mut r = Self::default();
        for (name, q) in map.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.cpu_millis = cpu_millis(&q.0),
                "memory" => r.memory = units(&q.0),
                "ephemeral-storage" => r.ephemeral_storage = units(&q.0),
                // Not requests the scheduler accounts for (hugepages are, upstream; they are
                // rare enough here to be treated as extended resources).
                "pods" => {}
                _ => r.scalar.push((name.clone(), units(&q.0))),
            }
        }
        r.scalar.sort();
        r
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or(0, |i| self.scalar[i].1)
    }

    pub fn add(&mut self, other: &Self, sign: i64) {
        self.cpu_millis += sign * other.cpu_millis;
        self.memory += sign * other.memory;
        self.ephemeral_storage += sign * other.ephemeral_storage;
        for (name, v) in &other.scalar {
            match self.scalar.binary_search_by(|(n, _)| n.cmp(name)) {
                Ok(i) => self.scalar[i].1 += sign * v,
                Err(i) => self.scalar.insert(i, (name.clone(), sign * v)),
            }
        }
    }

    fn max_with(&mut self, other: &Self) {
        self.cpu_millis = self.cpu_millis.max(other.cpu_millis);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, v) in &other.scalar {
            match self.scalar.binary_search_by(|(n, _)| n.cmp(name)) {
                Ok(i) => self.scalar[i].1 = self.scalar[i].1.max(*v),
                Err(i) => self.scalar.insert(i, (name.clone(), *v)),
            }
        }
    }
}

/// Upstream's defaults for scoring a container that requests nothing, so that such pods still
/// spread instead of all landing on the node that looks emptiest (non-zero requests).
pub const DEFAULT_CPU_MILLIS: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A host port a pod claims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    /// Empty means every address (0.0.0.0).
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    pub fn conflicts(&self, other: &Self) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || wildcard(&self.ip) || wildcard(&other.ip))
    }
}

/// A pod as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub scheduler_name: String,
    pub priority: i32,
    /// Effective requests: the sum over containers, or the largest init container if larger,
    /// plus the pod overhead.
    pub requests: Resources,
    /// CPU and memory as used for scoring (defaults where a container requests nothing).
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    /// uid of the controlling owner (e.g. a ReplicaSet), for spreading.
    pub owner: Option<String>,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    pub required_node_affinity: Option<NodeSelector>,
    pub preferred_node_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    pub required_pod_affinity: Vec<PodAffinityTerm>,
    pub required_pod_anti_affinity: Vec<PodAffinityTerm>,
    /// Where the pod is bound (spec.nodeName), if it is.
    pub node_name: Option<String>,
    /// Succeeded or Failed: no longer occupies its node.
    pub terminal: bool,
    pub deleting: bool,
    /// spec.schedulingGates not yet all removed: not ready to be scheduled.
    pub gated: bool,
}

fn container_requests(c: &Container) -> Resources {
    Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

fn nonzero(c: &Container) -> (i64, i64) {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |name: &str| requests.and_then(|m| m.get(name)).map(|q| q.0.as_str());
    (
        get("cpu").map_or(DEFAULT_CPU_MILLIS, cpu_millis),
        get("memory").map_or(DEFAULT_MEMORY, units),
    )
}

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let mut requests = Resources::default();
        let (mut nonzero_cpu, mut nonzero_memory) = (0, 0);
        let mut host_ports = Vec::new();
        for c in &spec.containers {
            requests.add(&container_requests(c), 1);
            let (cpu, mem) = nonzero(c);
            nonzero_cpu += cpu;
            nonzero_memory += mem;
            for p in c.ports.iter().flatten() {
                if let Some(port) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                        ip: p.host_ip.clone().unwrap_or_default(),
                        port,
                    });
                }
            }
        }
        for c in spec.init_containers.iter().flatten() {
            requests.max_with(&container_requests(c));
            let (cpu, mem) = nonzero(c);
            nonzero_cpu = nonzero_cpu.max(cpu);
            nonzero_memory = nonzero_memory.max(mem);
        }
        if let Some(overhead) = spec.overhead.as_ref() {
            let o = Resources::from_map(Some(overhead));
            requests.add(&o, 1);
            nonzero_cpu += o.cpu_millis;
            nonzero_memory += o.memory;
        }
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_affinity = affinity.node_affinity.unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| crate::DEFAULT_SCHEDULER_NAME.to_owned()),
            priority: spec.priority.unwrap_or(0),
            requests,
            nonzero_cpu,
            nonzero_memory,
            owner: meta
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            host_ports,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            required_node_affinity: node_affinity
                .required_during_scheduling_ignored_during_execution,
            preferred_node_affinity: node_affinity
                .preferred_during_scheduling_ignored_during_execution
                .unwrap_or_default(),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            required_pod_affinity: affinity
                .pod_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution)
                .unwrap_or_default(),
            required_pod_anti_affinity: affinity
                .pod_anti_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution)
                .unwrap_or_default(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            terminal: matches!(phase, Some("Succeeded" | "Failed")),
            deleting: meta.deletion_timestamp.is_some(),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
        }
    }

    /// Whether what scheduling depends on differs (status-only updates, e.g. our own
    /// PodScheduled condition, must not re-queue the pod).
    pub fn same_scheduling_inputs(&self, other: &Self) -> bool {
        self == other
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allocatable_pods: i64,
}

impl NodeSpec {
    pub fn from_node(node: &Node) -> Self {
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let spec = node.spec.as_ref();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::from_map(allocatable),
            allocatable_pods: allocatable
                .and_then(|a| a.get("pods"))
                .map_or(0, |q| units(&q.0)),
        }
    }
}

/// Whether `labels` match a label selector (a missing selector matches nothing, an empty one
/// everything, as for pod affinity terms).
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    for (k, v) in selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return false;
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::from_pod(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "16Mi"}}}],
            "overhead": {"cpu": "10m"}}}),
        );
        assert_eq!(p.requests.cpu_millis, 1010);
        assert_eq!(p.requests.memory, 64 << 20);
        assert_eq!(p.requests.scalar("example.com/gpu"), 1);
        // Container b requests no memory: scoring counts the 200Mi default for it.
        assert_eq!(p.nonzero_memory, (64 << 20) + DEFAULT_MEMORY);
        assert_eq!(p.scheduler_name, "default-scheduler");
    }

    #[test]
    fn host_ports_conflict_on_wildcards() {
        let a = HostPort {
            protocol: "TCP".into(),
            ip: String::new(),
            port: 80,
        };
        let b = HostPort {
            protocol: "TCP".into(),
            ip: "10.0.0.1".into(),
            port: 80,
        };
        let c = HostPort {
            protocol: "UDP".into(),
            ip: String::new(),
            port: 80,
        };
        let d = HostPort {
            protocol: "TCP".into(),
            ip: "10.0.0.2".into(),
            port: 80,
        };
        assert!(a.conflicts(&b));
        assert!(!a.conflicts(&c));
        assert!(!b.conflicts(&d));
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        let sel = |v: serde_json::Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(selector_matches(Some(&sel(json!({}))), &labels));
        assert!(!selector_matches(None, &labels));
        assert!(selector_matches(
            Some(&sel(json!({"matchLabels": {"app": "web"}}))),
            &labels
        ));
        assert!(!selector_matches(
            Some(&sel(json!({"matchLabels": {"app": "db"}}))),
            &labels
        ));
        assert!(selector_matches(
            Some(&sel(
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]})
            )),
            &labels
        ));
        assert!(selector_matches(
            Some(&sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})
            )),
            &labels
        ));
        assert!(!selector_matches(
            Some(&sel(
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]})
            )),
            &labels
        ));
    }
}
