//! What every cluster has from its first start: the four standard namespaces, the
//! `kubernetes` service on the first address of the service network, and the `kube-dns` service
//! on the tenth.

use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::{Store, StoreError};

use crate::{ApiServer, errors::ApiError, objects};

pub const NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure_object<S: Store>(
    api: &ApiServer<S>,
    plural: &str,
    namespace: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    ensure_in_group(api, "", "v1", plural, namespace, obj).await
}

async fn ensure_in_group<S: Store>(
    api: &ApiServer<S>,
    group: &str,
    version: &str,
    plural: &str,
    namespace: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    let r = registry::find(group, version, plural).expect("a served resource");
    let name = objects::meta_str(&obj, "name")
        .unwrap_or_default()
        .to_owned();
    let key = objects::key(r, namespace, &name);
    match api.store.create(&key, objects::encode(&obj)).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(ApiError::from_store(e, r, &name)),
    }
}

pub async fn ensure<S: Store>(api: &ApiServer<S>) -> Result<(), ApiError> {
    for ns in NAMESPACES {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "uid": objects::new_uid(), "creationTimestamp": objects::now(),
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        ensure_object(api, "namespaces", None, obj).await?;
    }
    let services = registry::find("", "v1", "services").expect("services are served");
    if api
        .store
        .get(&objects::key(services, Some("default"), "kubernetes"), None)
        .await
        .map_err(|e| ApiError::from_store(e, services, "kubernetes"))?
        .is_none()
    {
        let ip = api.alloc.first_ip();
        // Claimed directly: the dynamic allocator never hands out the first address.
        let _ = api
            .alloc
            .ip(&*api.store, Some(ip), "default/kubernetes")
            .await;
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "uid": objects::new_uid(),
                         "creationTimestamp": objects::now(), "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                     "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {}},
        });
        ensure_object(api, "services", Some("default"), svc).await?;
    }
    ensure_kube_dns(api).await
}

/// The `kube-dns` Service that pods' resolv.conf names. Every node's agent answers DNS itself on
/// that very address (bound on the node's loopback, as NodeLocal DNSCache binds it), so the
/// Service has no selector and one endpoint, its own address: wherever a pod asks, its own node
/// answers, and the socket load balancer leaves the address as it is.
async fn ensure_kube_dns<S: Store>(api: &ApiServer<S>) -> Result<(), ApiError> {
    let services = registry::find("", "v1", "services").expect("services are served");
    let exists = api
        .store
        .get(
            &objects::key(services, Some("kube-system"), "kube-dns"),
            None,
        )
        .await
        .map_err(|e| ApiError::from_store(e, services, "kube-dns"))?
        .is_some();
    if exists {
        return Ok(());
    }
    let ip = api.alloc.dns_ip();
    if api
        .alloc
        .ip(&*api.store, Some(ip), "kube-system/kube-dns")
        .await
        .is_err()
    {
        // Someone else holds it (a service made before skiff served DNS): leave them be.
        tracing::warn!(%ip, "the cluster DNS address is taken; no kube-dns Service is created");
        return Ok(());
    }
    let ip = ip.to_string();
    let labels = json!({"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                        "kubernetes.io/name": "skiff-dns"});
    let meta = |name: &str, extra: Value| {
        let mut m = json!({"name": name, "namespace": "kube-system", "uid": objects::new_uid(),
                           "creationTimestamp": objects::now(), "labels": labels.clone()});
        if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
            for (k, v) in extra {
                m.insert(k, v);
            }
        }
        m
    };
    let ports = json!([
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
    ]);
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta("kube-dns", json!({"annotations": {
            "skiff.io/dns": "served by every node's agent on this address"}})),
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports,
                 "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "internalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {}},
    });
    ensure_object(api, "services", Some("kube-system"), svc).await?;
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints", "metadata": meta("kube-dns", json!({})),
        "subsets": [{"addresses": [{"ip": ip}], "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}],
    });
    ensure_object(api, "endpoints", Some("kube-system"), endpoints).await?;
    let mut slice_labels = labels.clone();
    slice_labels["kubernetes.io/service-name"] = json!("kube-dns");
    slice_labels["endpointslice.kubernetes.io/managed-by"] = json!("skiff-apiserver");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": meta("kube-dns-node-local", json!({"labels": slice_labels})),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
    });
    ensure_in_group(
        api,
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        Some("kube-system"),
        slice,
    )
    .await
}
