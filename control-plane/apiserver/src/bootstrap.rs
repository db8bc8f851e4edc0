//! What every cluster has from its first start: the four standard namespaces and the
//! `kubernetes` service on the first address of the service network.

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
    let r = registry::find("", "v1", plural).expect("core resource");
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
    Ok(())
}
