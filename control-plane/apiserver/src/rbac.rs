//! RBAC for the API server: the default roles and bindings on first start, an authorizer
//! over a snapshot of the RBAC objects and of which pods run where (for the node authorizer),
//! and a refresher that keeps both current from the watch hub and fills in aggregated
//! ClusterRoles.

use std::sync::{Arc, RwLock};

use serde_json::{Value, json};
use skiff_api::{
    authz::{
        self, ImpersonationRequest, NodeGraph, RbacSnapshot, authorize_impersonation,
        authorize_node_rbac, impersonation_attributes,
    },
    registry,
};
use skiff_store::{Store, StoreError};
use tracing::{info, warn};

use crate::{
    ApiServer,
    authn::User,
    authz::{Attributes, Authorizer},
    errors::ApiError,
    objects,
};

const RBAC_KINDS: [&str; 4] = [
    "roles",
    "clusterroles",
    "rolebindings",
    "clusterrolebindings",
];

/// Authorizes with RBAC and the node authorizer over the latest snapshot.
#[derive(Default)]
pub struct RbacAuthorizer {
    snapshot: RwLock<Arc<RbacSnapshot>>,
    nodes: RwLock<Arc<NodeGraph>>,
}

impl RbacAuthorizer {
    fn snapshot(&self) -> Arc<RbacSnapshot> {
        Arc::clone(
            &self
                .snapshot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn nodes(&self) -> Arc<NodeGraph> {
        Arc::clone(
            &self
                .nodes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl RbacAuthorizer {
    fn apply_pod_change(&self, change: &crate::watch::Change) {
        if !change.deleted && !NodeGraph::affected_by(change.prev.as_deref(), &change.object) {
            return;
        }
        let mut guard = self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Copies the graph only while a request still holds the previous one.
        let graph = Arc::make_mut(&mut guard);
        if change.deleted {
            graph.remove_pod(
                objects::meta_str(&change.object, "namespace").unwrap_or_default(),
                objects::meta_str(&change.object, "name").unwrap_or_default(),
            );
        } else {
            graph.add_pod(&change.object);
        }
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(
        &self,
        user: &User,
        attrs: &Attributes,
        field_selector: &str,
    ) -> Result<(), String> {
        let decision =
            authorize_node_rbac(&self.snapshot(), &self.nodes(), user, attrs, field_selector);
        if decision.allowed {
            Ok(())
        } else {
            Err(decision.denied_message)
        }
    }

    fn review(&self, user: &User, attrs: &Attributes) -> (bool, String) {
        let d = authorize_node_rbac(&self.snapshot(), &self.nodes(), user, attrs, "");
        (d.allowed, d.reason)
    }

    fn rules_for(&self, user: &User, namespace: &str) -> (Vec<Value>, Vec<Value>, bool) {
        self.snapshot().rules_for(user, namespace)
    }

    fn impersonate(
        &self,
        requestor: &User,
        request: &ImpersonationRequest,
    ) -> Result<User, ApiError> {
        let wanted =
            impersonation_attributes(request).map_err(|e| ApiError::bad_request(e.to_string()))?;
        authorize_impersonation(&self.snapshot(), requestor, &wanted)
            .map_err(|d| ApiError::new(403, "Forbidden", d.denied_message))
    }

    fn check_rbac_write(
        &self,
        user: &User,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), String> {
        let snapshot = self.snapshot();
        match obj["kind"].as_str() {
            Some("Role" | "ClusterRole") => authz::check_role_write(&snapshot, user, obj, old),
            Some("RoleBinding" | "ClusterRoleBinding") => {
                authz::check_binding_write(&snapshot, user, obj)
            }
            _ => Ok(()),
        }
    }
}

fn rbac_resource(plural: &str) -> &'static registry::Resource {
    registry::find("rbac.authorization.k8s.io", "v1", plural).expect("RBAC kinds are served")
}

/// Stores the default roles and bindings that are missing (existing ones are left as the
/// administrator made them).
pub async fn ensure_bootstrap<S: Store>(api: &ApiServer<S>) -> Result<(), ApiError> {
    for mut obj in authz::bootstrap_objects() {
        let plural = match obj["kind"].as_str() {
            Some("ClusterRole") => "clusterroles",
            Some("ClusterRoleBinding") => "clusterrolebindings",
            Some("Role") => "roles",
            Some("RoleBinding") => "rolebindings",
            _ => continue,
        };
        let r = rbac_resource(plural);
        let name = objects::meta_str(&obj, "name")
            .unwrap_or_default()
            .to_owned();
        let ns = objects::meta_str(&obj, "namespace").map(str::to_owned);
        let meta = objects::meta_mut(&mut obj)?;
        meta.insert("uid".into(), json!(objects::new_uid()));
        meta.insert("creationTimestamp".into(), json!(objects::now()));
        match api
            .store
            .create(
                &objects::key(r, ns.as_deref(), &name),
                objects::encode(&obj),
            )
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, r, &name)),
        }
    }
    Ok(())
}

async fn load<S: Store>(
    api: &ApiServer<S>,
    prefix: &str,
    revision: i64,
) -> Result<Vec<Value>, StoreError> {
    let page = api.store.list(prefix, Some(revision), None, None).await?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| objects::decode(kv).ok())
        .collect())
}

/// Rebuilds the snapshot (and stores aggregated ClusterRoles) from the store.
async fn rebuild<S: Store>(api: &ApiServer<S>, authz: &RbacAuthorizer) -> Result<i64, StoreError> {
    // Every prefix at one revision, the one the watches then start from: a change between two
    // of the lists is in the snapshot or in the replay, never in neither.
    let revision = api.store.current_revision().await?;
    let mut all = Vec::new();
    let mut cluster_roles = Vec::new();
    for plural in RBAC_KINDS {
        let items = load(
            api,
            &registry::storage_prefix(rbac_resource(plural)),
            revision,
        )
        .await?;
        if plural == "clusterroles" {
            cluster_roles.clone_from(&items);
        }
        all.extend(items);
    }
    let pods = registry::find("", "v1", "pods").expect("served");
    let pods = load(api, &registry::storage_prefix(pods), revision).await?;
    *authz
        .snapshot
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Arc::new(RbacSnapshot::from_mixed(&all));
    *authz
        .nodes
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(NodeGraph::from_pods(&pods));
    for (name, rules) in authz::aggregate(&cluster_roles) {
        let Some(current) = cluster_roles
            .iter()
            .find(|r| objects::meta_str(r, "name") == Some(name.as_str()))
        else {
            continue;
        };
        if current["rules"] == Value::Array(rules.clone()) {
            continue;
        }
        let r = rbac_resource("clusterroles");
        let key = objects::key(r, None, &name);
        let mut updated = current.clone();
        updated["rules"] = Value::Array(rules);
        let rv = objects::resource_version(current)
            .ok()
            .flatten()
            .unwrap_or_default();
        match api.store.update(&key, objects::encode(&updated), rv).await {
            Ok(_) => info!(clusterrole = %name, "aggregated rules updated"),
            Err(e) => {
                warn!(clusterrole = %name, error = %e, "storing aggregated rules; will retry");
            }
        }
    }
    Ok(revision)
}

/// Keeps the authorizer's snapshot current: rebuilt whenever an RBAC object changes (changes
/// arriving together are folded into one rebuild); the node graph follows pod changes one by one,
/// and only those that can change it (a pod's node or references, not its status).
pub async fn refresh<S: Store>(api: Arc<ApiServer<S>>, authz: Arc<RbacAuthorizer>) {
    loop {
        let revision = match rebuild(&api, &authz).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "loading RBAC objects; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut tasks = Vec::new();
        for prefix in RBAC_KINDS
            .iter()
            .map(|p| registry::storage_prefix(rbac_resource(p)))
        {
            let Ok(mut sub) = api.hub.subscribe(&prefix, revision).await else {
                continue;
            };
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(_)) = sub.next().await {
                    let _ = tx.try_send(());
                }
                let _ = tx.try_send(());
            }));
        }
        let pods = registry::find("", "v1", "pods").expect("served");
        if let Ok(mut sub) = api
            .hub
            .subscribe(&registry::storage_prefix(pods), revision)
            .await
        {
            let tx = tx.clone();
            let authz = Arc::clone(&authz);
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(change)) = sub.next().await {
                    authz.apply_pod_change(&change);
                }
                // The feed ended (compaction, restart): start over from a full list.
                let _ = tx.try_send(());
            }));
        }
        drop(tx);
        let _ = rx.recv().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for t in tasks {
            t.abort();
        }
    }
}
