//! The garbage collector against the real API server: dependents of a deleted owner (by uid)
//! go, foreground deletion waits for blocking dependents, orphan deletion keeps dependents.

use std::time::Duration;

use crate::common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

fn owner_ref(owner: &ConfigMap, block: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(),
           "uid": owner.uid().unwrap(), "blockOwnerDeletion": block})
}

async fn configmap(api: &Api<ConfigMap>, name: &str, meta: serde_json::Value) -> ConfigMap {
    let mut m = meta;
    m["name"] = json!(name);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": m})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap()
}

async fn gone<K>(api: &Api<K>, name: &str) -> Option<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
{
    api.get_opt(name).await.unwrap().is_none().then_some(())
}

#[tokio::test]
async fn dependents_of_gone_owners_are_collected() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let owner = configmap(&cms, "owner", json!({})).await;
    configmap(
        &cms,
        "dependent",
        json!({"ownerReferences": [owner_ref(&owner, false)]}),
    )
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "dependent-pod", "ownerReferences": [owner_ref(&owner, false)]},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
    .unwrap();
    cluster
        .pods("default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    // An owner reference to a uid that never existed.
    let dangling: Secret = serde_json::from_value(json!({"metadata": {"name": "dangling",
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "no-such-uid"}]}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &dangling)
        .await
        .unwrap();
    // Owned by a live owner: stays.
    configmap(
        &cms,
        "kept",
        json!({"ownerReferences": [owner_ref(&owner, false)]}),
    )
    .await;

    eventually("the dangling secret collected", TIMEOUT, || {
        gone(&secrets, "dangling")
    })
    .await;
    assert!(
        cms.get_opt("dependent").await.unwrap().is_some(),
        "a live owner's dependent was collected"
    );

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually(
        "dependents of the deleted owner collected",
        TIMEOUT,
        || async {
            gone(&cms, "dependent").await?;
            gone(&cms, "kept").await?;
            gone(&cluster.pods("default"), "dependent-pod").await
        },
    )
    .await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let owner = configmap(&cms, "fg", json!({})).await;
    // A finalizer holds this dependent back, so the owner's wait can be seen.
    configmap(
        &cms,
        "held",
        json!({"ownerReferences": [owner_ref(&owner, true)], "finalizers": ["example.com/hold"]}),
    )
    .await;
    configmap(
        &cms,
        "plain",
        json!({"ownerReferences": [owner_ref(&owner, true)]}),
    )
    .await;

    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    eventually(
        "the dependents deleted while the owner waits",
        TIMEOUT,
        || async {
            gone(&cms, "plain").await?;
            let held = cms.get("held").await.unwrap();
            held.metadata.deletion_timestamp.as_ref()?;
            Some(())
        },
    )
    .await;
    let waiting = cms.get("fg").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .finalizers()
            .contains(&"foregroundDeletion".to_owned())
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually(
        "the owner gone after its last blocking dependent",
        TIMEOUT,
        || async {
            gone(&cms, "held").await?;
            gone(&cms, "fg").await
        },
    )
    .await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let owner = configmap(&cms, "parent", json!({})).await;
    let other = configmap(&cms, "other-parent", json!({})).await;
    configmap(
        &cms,
        "child",
        json!({"ownerReferences": [owner_ref(&owner, true), owner_ref(&other, false)]}),
    )
    .await;

    cms.delete("parent", &DeleteParams::orphan()).await.unwrap();
    eventually("the owner gone", TIMEOUT, || gone(&cms, "parent")).await;
    let child = cms.get("child").await.unwrap();
    let owners: Vec<String> = child
        .owner_references()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(owners, vec!["other-parent".to_owned()]);
    // Still orphaned a moment later: the collector does not treat it as garbage.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cms.get_opt("child").await.unwrap().is_some());
}
