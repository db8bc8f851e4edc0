//! The endpoints of the `kubernetes` Service: where in-cluster clients (client-go's in-cluster
//! config, kubectl in a pod) reach the API server.
//!
//! By default the endpoint is the Service's own address: every node's agent answers it with a
//! forwarder to the API server it talks to (as it answers the kube-dns address), so pods reach
//! the API server also when it listens on the host's loopback only, and every node uses the
//! server it is joined to, whichever of several that is. With `--advertise-address` the endpoint
//! is that address and the server's port, and pods connect to it directly.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::{Store, StoreError};

use crate::{ApiServer, objects};

/// What the `kubernetes` Service's endpoints name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubernetesEndpoint {
    /// The Service's own address and port, answered on every node by its agent.
    #[default]
    NodeLocal,
    /// The API server's address for pods (`--advertise-address`) and its port.
    Advertised(SocketAddrV4),
}

const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";

/// The address and port to publish, given the Service as stored; `None` while the Service has
/// no address yet (nothing to publish).
fn endpoint(mode: KubernetesEndpoint, service: &Value) -> Option<SocketAddrV4> {
    match mode {
        KubernetesEndpoint::Advertised(addr) => Some(addr),
        KubernetesEndpoint::NodeLocal => {
            let ip: Ipv4Addr = service["spec"]["clusterIP"].as_str()?.parse().ok()?;
            let port = service["spec"]["ports"][0]["port"].as_u64()?;
            Some(SocketAddrV4::new(ip, u16::try_from(port).ok()?))
        }
    }
}

/// The Endpoints object's content (what is compared and written).
fn desired_endpoints(addr: SocketAddrV4) -> Value {
    json!([{"addresses": [{"ip": addr.ip().to_string()}],
            "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}])
}

fn desired_slice(addr: SocketAddrV4) -> (Value, Value) {
    (
        json!([{"addresses": [addr.ip().to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false}}]),
        json!([{"name": "https", "port": addr.port(), "protocol": "TCP"}]),
    )
}

/// Makes the `kubernetes` Endpoints and EndpointSlice name `mode`'s endpoint: created when
/// missing, rewritten when changed (a user's edit is undone, as upstream's reconciler does).
pub async fn reconcile<S: Store>(
    api: &ApiServer<S>,
    mode: KubernetesEndpoint,
) -> Result<(), String> {
    let services = registry::find("", "v1", "services").expect("services are served");
    let Some(service) = get(api, services, NAME).await? else {
        return Ok(());
    };
    let Some(addr) = endpoint(mode, &service) else {
        return Ok(());
    };

    let endpoints = registry::find("", "v1", "endpoints").expect("endpoints are served");
    let endpoints_template = json!({"apiVersion": "v1", "kind": "Endpoints",
                                    "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}});
    ensure(
        api,
        endpoints,
        endpoints_template,
        [("subsets", desired_endpoints(addr))],
    )
    .await?;

    let slices = registry::find("discovery.k8s.io", "v1", "endpointslices").expect("served");
    let slice_template = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                "metadata": {"name": NAME, "namespace": NAMESPACE,
                                             "labels": {"kubernetes.io/service-name": NAME,
                                                        "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"}},
                                "addressType": "IPv4"});
    let (slice_endpoints, ports) = desired_slice(addr);
    ensure(
        api,
        slices,
        slice_template,
        [("endpoints", slice_endpoints), ("ports", ports)],
    )
    .await
}

/// Makes `default/kubernetes` of `resource` hold `fields`: created from `template` when missing,
/// the fields rewritten (the rest kept) when any differs, untouched otherwise.
async fn ensure<S: Store, const N: usize>(
    api: &ApiServer<S>,
    resource: &registry::Resource,
    template: Value,
    fields: [(&str, Value); N],
) -> Result<(), String> {
    let mut obj = match get(api, resource, NAME).await? {
        Some(current) if fields.iter().all(|(k, v)| current[*k] == *v) => return Ok(()),
        Some(current) => current,
        None => {
            let mut obj = template;
            obj["metadata"]["uid"] = json!(objects::new_uid());
            obj["metadata"]["creationTimestamp"] = json!(objects::now());
            obj
        }
    };
    for (k, v) in fields {
        obj[k] = v;
    }
    write(api, resource, obj).await
}

/// The stored object `default/<name>` of `resource` (its revision in resourceVersion).
async fn get<S: Store>(
    api: &ApiServer<S>,
    resource: &registry::Resource,
    name: &str,
) -> Result<Option<Value>, String> {
    let key = objects::key(resource, Some(NAMESPACE), name);
    let Some(kv) = api.store.get(&key, None).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    objects::decode(&kv).map(Some).map_err(|e| e.message)
}

/// Creates `obj`, or replaces it if it carries the revision it was read at; a conflict (someone
/// wrote meanwhile) is left for the next round.
async fn write<S: Store>(
    api: &ApiServer<S>,
    resource: &registry::Resource,
    obj: Value,
) -> Result<(), String> {
    let name = objects::meta_str(&obj, "name")
        .unwrap_or_default()
        .to_owned();
    let key = objects::key(resource, Some(NAMESPACE), &name);
    let revision = obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok());
    let result = match revision {
        Some(rev) => api.store.update(&key, objects::encode(&obj), rev).await,
        None => api.store.create(&key, objects::encode(&obj)).await,
    };
    match result {
        Ok(_) | Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skiff_store::MemStore;

    use super::*;
    use crate::Config;

    async fn published(api: &ApiServer<MemStore>) -> (Value, Value) {
        let endpoints = registry::find("", "v1", "endpoints").unwrap();
        let slices = registry::find("discovery.k8s.io", "v1", "endpointslices").unwrap();
        (
            get(api, endpoints, NAME).await.unwrap().unwrap(),
            get(api, slices, NAME).await.unwrap().unwrap(),
        )
    }

    #[tokio::test]
    async fn the_endpoints_are_created_restored_after_edits_and_follow_the_mode() {
        let api = ApiServer::new(Arc::new(MemStore::new()), Config::default())
            .await
            .unwrap();
        reconcile(&api, KubernetesEndpoint::NodeLocal)
            .await
            .unwrap();
        let (endpoints, slice) = published(&api).await;
        assert_eq!(
            endpoints["subsets"],
            desired_endpoints("10.96.0.1:443".parse().unwrap())
        );
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.96.0.1");
        assert_eq!(slice["ports"][0]["port"], 443);
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            NAME
        );
        assert_eq!(slice["addressType"], "IPv4");

        // Nothing to do: no write (the revision stays).
        let before = endpoints["metadata"]["resourceVersion"].clone();
        reconcile(&api, KubernetesEndpoint::NodeLocal)
            .await
            .unwrap();
        assert_eq!(
            published(&api).await.0["metadata"]["resourceVersion"],
            before
        );

        // A user's edit is undone.
        let resource = registry::find("", "v1", "endpoints").unwrap();
        let key = objects::key(resource, Some(NAMESPACE), NAME);
        let mut edited = endpoints.clone();
        edited["subsets"][0]["addresses"][0]["ip"] = json!("10.1.2.3");
        let rev: i64 = before.as_str().unwrap().parse().unwrap();
        api.store
            .update(&key, objects::encode(&edited), rev)
            .await
            .unwrap();
        reconcile(&api, KubernetesEndpoint::NodeLocal)
            .await
            .unwrap();
        let (endpoints, _) = published(&api).await;
        assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "10.96.0.1");
        assert_eq!(
            endpoints["metadata"]["uid"], edited["metadata"]["uid"],
            "updated, not recreated"
        );

        // --advertise-address: the server's own address and port instead.
        let advertised = "192.0.2.7:6443".parse().unwrap();
        reconcile(&api, KubernetesEndpoint::Advertised(advertised))
            .await
            .unwrap();
        let (endpoints, slice) = published(&api).await;
        assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "192.0.2.7");
        assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 6443);
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.0.2.7");
        assert_eq!(slice["ports"][0]["port"], 6443);
    }

    #[test]
    fn node_local_publishes_the_service_address_and_port() {
        let svc = json!({"spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}});
        assert_eq!(
            endpoint(KubernetesEndpoint::NodeLocal, &svc),
            Some("10.96.0.1:443".parse().unwrap())
        );
        let advertised = "192.0.2.7:6443".parse().unwrap();
        assert_eq!(
            endpoint(KubernetesEndpoint::Advertised(advertised), &svc),
            Some(advertised)
        );
        // No address yet, or a malformed one: nothing to publish rather than a wrong endpoint.
        assert_eq!(
            endpoint(KubernetesEndpoint::NodeLocal, &json!({"spec": {}})),
            None
        );
        assert_eq!(
            endpoint(
                KubernetesEndpoint::NodeLocal,
                &json!({"spec": {"clusterIP": "None", "ports": [{"port": 443}]}})
            ),
            None
        );
    }
}
