//! Node failure: missed Lease renewals make the node Ready=Unknown, then tainted unreachable,
//! then its pods are evicted once their toleration runs out; recovery lifts the taints.

use std::time::Duration;

use crate::common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

async fn pod_on(cluster: &Cluster, name: &str, node: &str, toleration_seconds: i64) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}],
                 "tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                                  "tolerationSeconds": toleration_seconds}]}}))
    .unwrap();
    cluster
        .pods("default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

fn ready_of(node: &Node) -> Option<(String, Option<String>)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

#[tokio::test]
async fn a_dead_node_goes_unknown_tainted_and_its_pods_are_evicted() {
    let options = skiff_controllers::Options {
        node_monitor_grace: Duration::from_secs(2),
        node_monitor_period: Duration::from_millis(200),
        ..skiff_controllers::Options::default()
    };
    let cluster = Cluster::start(&["n1", "n2"], options).await;
    pod_on(&cluster, "quick", "n2", 1).await;
    pod_on(&cluster, "patient", "n2", 3600).await;
    pod_on(&cluster, "elsewhere", "n1", 1).await;
    let pods = cluster.pods("default");
    eventually("the pods running", Duration::from_secs(20), || async {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        (running.count() == 3).then_some(())
    })
    .await;
    // Healthy nodes are left alone for longer than the grace period.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    assert_eq!(ready_of(&nodes.get("n2").await.unwrap()).unwrap().0, "True");

    cluster.stop_node("n2");
    let stopped = tokio::time::Instant::now();
    let node = eventually(
        "n2 Ready=Unknown and tainted unreachable",
        Duration::from_secs(20),
        || async {
            let n = nodes.get("n2").await.unwrap();
            let (status, reason) = ready_of(&n)?;
            (status == "Unknown"
                && reason.as_deref() == Some("NodeStatusUnknown")
                && has_taint(&n, UNREACHABLE, "NoExecute"))
            .then_some(n)
        },
    )
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "marked before the grace period"
    );
    assert!(has_taint(&node, UNREACHABLE, "NoSchedule"));
    // The toleration runs from the taint's timeAdded (when the controller tainted the node,
    // possibly before this test saw it), so that is the clock to check the eviction against.
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .and_then(|ts| {
            ts.iter()
                .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        })
        .and_then(|t| t.time_added.clone())
        .expect("the NoExecute taint carries timeAdded")
        .0;

    eventually(
        "quick evicted after its 1 s toleration",
        Duration::from_secs(20),
        || async { pods.get_opt("quick").await.unwrap().is_none().then_some(()) },
    )
    .await;
    let waited = jiff::Timestamp::now().duration_since(tainted);
    assert!(
        waited >= jiff::SignedDuration::from_secs(1),
        "evicted {waited:?} after the taint, before its 1 s toleration ran out"
    );
    let patient = pods.get("patient").await.unwrap();
    assert!(
        patient.metadata.deletion_timestamp.is_none(),
        "a pod tolerating for an hour was evicted"
    );
    let ready = patient
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.status, "False",
        "pods on an unreachable node are marked not ready"
    );
    assert!(pods.get_opt("elsewhere").await.unwrap().is_some());
    assert_eq!(ready_of(&nodes.get("n1").await.unwrap()).unwrap().0, "True");

    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    eventually("an eviction event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("TaintManagerEviction")
                    && e.involved_object.name.as_deref() == Some("quick")
            })
            .then_some(())
    })
    .await;

    cluster.resume_node("n2").await;
    eventually(
        "the taints lifted after recovery",
        Duration::from_secs(20),
        || async {
            let n = nodes.get("n2").await.unwrap();
            (!has_taint(&n, UNREACHABLE, "NoExecute") && !has_taint(&n, UNREACHABLE, "NoSchedule"))
                .then_some(())
        },
    )
    .await;
    assert!(pods.get_opt("patient").await.unwrap().is_some());
}
