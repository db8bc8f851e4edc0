//! StatefulSets against skiff's API server: stable names created in order (the next only once the
//! previous is Running and Ready), scale-down from the highest ordinal, Parallel creation,
//! a partitioned rolling update from the highest ordinal, and volumeClaimTemplates refused loudly.

use std::{collections::BTreeSet, time::Duration};

use crate::common::{Cluster, eventually};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Event};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn statefulset(name: &str, replicas: i32, policy: &str, ready: bool) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name},
                             "annotations": {"fake-kubelet/ready": if ready { "true" } else { "false" },
                                             "version": "1"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}))
    .unwrap()
}

/// Names of the set's pods that exist and are not terminating.
async fn live(cluster: &Cluster, app: &str) -> BTreeSet<String> {
    cluster
        .pods("default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn ordered_creation_waits_for_ready_and_scale_down_goes_from_the_top() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "default");
    sets.create(
        &PostParams::default(),
        &statefulset("web", 3, "OrderedReady", false),
    )
    .await
    .unwrap();
    for (ordinal, expect) in [
        (0, &["web-0"][..]),
        (1, &["web-0", "web-1"]),
        (2, &["web-0", "web-1", "web-2"]),
    ] {
        let want = names(expect);
        eventually(&format!("pods {want:?}"), WAIT, || async {
            (live(&cluster, "web").await == want).then_some(())
        })
        .await;
        // The next ordinal waits while this one is not Ready.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            live(&cluster, "web").await,
            want,
            "created past an unready pod"
        );
        let pod = format!("web-{ordinal}");
        eventually("the pod running", WAIT, || async {
            let p = cluster.pods("default").get(&pod).await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        cluster.set_ready("default", &pod, true).await;
    }
    let pod = cluster.pods("default").get("web-1").await.unwrap();
    let labels = pod.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    assert!(labels.contains_key("controller-revision-hash"));
    let spec = pod.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let status = eventually("status: three ready", WAIT, || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.observed_generation, Some(1));

    // Scale to zero: the live set is always a prefix web-0..web-k, shrinking from the top.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    let prefixes = [
        names(&["web-0", "web-1", "web-2"]),
        names(&["web-0", "web-1"]),
        names(&["web-0"]),
        names(&[]),
    ];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = live(&cluster, "web").await;
        assert!(prefixes.contains(&now), "deleted out of order: {now:?}");
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scale down stuck at {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.len() >= 2, "{seen:?}");
}

#[tokio::test]
async fn parallel_creation_and_partitioned_rolling_update() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "default");
    let mut set = statefulset("db", 3, "Parallel", false);
    set.spec.as_mut().unwrap().update_strategy = Some(
        serde_json::from_value(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}))
            .unwrap(),
    );
    sets.create(&PostParams::default(), &set).await.unwrap();
    // Parallel: all three at once although none becomes Ready by itself.
    eventually("three pods in parallel", WAIT, || async {
        (live(&cluster, "db").await == names(&["db-0", "db-1", "db-2"])).then_some(())
    })
    .await;
    for i in 0..3 {
        let pod = format!("db-{i}");
        eventually("the pod running", WAIT, || async {
            let p = cluster.pods("default").get(&pod).await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
        cluster.set_ready("default", &pod, true).await;
    }
    // New template, ready by itself; partition 1 keeps db-0 at the old revision.
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "version": "2", "fake-kubelet/ready": "true"}}}}});
    sets.patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let version = |name: &'static str| {
        let pods = cluster.pods("default");
        async move {
            let p = pods.get_opt(name).await.ok()??;
            if p.metadata.deletion_timestamp.is_some() {
                return None;
            }
            p.annotations().get("version").cloned()
        }
    };
    eventually("db-2 and db-1 updated", WAIT, || async {
        (version("db-2").await.as_deref() == Some("2")
            && version("db-1").await.as_deref() == Some("2"))
        .then_some(())
    })
    .await;
    let status = eventually("status: two updated", WAIT, || async {
        let s = sets.get("db").await.ok()?.status?;
        (s.updated_replicas == Some(2) && s.ready_replicas == Some(3)).then_some(s)
    })
    .await;
    assert_ne!(status.current_revision, status.update_revision);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        version("db-0").await.as_deref(),
        Some("1"),
        "db-0 is below the partition"
    );
}

#[tokio::test]
async fn volume_claim_templates_are_refused_clearly() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "default");
    let mut set = statefulset("data", 2, "OrderedReady", true);
    set.spec.as_mut().unwrap().volume_claim_templates = Some(vec![
        serde_json::from_value(json!({"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap(),
    ]);
    sets.create(&PostParams::default(), &set).await.unwrap();
    let condition = eventually("a ReplicaFailure condition", WAIT, || async {
        let s = sets.get("data").await.ok()?.status?;
        s.conditions?
            .into_iter()
            .find(|c| c.type_ == "ReplicaFailure")
    })
    .await;
    assert_eq!(condition.status, "True");
    assert_eq!(
        condition.reason.as_deref(),
        Some("VolumeClaimTemplatesNotSupported")
    );
    assert!(
        condition
            .message
            .unwrap()
            .contains("persistent volume claims")
    );
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    let event = eventually("a Warning event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("data")
                    && e.type_.as_deref() == Some("Warning")
            })
    })
    .await;
    assert!(event.message.unwrap().contains("volumeClaimTemplates"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        live(&cluster, "data").await.is_empty(),
        "pods were created anyway"
    );
}

#[tokio::test]
async fn orphaned_pods_are_adopted_not_duplicated() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "keep-0", "labels": {"app": "keep"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    cluster
        .pods("default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "default");
    let set = sets
        .create(
            &PostParams::default(),
            &statefulset("keep", 1, "OrderedReady", true),
        )
        .await
        .unwrap();
    let owner = eventually("keep-0 adopted", WAIT, || async {
        let p = cluster.pods("default").get("keep-0").await.ok()?;
        p.owner_references().first().cloned()
    })
    .await;
    assert_eq!(owner.uid, set.metadata.uid.unwrap());
    assert_eq!(owner.controller, Some(true));
    eventually("status: one replica", WAIT, || async {
        let s = sets.get("keep").await.ok()?.status?;
        (s.replicas == 1 && s.ready_replicas == Some(1)).then_some(())
    })
    .await;
    assert_eq!(live(&cluster, "keep").await, names(&["keep-0"]));
}
