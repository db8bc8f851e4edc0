//! DaemonSets against skiff's API server: one pod per eligible node, following nodes as they come
//! and go (tainted nodes without a toleration get none), and a rolling update that never takes
//! more than maxUnavailable daemons down, with ControllerRevision history that undo can use.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Cluster, eventually};
use k8s_openapi::api::{
    apps::v1::{ControllerRevision, DaemonSet},
    core::v1::{Node, Pod},
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn daemonset(name: &str, version: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"version": version}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}))
    .unwrap()
}

/// Live (not terminating) daemon pods by node.
async fn pods_by_node(cluster: &Cluster, app: &str) -> BTreeMap<String, Vec<Pod>> {
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in cluster
        .pods("default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
    {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        out.entry(node).or_default().push(pod);
    }
    out
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Ready node created with a NoSchedule taint from the start (so no daemon can slip in first).
async fn add_tainted_node(cluster: &Cluster, name: &str) {
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

#[tokio::test]
async fn daemonset_follows_nodes_and_skips_tainted_ones() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let sets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), "default");
    sets.create(&PostParams::default(), &daemonset("agent", "1"))
        .await
        .unwrap();
    let on = |nodes: &'static [&'static str]| {
        let cluster = &cluster;
        async move {
            let by_node = pods_by_node(cluster, "agent").await;
            let names: Vec<&str> = by_node.keys().map(String::as_str).collect();
            let one_each = by_node.values().all(|p| p.len() == 1);
            (names == nodes && one_each).then_some(by_node)
        }
    };
    let by_node = eventually("a daemon on n1 and n2", WAIT, || on(&["n1", "n2"])).await;
    let pod = &by_node["n1"][0];
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")),
        "daemon pods tolerate unreachable nodes: {tolerations:?}"
    );
    assert!(pod.labels().contains_key("controller-revision-hash"));

    add_tainted_node(&cluster, "tainted").await;
    cluster.add_node("n3").await;
    eventually("a daemon on n3 too", WAIT, || on(&["n1", "n2", "n3"])).await;
    let status = eventually("status counts three nodes", WAIT, || async {
        let s = sets.get("agent").await.ok()?.status?;
        (s.desired_number_scheduled == 3 && s.number_ready == 3 && s.number_available == Some(3))
            .then_some(s)
    })
    .await;
    assert_eq!(status.current_number_scheduled, 3);
    assert_eq!(status.number_misscheduled, 0);
    assert_eq!(status.updated_number_scheduled, Some(3));
    assert_eq!(status.observed_generation, Some(1));
    let by_node = pods_by_node(&cluster, "agent").await;
    assert!(
        !by_node.contains_key("tainted"),
        "the tainted node got a daemon"
    );

    // Tolerating the taint brings a daemon to that node.
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("a daemon on the tainted node", WAIT, || {
        on(&["n1", "n2", "n3", "tainted"])
    })
    .await;

    // A node that goes away takes its daemon with it.
    Api::<Node>::all(cluster.client.clone())
        .delete("n3", &Default::default())
        .await
        .unwrap();
    eventually("n3's daemon gone", WAIT, || on(&["n1", "n2", "tainted"])).await;
}

#[tokio::test]
async fn daemonset_rolling_update_respects_max_unavailable_and_can_be_undone() {
    let cluster = Cluster::start(&["n1", "n2", "n3"], skiff_controllers::Options::default()).await;
    let sets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), "default");
    let revisions: Api<ControllerRevision> = Api::namespaced(cluster.client.clone(), "default");
    sets.create(&PostParams::default(), &daemonset("roll", "1"))
        .await
        .unwrap();
    let all_ready_at = |version: &'static str| {
        let cluster = &cluster;
        async move {
            let by_node = pods_by_node(cluster, "roll").await;
            let ok = by_node.len() == 3
                && by_node.values().all(|pods| {
                    pods.len() == 1
                        && ready(&pods[0])
                        && pods[0].annotations().get("version").map(String::as_str) == Some(version)
                });
            ok.then_some(())
        }
    };
    eventually("three ready daemons at version 1", WAIT, || {
        all_ready_at("1")
    })
    .await;

    sets.patch(
        "roll",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"spec": {"template": {"metadata": {"annotations": {"version": "2"}}}}}),
        ),
    )
    .await
    .unwrap();
    // Sample while rolling: never fewer than 3 - maxUnavailable ready daemons.
    let mut min_ready = usize::MAX;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let by_node = pods_by_node(&cluster, "roll").await;
        let ready_now = by_node
            .values()
            .filter(|pods| pods.iter().any(ready))
            .count();
        min_ready = min_ready.min(ready_now);
        if all_ready_at("2").await.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        min_ready >= 2,
        "{min_ready} ready daemons seen during the rollout"
    );
    let status = eventually("status at the new revision", WAIT, || async {
        let s = sets.get("roll").await.ok()?.status?;
        (s.updated_number_scheduled == Some(3) && s.observed_generation == Some(2)).then_some(s)
    })
    .await;
    assert_eq!(status.number_available, Some(3));

    // History: two revisions; `kubectl rollout undo` applies the old one's data as a strategic
    // merge patch, which brings version 1 back as revision 3.
    let mut history = revisions
        .list(&ListParams::default().labels("app=roll"))
        .await
        .unwrap()
        .items;
    history.sort_by_key(|r| r.revision);
    assert_eq!(
        history.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let first = history[0].clone();
    let data = first.data.clone().unwrap().0;
    sets.patch("roll", &PatchParams::default(), &Patch::Strategic(&data))
        .await
        .unwrap();
    eventually("back at version 1", WAIT, || all_ready_at("1")).await;
    let revision = eventually("the old revision renumbered", WAIT, || async {
        let r = revisions.get(&first.name_any()).await.ok()?;
        (r.revision == 3).then_some(r.revision)
    })
    .await;
    assert_eq!(revision, 3);
}

#[tokio::test]
async fn daemonset_surge_update_keeps_every_node_served() {
    let cluster = Cluster::start(&["n1", "n2", "n3"], skiff_controllers::Options::default()).await;
    let sets: Api<DaemonSet> = Api::namespaced(cluster.client.clone(), "default");
    let mut ds = daemonset("surge", "1");
    ds.spec.as_mut().unwrap().update_strategy = Some(
        serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}))
        .unwrap(),
    );
    sets.create(&PostParams::default(), &ds).await.unwrap();
    let ready_at = |version: &'static str| {
        let cluster = &cluster;
        async move {
            let by_node = pods_by_node(cluster, "surge").await;
            let ok = by_node.len() == 3
                && by_node.values().all(|pods| {
                    pods.len() == 1
                        && ready(&pods[0])
                        && pods[0].annotations().get("version").map(String::as_str) == Some(version)
                });
            ok.then_some(())
        }
    };
    eventually("three ready daemons at version 1", WAIT, || ready_at("1")).await;
    sets.patch(
        "surge",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"spec": {"template": {"metadata": {"annotations": {"version": "2"}}}}}),
        ),
    )
    .await
    .unwrap();
    let mut max_doubled = 0;
    let mut saw_surge = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let by_node = pods_by_node(&cluster, "surge").await;
        let served = by_node
            .values()
            .filter(|pods| pods.iter().any(ready))
            .count();
        assert_eq!(
            served, 3,
            "a node without a ready daemon during a surge: {by_node:?}"
        );
        let doubled = by_node.values().filter(|pods| pods.len() > 1).count();
        max_doubled = max_doubled.max(doubled);
        saw_surge |= doubled > 0;
        if ready_at("2").await.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the surge rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        max_doubled <= 1,
        "{max_doubled} nodes surging at once with maxSurge 1"
    );
    assert!(saw_surge, "never saw old and new daemons side by side");
}
