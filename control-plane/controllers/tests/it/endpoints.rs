//! EndpointSlices and Endpoints against the real API server: readiness followed, named ports
//! resolved per pod, large services split, selectorless services left alone, no needless writes.

use std::{collections::BTreeMap, time::Duration};

use crate::common::{Cluster, eventually};
use k8s_openapi::api::{
    core::v1::{Endpoints, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn create_service(cluster: &Cluster, name: &str, spec: serde_json::Value) -> Service {
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    Api::<Service>::namespaced(cluster.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap()
}

async fn create_pod(cluster: &Cluster, name: &str, app: &str, port: Option<i32>, ready: bool) {
    let ports = port.map_or(json!([]), |p| json!([{"name": "http", "containerPort": p}]));
    let annotations = if ready {
        json!({})
    } else {
        json!({"fake-kubelet/ready": "false"})
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}, "annotations": annotations},
        "spec": {"containers": [{"name": "main", "image": "busybox", "ports": ports}]}}))
    .unwrap();
    cluster
        .pods("default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

async fn slices(cluster: &Cluster, service: &str) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(cluster.client.clone(), "default")
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .unwrap()
        .items
}

/// pod name → (ready, serving, terminating, ports) over all of the service's slices.
async fn endpoints_of(
    cluster: &Cluster,
    service: &str,
) -> BTreeMap<String, (bool, bool, bool, Vec<i32>)> {
    let mut out = BTreeMap::new();
    for slice in slices(cluster, service).await {
        let ports: Vec<i32> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port)
            .collect();
        for e in slice.endpoints {
            let c = e.conditions.unwrap_or_default();
            let pod = e.target_ref.and_then(|r| r.name).unwrap_or_default();
            out.insert(
                pod,
                (
                    c.ready == Some(true),
                    c.serving == Some(true),
                    c.terminating == Some(true),
                    ports.clone(),
                ),
            );
        }
    }
    out
}

#[tokio::test]
async fn slices_and_endpoints_follow_readiness_with_named_ports() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let svc = create_service(
        &cluster,
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
    )
    .await;
    create_pod(&cluster, "a", "web", Some(8080), true).await;
    create_pod(&cluster, "b", "web", Some(8080), false).await;
    // The named port resolves per pod: this one serves it on 9090.
    create_pod(&cluster, "c", "web", Some(9090), true).await;
    // Lacking the named port, this one is left out.
    create_pod(&cluster, "d", "web", None, true).await;

    let expected: BTreeMap<String, (bool, bool, bool, Vec<i32>)> = [
        ("a".to_owned(), (true, true, false, vec![8080])),
        ("b".to_owned(), (false, false, false, vec![8080])),
        ("c".to_owned(), (true, true, false, vec![9090])),
    ]
    .into();
    eventually(
        "slices with a, b (not ready) and c on its own port",
        TIMEOUT,
        || async { (endpoints_of(&cluster, "web").await == expected).then_some(()) },
    )
    .await;
    let all = slices(&cluster, "web").await;
    assert_eq!(all.len(), 2, "one slice per port set");
    for slice in &all {
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(
            slice.labels()["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert!(slice.name_any().starts_with("web-"));
        let owner = &slice.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), Some(&owner.uid)),
            ("Service", svc.metadata.uid.as_ref())
        );
        assert_eq!(
            slice.endpoints[0]
                .node_name
                .as_ref()
                .map(|n| n.starts_with('n')),
            Some(true)
        );
    }

    let endpoints: Api<Endpoints> = Api::namespaced(cluster.client.clone(), "default");
    let subsets = |ep: &Endpoints| {
        let mut out: Vec<(Vec<i32>, Vec<String>, Vec<String>)> = ep
            .subsets
            .iter()
            .flatten()
            .map(|s| {
                let names = |l: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
                    l.iter()
                        .flatten()
                        .filter_map(|a| a.target_ref.as_ref()?.name.clone())
                        .collect::<Vec<_>>()
                };
                (
                    s.ports.iter().flatten().map(|p| p.port).collect(),
                    names(&s.addresses),
                    names(&s.not_ready_addresses),
                )
            })
            .collect();
        out.sort();
        out
    };
    eventually("the Endpoints object", TIMEOUT, || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let want = vec![
            (vec![8080], vec!["a".to_owned()], vec!["b".to_owned()]),
            (vec![9090], vec!["c".to_owned()], vec![]),
        ];
        (subsets(&ep) == want).then_some(())
    })
    .await;

    // Nothing changed: an unrelated pod must not rewrite any slice (node agents watch them).
    let versions: Vec<Option<String>> = slices(&cluster, "web")
        .await
        .iter()
        .map(ResourceExt::resource_version)
        .collect();
    create_pod(&cluster, "other", "unrelated", Some(8080), true).await;
    cluster.set_ready("default", "d", true).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<Option<String>> = slices(&cluster, "web")
        .await
        .iter()
        .map(ResourceExt::resource_version)
        .collect();
    assert_eq!(
        versions, after,
        "slices were rewritten although nothing changed"
    );

    // Ready → not ready → ready follows the pod's condition.
    cluster.set_ready("default", "b", true).await;
    cluster.set_ready("default", "a", false).await;
    eventually("b ready and a not ready", TIMEOUT, || async {
        let e = endpoints_of(&cluster, "web").await;
        (e.get("a").map(|x| x.0) == Some(false) && e.get("b").map(|x| x.0) == Some(true))
            .then_some(())
    })
    .await;

    // A pod relabelled away from the selector leaves (the service it left is found again).
    cluster
        .pods("default")
        .patch(
            "c",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"app": "moved"}}})),
        )
        .await
        .unwrap();
    eventually("c removed after relabelling", TIMEOUT, || async {
        (!endpoints_of(&cluster, "web").await.contains_key("c")).then_some(())
    })
    .await;

    // A deleted pod leaves the slices and the Endpoints.
    cluster
        .pods("default")
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a removed", TIMEOUT, || async {
        let e = endpoints_of(&cluster, "web").await;
        let ep = endpoints.get("web").await.unwrap();
        let in_ep = subsets(&ep)
            .iter()
            .any(|(_, r, n)| r.contains(&"a".to_owned()) || n.contains(&"a".to_owned()));
        (!e.contains_key("a") && e.contains_key("b") && !in_ep).then_some(())
    })
    .await;

    // Deleting the service takes its Endpoints along.
    Api::<Service>::namespaced(cluster.client.clone(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the Endpoints deleted with the service",
        TIMEOUT,
        || async {
            endpoints
                .get_opt("web")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn large_services_split_into_slices_of_at_most_100() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    create_service(
        &cluster,
        "big",
        json!({"selector": {"app": "big"}, "ports": [{"port": 80, "targetPort": 8080}]}),
    )
    .await;
    for i in 0..230 {
        create_pod(&cluster, &format!("big-{i:03}"), "big", None, true).await;
    }
    let sizes = eventually("230 endpoints", Duration::from_secs(90), || async {
        let mut sizes: Vec<usize> = slices(&cluster, "big")
            .await
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        sizes.sort_unstable();
        (sizes.iter().sum::<usize>() == 230).then_some(sizes)
    })
    .await;
    assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    let ready = endpoints_of(&cluster, "big").await;
    assert_eq!(ready.len(), 230);
    assert!(
        ready
            .values()
            .all(|(r, _, _, ports)| *r && ports == &vec![8080])
    );
}

#[tokio::test]
async fn services_without_a_selector_are_left_alone() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    create_pod(&cluster, "p", "ext", Some(8080), true).await;
    create_service(&cluster, "ext", json!({"ports": [{"port": 80}]})).await;
    let own: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "ext-manual", "labels": {"kubernetes.io/service-name": "ext",
            "endpointslice.kubernetes.io/managed-by": "someone-else"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [{"port": 80}]}))
    .unwrap();
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    let made = api.create(&PostParams::default(), &own).await.unwrap();
    let manual: Endpoints = serde_json::from_value(json!({"metadata": {"name": "ext"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 80}]}]}))
    .unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(cluster.client.clone(), "default");
    let ep = endpoints
        .create(&PostParams::default(), &manual)
        .await
        .unwrap();
    // A selector service reconciled meanwhile proves the controller is running.
    create_service(
        &cluster,
        "probe",
        json!({"selector": {"app": "ext"}, "ports": [{"port": 80}]}),
    )
    .await;
    eventually("the probe service's slice", TIMEOUT, || async {
        (endpoints_of(&cluster, "probe").await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = slices(&cluster, "ext").await;
    assert_eq!(all.len(), 1, "no slice of ours for a selectorless service");
    assert_eq!(all[0].resource_version(), made.resource_version());
    assert_eq!(
        endpoints.get("ext").await.unwrap().resource_version(),
        ep.resource_version()
    );
}
