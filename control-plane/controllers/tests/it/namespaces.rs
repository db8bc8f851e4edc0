//! Namespace deletion cascade: everything in a deleted namespace goes, then the namespace.

use std::time::Duration;

use crate::common::{Cluster, eventually};
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ConfigMap, Namespace, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;

#[tokio::test]
async fn deleting_a_namespace_removes_everything_then_the_namespace() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let c = cluster.client.clone();
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let post = PostParams::default();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}})).unwrap();
    Api::<ConfigMap>::namespaced(c.clone(), "doomed")
        .create(&post, &cm)
        .await
        .unwrap();
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
            .unwrap();
    Api::<Secret>::namespaced(c.clone(), "doomed")
        .create(&post, &secret)
        .await
        .unwrap();
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .unwrap();
    Api::<Service>::namespaced(c.clone(), "doomed")
        .create(&post, &svc)
        .await
        .unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "idle"}},
                 "template": {"metadata": {"labels": {"app": "idle"}},
                              "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}))
    .unwrap();
    Api::<ReplicaSet>::namespaced(c.clone(), "doomed")
        .create(&post, &rs)
        .await
        .unwrap();
    for i in 0..3 {
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": format!("web-{i}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}),
        )
        .unwrap();
        cluster.pods("doomed").create(&post, &pod).await.unwrap();
    }
    let slices: Api<EndpointSlice> = Api::namespaced(c.clone(), "doomed");
    eventually(
        "the service's slice with 3 endpoints",
        Duration::from_secs(30),
        || async {
            let list = slices.list(&ListParams::default()).await.unwrap();
            (list.items.iter().map(|s| s.endpoints.len()).sum::<usize>() == 3).then_some(())
        },
    )
    .await;

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace and its contents gone",
        Duration::from_secs(60),
        || async {
            if namespaces.get_opt("doomed").await.unwrap().is_some() {
                return None;
            }
            let lp = ListParams::default();
            let empty = Api::<ConfigMap>::namespaced(c.clone(), "doomed")
                .list(&lp)
                .await
                .unwrap()
                .items
                .is_empty()
                && Api::<Secret>::namespaced(c.clone(), "doomed")
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                && Api::<Service>::namespaced(c.clone(), "doomed")
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                && Api::<ReplicaSet>::namespaced(c.clone(), "doomed")
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                && cluster
                    .pods("doomed")
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                    .is_empty()
                && slices.list(&lp).await.unwrap().items.is_empty();
            empty.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn every_namespace_gets_the_root_ca_and_keeps_it() {
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let options = skiff_controllers::Options {
        root_ca: Some(CA.to_owned()),
        ..skiff_controllers::Options::default()
    };
    let cluster = Cluster::start(&["n1"], options).await;
    let c = cluster.client.clone();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "fresh"}})).unwrap();
    Api::<Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let published = |ns: &'static str| {
        let api = Api::<ConfigMap>::namespaced(c.clone(), ns);
        async move {
            api.get_opt("kube-root-ca.crt")
                .await
                .unwrap()
                .and_then(|cm| cm.data)
                .and_then(|d| d.get("ca.crt").cloned())
        }
    };
    for ns in ["default", "kube-system", "fresh"] {
        eventually(
            &format!("the root CA in {ns}"),
            Duration::from_secs(10),
            || async { (published(ns).await.as_deref() == Some(CA)).then_some(()) },
        )
        .await;
    }
    // Changed or deleted: restored.
    let api = Api::<ConfigMap>::namespaced(c.clone(), "fresh");
    let mut cm = api.get("kube-root-ca.crt").await.unwrap();
    cm.data = Some([("ca.crt".to_owned(), "forged".to_owned())].into());
    api.replace("kube-root-ca.crt", &PostParams::default(), &cm)
        .await
        .unwrap();
    eventually("the CA restored", Duration::from_secs(10), || async {
        (published("fresh").await.as_deref() == Some(CA)).then_some(())
    })
    .await;
    api.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CA recreated", Duration::from_secs(10), || async {
        (published("fresh").await.as_deref() == Some(CA)).then_some(())
    })
    .await;
}
