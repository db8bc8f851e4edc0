//! Once the cluster has converged, the controllers stop writing: a status or object rewritten
//! with the same content is a watch event that wakes every watcher (controllers, node agents),
//! and a controller that reacts to its own writes spins.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::Job,
    core::v1::{Endpoints, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Resource, ResourceExt as _,
    api::{ListParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::common::{Cluster, eventually};

async fn versions<K>(client: &kube::Client) -> BTreeMap<String, String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| {
            (
                format!("{}/{}", K::kind(&()), o.name_any()),
                o.resource_version().unwrap_or_default(),
            )
        })
        .collect()
}

async fn all_versions(client: &kube::Client) -> BTreeMap<String, String> {
    let mut all = versions::<Deployment>(client).await;
    all.extend(versions::<ReplicaSet>(client).await);
    all.extend(versions::<DaemonSet>(client).await);
    all.extend(versions::<StatefulSet>(client).await);
    all.extend(versions::<Job>(client).await);
    all.extend(versions::<Pod>(client).await);
    all.extend(versions::<Service>(client).await);
    all.extend(versions::<Endpoints>(client).await);
    all.extend(versions::<EndpointSlice>(client).await);
    all
}

#[tokio::test]
async fn converged_workloads_are_not_rewritten() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let client = cluster.client.clone();
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "ports": [{"containerPort": 80}]}]}});
    let create = |kind: &str, spec: serde_json::Value| json!({"metadata": {"name": format!("web-{}", kind.to_lowercase())}, "spec": spec});
    let selector = json!({"matchLabels": {"app": "web"}});
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(create(
                "Deployment",
                json!({"replicas": 2, "selector": selector, "template": template}),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let ds_template = json!({"metadata": {"labels": {"app": "ds"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
    Api::<DaemonSet>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(create(
                "DaemonSet",
                json!({"selector": {"matchLabels": {"app": "ds"}}, "template": ds_template}),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let ss_template = json!({"metadata": {"labels": {"app": "ss"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
    Api::<StatefulSet>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &serde_json::from_value(create("StatefulSet",
            json!({"replicas": 2, "serviceName": "ss", "selector": {"matchLabels": {"app": "ss"}},
                   "template": ss_template}))).unwrap())
        .await
        .unwrap();
    let job_template = json!({"metadata": {"annotations": {"fake-kubelet/exit-code": "0"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}});
    Api::<Job>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(create(
                "Job",
                json!({"completions": 2, "template": job_template}),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
            .unwrap(),
        )
        .await
        .unwrap();

    // Converged: every workload reports what it wants.
    eventually(
        "the workloads to converge",
        Duration::from_secs(30),
        || async {
            let d = Api::<Deployment>::namespaced(client.clone(), "default")
                .get("web-deployment")
                .await
                .ok()?;
            let ds = Api::<DaemonSet>::namespaced(client.clone(), "default")
                .get("web-daemonset")
                .await
                .ok()?;
            let ss = Api::<StatefulSet>::namespaced(client.clone(), "default")
                .get("web-statefulset")
                .await
                .ok()?;
            let job = Api::<Job>::namespaced(client.clone(), "default")
                .get("web-job")
                .await
                .ok()?;
            let slices = versions::<EndpointSlice>(&client).await;
            let done = d.status?.available_replicas == Some(2)
                && ds.status?.number_ready == 2
                && ss.status?.ready_replicas == Some(2)
                && job.status?.succeeded == Some(2)
                && !slices.is_empty();
            done.then_some(())
        },
    )
    .await;
    // Let the last status writes of convergence land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = all_versions(&client).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = all_versions(&client).await;
    let rewritten: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        rewritten.is_empty(),
        "rewritten while nothing changed: {rewritten:?}"
    );
    assert_eq!(
        before.len(),
        after.len(),
        "objects came or went: {before:?} -> {after:?}"
    );
}
