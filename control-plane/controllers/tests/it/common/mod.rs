//! A cluster for controller tests: skiff's real API server (in process, in-memory store), the
//! controllers under test, Node objects, and a fake kubelet that plays the nodes' part.
//!
//! The fake kubelet is driven by annotations on the pod (template), so tests need no plumbing:
//! - `fake-kubelet/ready: "false"`: the pod runs but never becomes Ready;
//! - `fake-kubelet/exit-code: "N"`: the pod finishes (Succeeded for 0, Failed otherwise) after
//!   `fake-kubelet/run-ms` milliseconds (default 200).
//!
//! It also binds unscheduled pods to nodes round-robin (standing in for the scheduler, which has
//! its own tests) unless the pod's node is already set, finishes the deletion of pods being
//! deleted, and renews each node's Lease in kube-node-lease until [`Cluster::stop_node`].

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, Pod},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Config, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use skiff_apiserver::testing::LocalServer;
use tokio::task::JoinHandle;

pub struct Cluster {
    pub server: LocalServer,
    pub client: Client,
    /// Nodes whose heartbeats have been stopped.
    stopped: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    /// A server with `nodes` Ready nodes, the controllers running with `options`, and the fake kubelet.
    pub async fn start(nodes: &[&str], options: skiff_controllers::Options) -> Self {
        let server = LocalServer::start().await.expect("start the API server");
        let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
        let mut cluster = Self {
            server,
            client: client.clone(),
            stopped: Arc::default(),
            tasks: Vec::new(),
        };
        for node in nodes {
            cluster.add_node(node).await;
        }
        cluster.tasks.push(tokio::spawn(skiff_controllers::run(
            client.clone(),
            options,
        )));
        cluster
            .tasks
            .push(tokio::spawn(fake_kubelet(client.clone())));
        cluster.tasks.push(tokio::spawn(heartbeats(
            client,
            Arc::clone(&cluster.stopped),
        )));
        cluster
    }

    /// Registers a Ready node with room for 110 pods.
    pub async fn add_node(&self, name: &str) {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": "10.244.0.0/24"},
        }))
        .unwrap();
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let now = Timestamp::now().to_string();
        let status = json!({"status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "fake kubelet is ready", "lastHeartbeatTime": now,
                            "lastTransitionTime": now}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        renew_lease(&self.client, name).await;
    }

    /// Stops the node's heartbeats (its Lease is no longer renewed), as if it died.
    pub fn stop_node(&self, name: &str) {
        self.stopped.lock().unwrap().insert(name.to_owned());
    }

    pub fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Sets a running pod's Ready condition (as a readiness probe would).
    pub async fn set_ready(&self, namespace: &str, pod: &str, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": status}, {"type": "ContainersReady", "status": status}]}});
        self.pods(namespace)
            .patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
}

/// Polls `check` every 50 ms until it returns Some, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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

async fn renew_lease(client: &Client, node: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = Timestamp::now().to_string();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    let _ = leases
        .patch(
            node,
            &PatchParams::apply("fake-kubelet").force(),
            &Patch::Apply(&lease),
        )
        .await;
}

async fn heartbeats(client: Client, stopped: Arc<Mutex<HashSet<String>>>) {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(list) = nodes.list(&ListParams::default()).await else {
            continue;
        };
        for node in list.items {
            let name = node.name_any();
            if !stopped.lock().unwrap().contains(&name) {
                renew_lease(&client, &name).await;
            }
        }
    }
}

async fn fake_kubelet(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut next = 0usize;
    let mut stream = watcher(pods, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let name = pod.name_any();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            if node.is_some() {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
            }
            continue;
        }
        let Some(_node) = node else {
            let Ok(list) = nodes.list(&ListParams::default()).await else {
                continue;
            };
            let names: Vec<String> = list
                .items
                .iter()
                .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true))
                .map(kube::ResourceExt::name_any)
                .collect();
            if names.is_empty() {
                continue;
            }
            let target = &names[next % names.len()];
            next += 1;
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name}, "target": {"kind": "Node", "name": target}});
            let _ = api
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
            continue;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if phase.is_some_and(|p| p != "Pending") {
            continue;
        }
        let annotations = pod.annotations().clone();
        tokio::spawn(start_pod(api, name, annotations, next));
        next += 1;
    }
}

async fn start_pod(api: Api<Pod>, name: String, annotations: BTreeMap<String, String>, n: usize) {
    let ready = annotations.get("fake-kubelet/ready").map(String::as_str) != Some("false");
    let ready_s = if ready { "True" } else { "False" };
    let now = Timestamp::now().to_string();
    let ip = format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2);
    let running = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "hostIP": "192.0.2.1", "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready_s},
            {"type": "Ready", "status": ready_s, "lastTransitionTime": now}],
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": ready,
            "restartCount": 0, "started": true, "state": {"running": {"startedAt": now}}}]}});
    if api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&running))
        .await
        .is_err()
    {
        return;
    }
    let Some(code) = annotations
        .get("fake-kubelet/exit-code")
        .and_then(|c| c.parse::<i32>().ok())
    else {
        return;
    };
    let run_ms = annotations
        .get("fake-kubelet/run-ms")
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(200);
    tokio::time::sleep(Duration::from_millis(run_ms)).await;
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let now = Timestamp::now().to_string();
    let done = json!({"status": {"phase": phase,
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": now, "finishedAt": now}}}]}});
    let _ = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&done))
        .await;
}

impl Cluster {
    /// Resumes the heartbeats of a node stopped with [`Cluster::stop_node`] and posts a fresh
    /// Ready=True condition, as a kubelet coming back would.
    pub async fn resume_node(&self, name: &str) {
        self.stopped.lock().unwrap().remove(name);
        renew_lease(&self.client, name).await;
        let now = Timestamp::now().to_string();
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "message": "fake kubelet is ready",
            "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
}
