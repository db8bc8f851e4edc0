//! ReplicaSet and Deployment controllers against skiff's real API server and a fake kubelet:
//! scaling, a rolling update whose pod counts are recorded at every step, rollback, Recreate,
//! pause, revision history and the conditions `kubectl rollout status` reads.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{Cluster, eventually};
use futures_util::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image}]}}},
    }))
    .unwrap()
}

async fn active_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits until the Deployment reports a finished rollout the way `kubectl rollout status` judges it.
async fn rolled_out(deployments: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(
        &format!("{name} rolled out with {replicas}"),
        WAIT,
        || async {
            let d = deployments.get(name).await.ok()?;
            let s = d.status.clone()?;
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(replicas)
                && s.replicas == Some(replicas)
                && s.available_replicas == Some(replicas);
            done.then_some(d)
        },
    )
    .await
}

#[tokio::test]
async fn deployment_scales_rolls_within_surge_and_unavailability_and_rolls_back() {
    let cluster = Cluster::start(&["n1", "n2", "n3"], skiff_controllers::Options::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let pods = cluster.pods("default");
    deployments
        .create(&PostParams::default(), &deployment("web", 3, "busybox:1"))
        .await
        .unwrap();
    let d = rolled_out(&deployments, "web", 3).await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "1");
    let conditions = d.status.unwrap().conditions.unwrap();
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let available = conditions.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "True");
    let first_rs = replica_sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(first_rs.len(), 1);
    let hash = first_rs[0].labels()["pod-template-hash"].clone();
    assert_eq!(first_rs[0].name_any(), format!("web-{hash}"));
    assert_eq!(active_pods(&pods, "web").await.len(), 3);
    for pod in active_pods(&pods, "web").await {
        assert!(pod.name_any().starts_with(&format!("web-{hash}-")));
        assert_eq!(pod.labels()["pod-template-hash"], hash);
    }

    // Scale up and down (kubectl scale goes through the same spec.replicas).
    let scale_to = |n: i32| json!({"spec": {"replicas": n}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale_to(10)))
        .await
        .unwrap();
    rolled_out(&deployments, "web", 10).await;
    assert_eq!(active_pods(&pods, "web").await.len(), 10);
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale_to(4)))
        .await
        .unwrap();
    rolled_out(&deployments, "web", 4).await;
    eventually("4 pods left", WAIT, || async {
        (active_pods(&pods, "web").await.len() == 4).then_some(())
    })
    .await;
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale_to(10)))
        .await
        .unwrap();
    rolled_out(&deployments, "web", 10).await;

    // Rolling update with the defaults (maxSurge 25% -> 3, maxUnavailable 25% -> 2), recording
    // every pod's state from a watch and checking the counts after each event.
    let seen: Arc<Mutex<BTreeMap<String, (bool, bool)>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let max_total = Arc::new(Mutex::new(0usize));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = {
        let seen = Arc::clone(&seen);
        let violations = Arc::clone(&violations);
        let max_total = Arc::clone(&max_total);
        let armed = Arc::clone(&armed);
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut stream = watcher(pods, watcher::Config::default().labels("app=web")).boxed();
            while let Some(Ok(event)) = stream.next().await {
                let mut seen = seen.lock().unwrap();
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        let active = pod.metadata.deletion_timestamp.is_none();
                        let ready = active
                            && pod
                                .status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                });
                        seen.insert(pod.name_any(), (active, ready));
                    }
                    watcher::Event::Delete(pod) => {
                        seen.remove(&pod.name_any());
                    }
                    watcher::Event::Init => seen.clear(),
                    watcher::Event::InitDone => {}
                }
                if !armed.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let total = seen.values().filter(|(a, _)| *a).count();
                let available = seen.values().filter(|(_, r)| *r).count();
                let mut max = max_total.lock().unwrap();
                *max = (*max).max(total);
                if total > 13 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("{total} pods > 10 + maxSurge 3"));
                }
                if available < 8 {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("{available} available < 10 - maxUnavailable 2"));
                }
            }
        })
    };
    // Let the recorder see the 10 running pods before the update starts.
    eventually("recorder primed", WAIT, || async {
        (seen.lock().unwrap().values().filter(|(_, r)| *r).count() == 10).then_some(())
    })
    .await;
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .unwrap();
    let d = rolled_out(&deployments, "web", 10).await;
    recorder.abort();
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "rolling update broke its bounds: {violations:?}"
    );
    assert!(
        *max_total.lock().unwrap() > 10,
        "the update surged (a rollout that never surged would not test maxSurge)"
    );
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");
    let sets = replica_sets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 2);
    let old = sets
        .iter()
        .find(|rs| rs.labels()["pod-template-hash"] == hash)
        .unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    for pod in active_pods(&pods, "web").await {
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("busybox:2")
        );
    }

    // Rollback as `kubectl rollout undo` does it: the template of revision 1 back into the
    // Deployment. The old ReplicaSet comes back as revision 3, with 1 in its history.
    let template = old.spec.as_ref().unwrap().template.clone().unwrap();
    let mut template = serde_json::to_value(template).unwrap();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/spec/template", "value": template}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let d = rolled_out(&deployments, "web", 10).await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "3");
    let back = replica_sets.get(&old.name_any()).await.unwrap();
    assert_eq!(back.annotations()["deployment.kubernetes.io/revision"], "3");
    assert_eq!(
        back.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(back.spec.unwrap().replicas, Some(10));
    for pod in active_pods(&pods, "web").await {
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("busybox:1")
        );
    }
    assert_eq!(
        replica_sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // Events as kubectl describe lists them.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cluster.client.clone(), "default");
    let messages: Vec<String> = events
        .list(
            &ListParams::default().fields("involvedObject.name=web,involvedObject.kind=Deployment"),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m == &format!("Scaled up replica set web-{hash} from 0 to 3")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Scaled down replica set")),
        "{messages:?}"
    );
}

#[tokio::test]
async fn recreate_pause_history_limit_and_progress_deadline() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    let pods = cluster.pods("default");
    let mut d = deployment("db", 2, "busybox:1");
    let spec = d.spec.as_mut().unwrap();
    spec.strategy = Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    spec.revision_history_limit = Some(1);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    rolled_out(&deployments, "db", 2).await;

    // Recreate: never old and new pods at once.
    let mixed = Arc::new(Mutex::new(false));
    let watch = {
        let mixed = Arc::clone(&mixed);
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut images: BTreeMap<String, String> = BTreeMap::new();
            let mut stream = watcher(pods, watcher::Config::default().labels("app=db")).boxed();
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        if pod.metadata.deletion_timestamp.is_some() {
                            images.remove(&pod.name_any());
                        } else {
                            let image = pod.spec.as_ref().unwrap().containers[0]
                                .image
                                .clone()
                                .unwrap_or_default();
                            images.insert(pod.name_any(), image);
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        images.remove(&pod.name_any());
                    }
                    watcher::Event::Init => images.clear(),
                    watcher::Event::InitDone => {}
                }
                let kinds: std::collections::BTreeSet<_> = images.values().collect();
                if kinds.len() > 1 {
                    *mixed.lock().unwrap() = true;
                }
            }
        })
    };
    for image in ["busybox:2", "busybox:3"] {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}});
        deployments
            .patch("db", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .unwrap();
        eventually(&format!("all pods run {image}"), WAIT, || async {
            let all = active_pods(&pods, "db").await;
            (all.len() == 2
                && all.iter().all(|p| {
                    p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some(image)
                }))
            .then_some(())
        })
        .await;
        rolled_out(&deployments, "db", 2).await;
    }
    watch.abort();
    assert!(
        !*mixed.lock().unwrap(),
        "Recreate ran old and new pods side by side"
    );
    // revisionHistoryLimit 1: the current ReplicaSet and one old one.
    eventually(
        "old ReplicaSets pruned to the history limit",
        WAIT,
        || async {
            (replica_sets
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len()
                == 2)
                .then_some(())
        },
    )
    .await;

    // Paused: a template change makes no new ReplicaSet; resuming rolls it out.
    deployments
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "busybox:4"}]}}}});
    deployments
        .patch("db", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let paused = eventually("paused condition", WAIT, || async {
        let d = deployments.get("db").await.ok()?;
        let c = d
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Progressing")?
            .clone();
        (c.reason.as_deref() == Some("DeploymentPaused")).then_some(d)
    })
    .await;
    assert_eq!(paused.status.unwrap().updated_replicas, Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        active_pods(&pods, "db").await.iter().all(|p| {
            p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("busybox:3")
        }),
        "a paused deployment rolled"
    );
    deployments
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    rolled_out(&deployments, "db", 2).await;

    // A rollout that cannot finish (its pods never become ready) times out progressing.
    let mut stuck = deployment("stuck", 1, "busybox:1");
    let spec = stuck.spec.as_mut().unwrap();
    spec.progress_deadline_seconds = Some(2);
    spec.template.metadata.as_mut().unwrap().annotations =
        Some([("fake-kubelet/ready".to_owned(), "false".to_owned())].into());
    deployments
        .create(&PostParams::default(), &stuck)
        .await
        .unwrap();
    eventually("ProgressDeadlineExceeded", WAIT, || async {
        let d = deployments.get("stuck").await.ok()?;
        let conditions = d.status?.conditions?;
        let c = conditions.iter().find(|c| c.type_ == "Progressing")?;
        (c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn replica_set_adopts_orphans_and_releases_relabelled_pods() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let pods = cluster.pods("default");
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "rs"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &orphan).await.unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "rs"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "rs"}},
                 "template": {"metadata": {"labels": {"app": "rs"}},
                              "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}))
    .unwrap();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), "default");
    replica_sets
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    eventually("3 ready replicas", WAIT, || async {
        let rs = replica_sets.get("rs").await.ok()?;
        (rs.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;
    let all = active_pods(&pods, "rs").await;
    assert_eq!(all.len(), 3, "the orphan counted as one of the three");
    let adopted = pods.get("orphan").await.unwrap();
    assert_eq!(adopted.owner_references()[0].name, "rs");
    // Taking a pod out of the set by relabelling it (a debugging classic): the set releases it
    // and makes a replacement; the pod keeps running on its own.
    pods.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "debug"}}})),
    )
    .await
    .unwrap();
    eventually("released and replaced", WAIT, || async {
        let released = pods.get("orphan").await.ok()?;
        (released.owner_references().is_empty() && active_pods(&pods, "rs").await.len() == 3)
            .then_some(())
    })
    .await;
}
