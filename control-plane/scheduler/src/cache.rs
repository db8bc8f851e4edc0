//! The scheduler's view of the cluster: nodes with what their pods already take, kept up to date
//! incrementally from watch events and from the scheduler's own assumptions (a pod is counted on
//! its node from the moment the scheduler decides, before the binding is observed).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::model::{HostPort, NodeSpec, PodInfo, Resources};

/// A node slot: the Node object (if it exists) and the pods placed on it.
#[derive(Debug, Default)]
pub struct NodeState {
    /// None once the Node is deleted while pods still point at it (the slot goes with them).
    pub spec: Option<NodeSpec>,
    pub requested: Resources,
    pub nonzero_cpu: i64,
    pub nonzero_memory: i64,
    pub pods: i64,
    /// One entry per claiming pod (duplicates possible on a node the API already overbooked).
    pub host_ports: Vec<HostPort>,
}

impl NodeState {
    fn add(&mut self, pod: &PodInfo, sign: i64) {
        self.requested.add(&pod.requests, sign);
        self.nonzero_cpu += sign * pod.nonzero_cpu;
        self.nonzero_memory += sign * pod.nonzero_memory;
        self.pods += sign;
        if sign > 0 {
            self.host_ports.extend(pod.host_ports.iter().cloned());
        } else {
            for p in &pod.host_ports {
                if let Some(i) = self.host_ports.iter().position(|h| h == p) {
                    self.host_ports.swap_remove(i);
                }
            }
        }
    }
}

/// A pod occupying a node.
#[derive(Debug, Clone)]
pub struct Placed {
    pub info: Arc<PodInfo>,
    pub node: usize,
    /// Decided by this scheduler, binding not yet observed through the watch.
    pub assumed: bool,
}

/// How a node update matters to pods waiting for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    Added,
    /// Labels, taints, allocatable or unschedulable changed.
    Changed,
    /// Only things the scheduler ignores (status heartbeats, annotations).
    Unchanged,
}

#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: Vec<NodeState>,
    free: Vec<usize>,
    index: HashMap<String, usize>,
    pub pods: HashMap<String, Placed>,
    /// Owner uid -> node slot -> pods of that owner there.
    pub owners: HashMap<String, HashMap<usize, u32>>,
    /// Placed pods with required anti-affinity terms (checked against every incoming pod).
    pub anti_affinity_pods: HashSet<String>,
}

impl Cache {
    fn slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = if let Some(i) = self.free.pop() {
            self.nodes[i] = NodeState::default();
            i
        } else {
            self.nodes.push(NodeState::default());
            self.nodes.len() - 1
        };
        self.index.insert(name.to_owned(), i);
        i
    }

    #[cfg(test)]
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    #[cfg(test)]
    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.spec.is_some()).count()
    }

    pub fn upsert_node(&mut self, spec: NodeSpec) -> NodeChange {
        let i = self.slot(&spec.name);
        let node = &mut self.nodes[i];
        let change = match &node.spec {
            None => NodeChange::Added,
            Some(old) if *old == spec => NodeChange::Unchanged,
            Some(_) => NodeChange::Changed,
        };
        node.spec = Some(spec);
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else {
            return;
        };
        self.nodes[i].spec = None;
        self.release_if_empty(i);
    }

    fn release_if_empty(&mut self, i: usize) {
        let node = &self.nodes[i];
        if node.spec.is_none() && node.pods == 0 {
            self.index.retain(|_, v| *v != i);
            self.free.push(i);
        }
    }

    /// Places (or re-places) a pod on `node`.
    pub fn add_pod(&mut self, info: Arc<PodInfo>, node: &str, assumed: bool) {
        self.remove_pod(&info.uid);
        let i = self.slot(node);
        self.nodes[i].add(&info, 1);
        if let Some(owner) = &info.owner {
            *self
                .owners
                .entry(owner.clone())
                .or_default()
                .entry(i)
                .or_default() += 1;
        }
        if !info.required_pod_anti_affinity.is_empty() {
            self.anti_affinity_pods.insert(info.uid.clone());
        }
        self.pods.insert(
            info.uid.clone(),
            Placed {
                info,
                node: i,
                assumed,
            },
        );
    }

    pub fn remove_pod(&mut self, uid: &str) -> Option<Placed> {
        let placed = self.pods.remove(uid)?;
        let i = placed.node;
        self.nodes[i].add(&placed.info, -1);
        if let Some(owner) = &placed.info.owner
            && let Some(per_node) = self.owners.get_mut(owner)
        {
            if let Some(n) = per_node.get_mut(&i) {
                *n -= 1;
                if *n == 0 {
                    per_node.remove(&i);
                }
            }
            if per_node.is_empty() {
                self.owners.remove(owner);
            }
        }
        self.anti_affinity_pods.remove(uid);
        self.release_if_empty(i);
        Some(placed)
    }

    /// The node's label `key`, if the node exists and has it.
    pub fn node_label(&self, i: usize, key: &str) -> Option<&str> {
        self.nodes[i]
            .spec
            .as_ref()
            .and_then(|s| s.labels.get(key))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn node(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_owned(),
            allocatable: Resources {
                cpu_millis: 1000,
                ..Resources::default()
            },
            allocatable_pods: 10,
            ..NodeSpec::default()
        }
    }

    fn pod(uid: &str, cpu: i64, owner: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            uid: uid.to_owned(),
            requests: Resources {
                cpu_millis: cpu,
                ..Resources::default()
            },
            owner: Some(owner.to_owned()),
            host_ports: vec![HostPort {
                protocol: "TCP".into(),
                ip: String::new(),
                port: 80,
            }],
            ..PodInfo::default()
        })
    }

    #[test]
    fn pods_are_accounted_on_their_node_and_released() {
        let mut c = Cache::default();
        assert_eq!(c.upsert_node(node("a")), NodeChange::Added);
        assert_eq!(c.upsert_node(node("a")), NodeChange::Unchanged);
        c.add_pod(pod("1", 300, "rs"), "a", true);
        c.add_pod(pod("2", 200, "rs"), "a", false);
        // Re-adding the same pod (assumed, then observed) must not count it twice.
        c.add_pod(pod("1", 300, "rs"), "a", false);
        let a = c.node_index("a").unwrap();
        assert_eq!(c.nodes[a].requested.cpu_millis, 500);
        assert_eq!(c.nodes[a].pods, 2);
        assert_eq!(c.owners["rs"][&a], 2);
        c.remove_pod("1");
        assert_eq!(c.nodes[a].requested.cpu_millis, 200);
        assert_eq!(c.nodes[a].host_ports.len(), 1);
        assert_eq!(c.owners["rs"][&a], 1);
        // A deleted node keeps its slot while a pod points at it, then frees it.
        c.remove_node("a");
        assert_eq!(c.node_count(), 0);
        assert_eq!(c.node_index("a"), Some(a));
        c.remove_pod("2");
        assert_eq!(c.node_index("a"), None);
        assert!(c.owners.is_empty());
    }
}
