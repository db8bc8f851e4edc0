//! The scheduler against skiff's real API server (in process, in-memory store): Node objects
//! with allocatable resources stand in for kubelets; pods are created directly.

use std::{collections::HashMap, future::Future, time::Duration};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use skiff_apiserver::testing::LocalServer;
use skiff_scheduler::Options;
use tokio::task::JoinHandle;

struct Cluster {
    _server: LocalServer,
    client: Client,
    schedulers: Vec<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &self.schedulers {
            s.abort();
        }
    }
}

impl Cluster {
    async fn start() -> Self {
        let server = LocalServer::start().await.expect("start the API server");
        let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
        Self {
            _server: server,
            client,
            schedulers: Vec::new(),
        }
    }

    fn scheduler(&mut self, options: Options) {
        self.schedulers.push(tokio::spawn(skiff_scheduler::run(
            self.client.clone(),
            options,
        )));
    }

    /// A node with `cpu` cores, 8Gi and 110 pods; `extra` is merged into the object (labels,
    /// spec.taints, spec.unschedulable).
    async fn node(&self, name: &str, cpu: &str, extra: Value) {
        let mut node =
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
        merge(&mut node, extra);
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(node).unwrap(),
            )
            .await
            .unwrap();
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// A pod with one container requesting `cpu`; `extra` is merged into the object.
    async fn pod(&self, name: &str, cpu: &str, extra: Value) {
        let mut pod = json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "pause",
                "resources": {"requests": {"cpu": cpu}}}]}});
        merge(&mut pod, extra);
        self.pods()
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn node_of(&self, pod: &str) -> Option<String> {
        self.pods()
            .get(pod)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.node_name)
    }

    async fn bound(&self, pod: &str) -> String {
        eventually(&format!("{pod} bound"), Duration::from_secs(10), || async {
            self.node_of(pod).await
        })
        .await
    }

    async fn events(&self, pod: &str, reason: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(pod)
                    && e.reason.as_deref() == Some(reason)
            })
            .collect()
    }

    /// The message of the pod's FailedScheduling event, once there is one.
    async fn failed_scheduling(&self, pod: &str) -> String {
        eventually(
            &format!("FailedScheduling for {pod}"),
            Duration::from_secs(10),
            || async {
                self.events(pod, "FailedScheduling")
                    .await
                    .pop()
                    .and_then(|e| e.message)
            },
        )
        .await
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn owned_by(rs: &str) -> Value {
    json!({"metadata": {"labels": {"app": rs}, "ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}"), "controller": true}]}})
}

#[tokio::test]
async fn spreads_a_workload_and_writes_scheduled_events() {
    let mut c = Cluster::start().await;
    for n in ["n1", "n2", "n3"] {
        c.node(n, "4", json!({})).await;
    }
    c.scheduler(Options::default());
    for i in 0..9 {
        c.pod(&format!("web-{i}"), "100m", owned_by("web")).await;
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for i in 0..9 {
        *per_node
            .entry(c.bound(&format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(per_node.values().all(|n| *n == 3), "{per_node:?}");
    let node = c.node_of("web-0").await.unwrap();
    let message = eventually("Scheduled event", Duration::from_secs(5), || async {
        c.events("web-0", "Scheduled")
            .await
            .pop()
            .and_then(|e| e.message)
    })
    .await;
    assert_eq!(
        message,
        format!("Successfully assigned default/web-0 to {node}")
    );
}

#[tokio::test]
async fn each_filter_leaves_only_the_eligible_node() {
    let mut c = Cluster::start().await;
    c.node("plain", "2", json!({})).await;
    c.node(
        "ssd",
        "2",
        json!({"metadata": {"labels": {"disk": "ssd", "gen": "7"}}}),
    )
    .await;
    c.node(
        "tainted",
        "2",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    c.node("cordoned", "2", json!({"spec": {"unschedulable": true}}))
        .await;
    c.node("big", "16", json!({})).await;
    c.scheduler(Options::default());
    let everywhere_but = |allowed: &str| {
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [allowed, "plain"]}]}]}}}}})
    };
    c.pod(
        "selector",
        "1m",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    )
    .await;
    c.pod("affinity", "1m", json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["5"]}, {"key": "disk", "operator": "Exists"}]}]}}}}})).await;
    c.pod("cpu-hungry", "8", json!({})).await;
    c.pod("tolerant", "1m", json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": "tainted"}}})).await;
    c.pod("cordon-tolerant", "1m", json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/hostname": "cordoned"}}})).await;
    assert_eq!(c.bound("selector").await, "ssd");
    assert_eq!(c.bound("affinity").await, "ssd");
    assert_eq!(c.bound("cpu-hungry").await, "big");
    assert_eq!(c.bound("tolerant").await, "tainted");
    assert_eq!(c.bound("cordon-tolerant").await, "cordoned");
    // Host ports: two pods of port 8080, allowed on "tainted" and "plain" only: one each.
    let port = json!({"spec": {"containers": [{"name": "c", "image": "pause", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
    for name in ["port-a", "port-b"] {
        let mut extra = everywhere_but("tainted");
        merge(&mut extra, port.clone());
        c.pod(name, "1m", extra).await;
    }
    let (a, b) = (c.bound("port-a").await, c.bound("port-b").await);
    assert_ne!(a, b);
    assert!(
        ["plain", "tainted"].contains(&a.as_str()) && ["plain", "tainted"].contains(&b.as_str())
    );
    let mut extra = everywhere_but("tainted");
    merge(&mut extra, port);
    c.pod("port-c", "1m", extra).await;
    assert_eq!(
        c.failed_scheduling("port-c").await,
        "0/5 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't have free ports for the requested pod ports, 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[tokio::test]
async fn failed_scheduling_names_the_reasons_and_sets_the_condition() {
    let mut c = Cluster::start().await;
    c.node("a", "1", json!({})).await;
    c.node("b", "1", json!({})).await;
    c.node(
        "c",
        "8",
        json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
    )
    .await;
    c.scheduler(Options::default());
    c.pod("huge", "2", json!({})).await;
    assert_eq!(
        c.failed_scheduling("huge").await,
        "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu."
    );
    let event = c.events("huge", "FailedScheduling").await.pop().unwrap();
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let condition = eventually("PodScheduled=False", Duration::from_secs(5), || async {
        c.pods()
            .get("huge")
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"))
    })
    .await;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert!(c.node_of("huge").await.is_none());
}

#[tokio::test]
async fn an_unschedulable_pod_is_retried_when_a_node_appears() {
    let mut c = Cluster::start().await;
    c.node("small", "1", json!({})).await;
    c.scheduler(Options::default());
    c.pod("waiting", "3", json!({})).await;
    c.failed_scheduling("waiting").await;
    // Several backoff periods without any change: still pending, nothing else to do.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.node_of("waiting").await.is_none());
    let started = tokio::time::Instant::now();
    c.node("large", "4", json!({})).await;
    assert_eq!(c.bound("waiting").await, "large");
    // Moved by the node event, not by the 60 s flush: within the (at most 2 s) backoff.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_freed_node_takes_the_next_pod() {
    let mut c = Cluster::start().await;
    c.node("only", "1", json!({})).await;
    c.scheduler(Options::default());
    c.pod("first", "800m", json!({})).await;
    assert_eq!(c.bound("first").await, "only");
    c.pod("second", "800m", json!({})).await;
    assert_eq!(
        c.failed_scheduling("second").await,
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    c.pods()
        .delete("first", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(c.bound("second").await, "only");
}

#[tokio::test]
async fn pod_affinity_and_anti_affinity_by_topology() {
    let mut c = Cluster::start().await;
    for (n, zone) in [("n1", "z1"), ("n2", "z1"), ("n3", "z2")] {
        c.node(n, "4", json!({"metadata": {"labels": {"zone": zone}}}))
            .await;
    }
    c.scheduler(Options::default());
    let anti = json!({"metadata": {"labels": {"app": "db"}}, "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
    for i in 0..3 {
        c.pod(&format!("db-{i}"), "1m", anti.clone()).await;
        c.bound(&format!("db-{i}")).await;
    }
    let mut nodes: Vec<String> = Vec::new();
    for i in 0..3 {
        nodes.push(c.node_of(&format!("db-{i}")).await.unwrap());
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    c.pod("db-3", "1m", anti).await;
    assert_eq!(
        c.failed_scheduling("db-3").await,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // Affinity to the zone of a pod pinned to z2.
    c.pod(
        "cache",
        "1m",
        json!({"metadata": {"labels": {"app": "cache"}}, "spec": {"nodeSelector": {"zone": "z2"}}}),
    )
    .await;
    c.bound("cache").await;
    for i in 0..3 {
        c.pod(&format!("near-{i}"), "1m", json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}}})).await;
        assert_eq!(c.bound(&format!("near-{i}")).await, "n3");
    }
}

#[tokio::test]
async fn only_pods_for_its_scheduler_name() {
    let mut c = Cluster::start().await;
    c.node("n", "4", json!({})).await;
    c.scheduler(Options {
        scheduler_name: "custom".to_owned(),
        ..Options::default()
    });
    c.pod("default", "1m", json!({})).await;
    c.pod("other", "1m", json!({"spec": {"schedulerName": "other"}}))
        .await;
    c.pod("custom", "1m", json!({"spec": {"schedulerName": "custom"}}))
        .await;
    assert_eq!(c.bound("custom").await, "n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.node_of("default").await.is_none());
    assert!(c.node_of("other").await.is_none());
    c.scheduler(Options::default());
    assert_eq!(c.bound("default").await, "n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.node_of("other").await.is_none());
}

/// Two instances of the same scheduler race for every pod (as two unelected servers would):
/// the loser of each binding gets 409 Conflict, drops its assumption and moves on; every pod is
/// bound once, and only the winner writes a Scheduled event.
#[tokio::test]
async fn binding_conflicts_are_dropped_not_retried() {
    let mut c = Cluster::start().await;
    for n in ["n1", "n2"] {
        c.node(n, "64", json!({})).await;
    }
    c.scheduler(Options::default());
    c.scheduler(Options::default());
    // Let both caches sync so that both see every pod.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..40 {
        c.pod(&format!("p{i}"), "1m", json!({})).await;
    }
    for i in 0..40 {
        c.bound(&format!("p{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    let scheduled = all
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        .count();
    let failed = all
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
        .count();
    assert_eq!(scheduled, 40);
    assert_eq!(failed, 0);
    // Both caches still account correctly: a pod needing most of a node still finds one.
    c.pod("late", "60", json!({})).await;
    c.bound("late").await;
}
