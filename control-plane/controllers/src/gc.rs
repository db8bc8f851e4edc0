//! The garbage collector: objects whose owners (by uid) are gone are deleted; an owner deleted
//! in the foreground waits for its blocking dependents; an owner deleted with the orphan policy
//! first lets go of its dependents. As kube-controller-manager's garbagecollector does it.
//!
//! ```text
//!  watch each kind below ──▶ graph: uid → (kind, name, owners, deleting, finalizers) + owner → dependents
//!                              │ every change marks the object, its owners and its dependents dirty
//!                              ▼
//!  dirty object: being deleted with `orphan`             → drop its refs from dependents, then the finalizer
//!                being deleted with `foregroundDeletion` → delete dependents; none blocking → drop the finalizer
//!                owners all gone (live GET confirms)     → delete it (foreground if an owner waits on it)
//! ```
//!
//! The kinds are a fixed list rather than discovery: the GC must watch every kind it can collect,
//! and a fixed list keeps that set (and the number of watches) known; high-churn kinds that never
//! carry owner references (Events) stay out. Owners of other kinds are still looked up through
//! discovery when a dependent points at one.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::{FutureExt as _, StreamExt as _, stream};
use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet},
        autoscaling::v2::HorizontalPodAutoscaler,
        batch::v1::{CronJob, Job},
        coordination::v1::Lease,
        core::v1::{
            ConfigMap, Endpoints, Node, ObjectReference, Pod, Secret, Service, ServiceAccount,
        },
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, NetworkPolicy},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api, Resource, ResourceExt as _,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams, Preconditions,
        PropagationPolicy,
    },
    discovery::Scope,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{ControllerError, Ctx, events::EventType};

const COMPONENT: &str = "garbage-collector-controller";
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
const RETRY: Duration = Duration::from_secs(1);

/// A kind the collector watches.
#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

fn kind<K: Resource<DynamicType = ()>>(namespaced: bool) -> Kind {
    Kind {
        resource: ApiResource::erase::<K>(&()),
        namespaced,
    }
}

/// Every kind whose objects are collected (and whose objects may own others).
fn kinds() -> Vec<Kind> {
    vec![
        kind::<Pod>(true),
        kind::<Service>(true),
        kind::<ConfigMap>(true),
        kind::<Secret>(true),
        kind::<ServiceAccount>(true),
        kind::<Endpoints>(true),
        kind::<ReplicaSet>(true),
        kind::<Deployment>(true),
        kind::<DaemonSet>(true),
        kind::<StatefulSet>(true),
        kind::<ControllerRevision>(true),
        kind::<Job>(true),
        kind::<CronJob>(true),
        kind::<EndpointSlice>(true),
        kind::<HorizontalPodAutoscaler>(true),
        kind::<PodDisruptionBudget>(true),
        kind::<Ingress>(true),
        kind::<NetworkPolicy>(true),
        kind::<Role>(true),
        kind::<RoleBinding>(true),
        // Node Leases are owned by their Node.
        kind::<Lease>(true),
        kind::<Node>(false),
        kind::<ClusterRole>(false),
        kind::<ClusterRoleBinding>(false),
    ]
}

/// What the graph keeps of an object.
#[derive(Debug, Clone)]
struct Item {
    kind: usize,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Item {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// The ownership graph, keyed by uid.
#[derive(Default)]
struct Graph {
    items: HashMap<String, Item>,
    dependents: HashMap<String, BTreeSet<String>>,
    /// Objects dirty since their last processing.
    dirty: BTreeSet<String>,
}

impl Graph {
    fn upsert(&mut self, kind: usize, obj: &DynamicObject) -> Option<String> {
        let uid = obj.uid()?;
        let item = Item {
            kind,
            namespace: obj.namespace(),
            name: obj.name_any(),
            owners: obj.owner_references().to_vec(),
            deleting: obj.meta().deletion_timestamp.is_some(),
            finalizers: obj.finalizers().to_vec(),
        };
        let old = self.items.insert(uid.clone(), item.clone());
        if let Some(old) = &old {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
                self.dirty.insert(o.uid.clone());
            }
        }
        for o in &item.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
            self.dirty.insert(o.uid.clone());
        }
        if !item.owners.is_empty() || item.deleting {
            self.dirty.insert(uid.clone());
        }
        // A deleting owner's dependents may now have to go (foreground) or be let go (orphan).
        if item.deleting && old.as_ref().is_none_or(|o| !o.deleting) {
            self.dirty_dependents(&uid);
        }
        Some(uid)
    }

    fn remove(&mut self, uid: &str) {
        let Some(item) = self.items.remove(uid) else {
            return;
        };
        for o in &item.owners {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
            // A foreground owner may have been waiting for this one.
            self.dirty.insert(o.uid.clone());
        }
        // Its dependents may be orphans now.
        self.dirty_dependents(uid);
    }

    fn dirty_dependents(&mut self, uid: &str) {
        if let Some(deps) = self.dependents.get(uid) {
            self.dirty.extend(deps.iter().cloned());
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Item)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| Some((d.clone(), self.items.get(d)?.clone())))
            .collect()
    }
}

/// How an owner reference stands (upstream's solid / dangling / waitingForDependentsDeletion).
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    Solid,
    Dangling,
    Waiting,
    /// Its kind cannot be resolved: leave the dependent alone.
    Unknown,
}

struct Collector {
    ctx: Arc<Ctx>,
    kinds: Vec<Kind>,
    graph: Graph,
    /// Kinds listed at least once: until every kind is, absence from the graph means nothing.
    synced: HashSet<usize>,
    /// Per kind, the uids seen since the watch (re)started, to drop objects gone meanwhile.
    relisting: HashMap<usize, HashSet<String>>,
    retry: Vec<(Instant, String)>,
    /// Kinds of owners outside `kinds`, resolved through discovery.
    discovered: HashMap<(String, String), Option<Kind>>,
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let kinds = kinds();
    let watches = kinds.iter().enumerate().map(|(i, k)| {
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &k.resource);
        watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |ev| (i, ev))
            .boxed()
    });
    let mut events = stream::select_all(watches);
    let mut gc = Collector {
        ctx,
        kinds,
        graph: Graph::default(),
        synced: HashSet::new(),
        relisting: HashMap::new(),
        retry: Vec::new(),
        discovered: HashMap::new(),
    };
    info!(kinds = gc.kinds.len(), "garbage collector started");
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some((kind, ev)) = ev else { return };
                gc.observe(kind, ev);
                // Take what else is ready before acting, so a burst is processed once.
                while let Some(Some((kind, ev))) = events.next().now_or_never() {
                    gc.observe(kind, ev);
                }
            }
            () = tokio::time::sleep(RETRY) => {}
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = gc.retry.drain(..).partition(|(t, _)| *t <= now);
        gc.retry = later;
        gc.graph.dirty.extend(due.into_iter().map(|(_, uid)| uid));
        if gc.synced.len() == gc.kinds.len() {
            gc.process_dirty().await;
        }
    }
}

impl Collector {
    fn observe(&mut self, kind: usize, ev: Result<watcher::Event<DynamicObject>, watcher::Error>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                debug!(kind = %self.kinds[kind].resource.kind, error = %e, "garbage collector watch");
                return;
            }
        };
        match ev {
            watcher::Event::Apply(obj) => {
                self.graph.upsert(kind, &obj);
            }
            watcher::Event::Delete(obj) => {
                if let Some(uid) = obj.uid() {
                    self.graph.remove(&uid);
                }
            }
            watcher::Event::Init => {
                self.relisting.insert(kind, HashSet::new());
            }
            watcher::Event::InitApply(obj) => {
                if let Some(uid) = self.graph.upsert(kind, &obj) {
                    self.relisting.entry(kind).or_default().insert(uid);
                }
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                let gone: Vec<String> = self
                    .graph
                    .items
                    .iter()
                    .filter(|(uid, item)| item.kind == kind && !seen.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in gone {
                    self.graph.remove(&uid);
                }
                self.synced.insert(kind);
            }
        }
    }

    async fn process_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.graph.dirty);
        for uid in dirty {
            if let Err(e) = self.process(&uid).await {
                debug!(uid, error = %e, "garbage collection step failed; retrying");
                self.retry.push((Instant::now() + RETRY, uid));
            }
        }
    }

    async fn process(&mut self, uid: &str) -> Result<(), ControllerError> {
        let Some(item) = self.graph.items.get(uid).cloned() else {
            return Ok(());
        };
        if item.deleting {
            if item.has_finalizer(ORPHAN) {
                return self.orphan_dependents(uid, &item).await;
            }
            if item.has_finalizer(FOREGROUND) {
                return self.delete_dependents(uid, &item).await;
            }
            return Ok(());
        }
        if item.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut gone = Vec::new();
        let mut waiting = false;
        for owner in &item.owners {
            match self.owner_state(&item, owner).await? {
                OwnerState::Solid => solid.push(owner.uid.clone()),
                OwnerState::Dangling => gone.push(owner.uid.clone()),
                OwnerState::Waiting => {
                    waiting = true;
                    gone.push(owner.uid.clone());
                }
                OwnerState::Unknown => return Ok(()),
            }
        }
        if !solid.is_empty() {
            if !gone.is_empty() {
                // Still owned: only the references to owners that are gone (or going) are dropped.
                self.drop_owner_refs(uid, &item, &gone).await?;
            }
            return Ok(());
        }
        let has_dependents = self
            .graph
            .dependents
            .get(uid)
            .is_some_and(|d| !d.is_empty());
        let policy = if waiting && has_dependents {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        let owners: Vec<String> = item
            .owners
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        info!(
            kind = %self.kinds[item.kind].resource.kind,
            object = %describe(&item),
            owners = ?owners,
            ?policy,
            "deleting an object whose owners are gone"
        );
        self.delete(uid, &item, policy).await
    }

    /// Whether `owner` of `item` exists: the graph first, then a live read (the graph may lag,
    /// and an object is never deleted on a cache's word alone).
    async fn owner_state(
        &mut self,
        item: &Item,
        owner: &OwnerReference,
    ) -> Result<OwnerState, ControllerError> {
        let waiting = |deleting: bool, finalizers: &[String]| {
            if deleting && finalizers.iter().any(|f| f == FOREGROUND) {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            }
        };
        if let Some(o) = self.graph.items.get(&owner.uid) {
            return Ok(waiting(o.deleting, &o.finalizers));
        }
        let Some(kind) = self.kind_of(owner).await else {
            return Ok(OwnerState::Unknown);
        };
        let api: Api<DynamicObject> = if kind.namespaced {
            let Some(ns) = &item.namespace else {
                // A cluster-scoped object cannot be owned by a namespaced one.
                return Ok(OwnerState::Dangling);
            };
            Api::namespaced_with(self.ctx.client.clone(), ns, &kind.resource)
        } else {
            Api::all_with(self.ctx.client.clone(), &kind.resource)
        };
        match api.get_opt(&owner.name).await? {
            Some(o) if o.uid().as_deref() == Some(owner.uid.as_str()) => Ok(waiting(
                o.meta().deletion_timestamp.is_some(),
                o.finalizers(),
            )),
            _ => Ok(OwnerState::Dangling),
        }
    }

    async fn kind_of(&mut self, owner: &OwnerReference) -> Option<Kind> {
        if let Some(k) = self
            .kinds
            .iter()
            .find(|k| k.resource.api_version == owner.api_version && k.resource.kind == owner.kind)
        {
            return Some(k.clone());
        }
        let key = (owner.api_version.clone(), owner.kind.clone());
        if let Some(k) = self.discovered.get(&key) {
            return k.clone();
        }
        let (group, version) = match owner.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", owner.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &owner.kind);
        let found = match kube::discovery::pinned_kind(&self.ctx.client, &gvk).await {
            Ok((resource, caps)) => Some(Kind {
                resource,
                namespaced: caps.scope == Scope::Namespaced,
            }),
            Err(e) => {
                warn!(api_version = %owner.api_version, kind = %owner.kind, error = %e,
                    "cannot resolve an owner's kind; its dependents are left alone");
                None
            }
        };
        self.discovered.insert(key, found.clone());
        found
    }

    fn api(&self, item: &Item) -> Api<DynamicObject> {
        let resource = &self.kinds[item.kind].resource;
        match &item.namespace {
            Some(ns) => Api::namespaced_with(self.ctx.client.clone(), ns, resource),
            None => Api::all_with(self.ctx.client.clone(), resource),
        }
    }

    async fn delete(
        &self,
        uid: &str,
        item: &Item,
        policy: PropagationPolicy,
    ) -> Result<(), ControllerError> {
        let params = DeleteParams {
            propagation_policy: Some(policy),
            // Never the object of the same name made since.
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(item).delete(&item.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrites the object read fresh (a conflict retries), so a concurrent writer's change is
    /// never lost; `change` returns false when there is nothing to do.
    async fn rewrite(
        &self,
        uid: &str,
        item: &Item,
        change: impl Fn(&mut DynamicObject) -> bool,
    ) -> Result<(), ControllerError> {
        let api = self.api(item);
        let Some(mut obj) = api.get_opt(&item.name).await? else {
            return Ok(());
        };
        if obj.uid().as_deref() != Some(uid) || !change(&mut obj) {
            return Ok(());
        }
        match api.replace(&item.name, &PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn drop_owner_refs(
        &self,
        uid: &str,
        item: &Item,
        owners: &[String],
    ) -> Result<(), ControllerError> {
        self.rewrite(uid, item, |obj| {
            let refs = obj.metadata.owner_references.get_or_insert_default();
            let before = refs.len();
            refs.retain(|r| !owners.contains(&r.uid));
            refs.len() != before
        })
        .await
    }

    async fn remove_finalizer(
        &self,
        uid: &str,
        item: &Item,
        finalizer: &str,
    ) -> Result<(), ControllerError> {
        self.rewrite(uid, item, |obj| {
            let list = obj.metadata.finalizers.get_or_insert_default();
            let before = list.len();
            list.retain(|f| f != finalizer);
            list.len() != before
        })
        .await
    }

    /// The orphan policy: dependents lose their reference to the owner, then the owner goes.
    async fn orphan_dependents(&self, uid: &str, owner: &Item) -> Result<(), ControllerError> {
        let dependents = self.graph.dependents_of(uid);
        for (dep_uid, dep) in &dependents {
            self.rewrite(dep_uid, dep, |obj| {
                let refs = obj.metadata.owner_references.get_or_insert_default();
                let before = refs.len();
                refs.retain(|r| r.uid != uid);
                refs.len() != before
            })
            .await?;
        }
        if !dependents.is_empty() {
            let msg = format!(
                "Removed the owner reference from {} dependents",
                dependents.len()
            );
            self.event(uid, owner, "OrphanedDependents", &msg).await;
        }
        self.remove_finalizer(uid, owner, ORPHAN).await
    }

    /// The foreground policy: dependents are deleted; the owner goes once none blocks it.
    async fn delete_dependents(&self, uid: &str, owner: &Item) -> Result<(), ControllerError> {
        let dependents = self.graph.dependents_of(uid);
        let mut blocking = 0;
        let mut deleted = 0;
        for (dep_uid, dep) in &dependents {
            let blocks = dep
                .owners
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dep.deleting {
                continue;
            }
            let has_dependents = self
                .graph
                .dependents
                .get(dep_uid)
                .is_some_and(|d| !d.is_empty());
            let policy = if has_dependents {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            self.delete(dep_uid, dep, policy).await?;
            deleted += 1;
        }
        if deleted > 0 {
            let msg =
                format!("Deleting {deleted} dependents before the owner (foreground deletion)");
            self.event(uid, owner, "DeletingDependents", &msg).await;
        }
        if blocking == 0 {
            self.remove_finalizer(uid, owner, FOREGROUND).await?;
        }
        Ok(())
    }

    async fn event(&self, uid: &str, item: &Item, reason: &str, message: &str) {
        let resource = &self.kinds[item.kind].resource;
        let involved = ObjectReference {
            api_version: Some(resource.api_version.clone()),
            kind: Some(resource.kind.clone()),
            name: Some(item.name.clone()),
            namespace: item.namespace.clone(),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        };
        self.ctx
            .events
            .publish_ref(COMPONENT, &involved, EventType::Normal, reason, message)
            .await;
    }
}

fn describe(item: &Item) -> String {
    match &item.namespace {
        Some(ns) => format!("{ns}/{}", item.name),
        None => item.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(uid: &str, owners: &[&str], deleting: bool) -> DynamicObject {
        let owners: Vec<_> = owners
            .iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o, "uid": o}))
            .collect();
        let mut meta =
            json!({"name": uid, "namespace": "default", "uid": uid, "ownerReferences": owners});
        if deleting {
            meta["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            meta["finalizers"] = json!([FOREGROUND]);
        }
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}))
            .unwrap()
    }

    #[test]
    fn the_graph_marks_what_a_change_affects() {
        let mut g = Graph::default();
        g.upsert(0, &object("owner", &[], false));
        g.upsert(0, &object("dep", &["owner"], false));
        assert_eq!(g.dependents_of("owner").len(), 1);
        g.dirty.clear();

        // The owner starts a foreground deletion: its dependents must be looked at.
        g.upsert(0, &object("owner", &[], true));
        assert!(g.dirty.contains("dep") && g.dirty.contains("owner"));
        g.dirty.clear();

        // A dependent going lets the waiting owner proceed.
        g.remove("dep");
        assert!(g.dirty.contains("owner"));
        assert!(g.dependents_of("owner").is_empty());
        g.dirty.clear();

        // An owner going makes its dependents candidates.
        g.upsert(0, &object("dep2", &["owner"], false));
        g.dirty.clear();
        g.remove("owner");
        assert!(g.dirty.contains("dep2"));
    }
}
