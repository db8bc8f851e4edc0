//! Background work of the API server: finishing the deletion of namespaces (removing what they
//! hold, then their `kubernetes` finalizer), reaping allocation keys no service holds, and
//! keeping the `kubernetes` Service's endpoints.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::json;
use skiff_api::registry::{self, RESOURCES};
use skiff_store::{KeyValue, Store};
use tracing::{info, warn};

use crate::{ApiServer, alloc, objects};

const PERIOD: Duration = Duration::from_secs(2);

pub async fn run<S: Store>(api: Arc<ApiServer<S>>) {
    let mut suspects: BTreeSet<String> = BTreeSet::new();
    loop {
        if let Err(e) = finalize_namespaces(&api).await {
            warn!(error = %e, "namespace finalization failed; retrying");
        }
        if let Err(e) = default_service_accounts(&api).await {
            warn!(error = %e, "creating default service accounts failed; retrying");
        }
        if let Err(e) =
            crate::kubernetes_endpoints::reconcile(&api, api.config.kubernetes_endpoint).await
        {
            warn!(error = %e, "writing the kubernetes Service's endpoints failed; retrying");
        }
        match reap_allocations(&api, &suspects).await {
            Ok(next) => suspects = next,
            Err(e) => warn!(error = %e, "allocation repair failed; retrying"),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// A namespace as stored: its key and revision, its object, name and whether it is being deleted.
struct Namespace {
    kv: KeyValue,
    object: serde_json::Value,
    name: String,
    terminating: bool,
}

async fn namespaces<S: Store>(api: &ApiServer<S>) -> Result<Vec<Namespace>, String> {
    let namespaces = registry::find("", "v1", "namespaces").expect("served");
    let page = api
        .store
        .list(&objects::list_prefix(namespaces, None), None, None, None)
        .await
        .map_err(|e| e.to_string())?;
    page.items
        .into_iter()
        .map(|kv| {
            let object = objects::decode(&kv).map_err(|e| e.message)?;
            let terminating = object["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null());
            let name = objects::meta_str(&object, "name")
                .unwrap_or_default()
                .to_owned();
            Ok(Namespace {
                kv,
                object,
                name,
                terminating,
            })
        })
        .collect()
}

async fn finalize_namespaces<S: Store>(api: &ApiServer<S>) -> Result<(), String> {
    for Namespace {
        kv,
        object: ns,
        name,
        terminating,
    } in namespaces(api).await?
    {
        if !terminating {
            continue;
        }
        let mut remaining = 0;
        for r in RESOURCES.iter().filter(|r| r.namespaced && r.is_stored()) {
            // autoscaling/v1 and v2 share their objects: visit each storage prefix once.
            if r.group == "autoscaling" && r.version == "v1" {
                continue;
            }
            let prefix = objects::list_prefix(r, Some(&name));
            let items = api
                .store
                .list(&prefix, None, None, None)
                .await
                .map_err(|e| e.to_string())?
                .items;
            for item in items {
                remaining += 1;
                let _ = api.store.delete(&item.key, None).await;
                if r.kind == "Service"
                    && let Ok(obj) = objects::decode(&item)
                {
                    api.alloc.release(&*api.store, &alloc::held_by(&obj)).await;
                }
            }
        }
        if remaining > 0 {
            info!(namespace = %name, objects = remaining, "deleted the contents of a terminating namespace");
            continue;
        }
        let mut done = ns.clone();
        done["spec"]["finalizers"] = json!([]);
        let others = done["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if others {
            let _ = api
                .store
                .update(&kv.key, objects::encode(&done), kv.mod_revision)
                .await;
        } else {
            let _ = api.store.delete(&kv.key, Some(kv.mod_revision)).await;
            info!(namespace = %name, "namespace deleted");
        }
    }
    Ok(())
}

/// Every active namespace has a `default` ServiceAccount, which pods run as unless they say
/// otherwise.
async fn default_service_accounts<S: Store>(api: &ApiServer<S>) -> Result<(), String> {
    let accounts = registry::find("", "v1", "serviceaccounts").expect("served");
    for ns in namespaces(api).await? {
        if ns.terminating {
            continue;
        }
        let name = ns.name;
        let key = objects::key(accounts, Some(&name), "default");
        if api
            .store
            .get(&key, None)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            continue;
        }
        let sa = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name, "uid": objects::new_uid(), "creationTimestamp": objects::now()},
        });
        match api.store.create(&key, objects::encode(&sa)).await {
            Ok(_) | Err(skiff_store::StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Allocation keys whose owner service does not exist are suspects; a suspect still orphaned
/// one period later (so not a service being created right now) is released.
async fn reap_allocations<S: Store>(
    api: &ApiServer<S>,
    suspects: &BTreeSet<String>,
) -> Result<BTreeSet<String>, String> {
    let services = registry::find("", "v1", "services").expect("served");
    let held: BTreeSet<String> = api
        .store
        .list(&objects::list_prefix(services, None), None, None, None)
        .await
        .map_err(|e| e.to_string())?
        .items
        .iter()
        .filter_map(|kv| objects::decode(kv).ok())
        .flat_map(|svc| {
            let held = alloc::held_by(&svc);
            held.ips
                .iter()
                .map(|ip| format!("{}{ip}", alloc::IP_PREFIX))
                .chain(
                    held.ports
                        .iter()
                        .map(|p| format!("{}{p}", alloc::PORT_PREFIX)),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    let mut next = BTreeSet::new();
    for prefix in [alloc::IP_PREFIX, alloc::PORT_PREFIX] {
        let keys = api
            .store
            .list(prefix, None, None, None)
            .await
            .map_err(|e| e.to_string())?
            .items;
        for kv in keys.into_iter().filter(|kv| !held.contains(&kv.key)) {
            if suspects.contains(&kv.key) {
                let _ = api.store.delete(&kv.key, Some(kv.mod_revision)).await;
                info!(key = %kv.key, "released an allocation no service holds");
            } else {
                next.insert(kv.key);
            }
        }
    }
    Ok(next)
}
