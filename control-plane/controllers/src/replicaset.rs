//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the selector, adopting
//! matching orphans and releasing owned pods that stopped matching, like upstream's.
//!
//! Pods are read from the API at each reconcile (a consistent list by label selector), not from
//! a cache, so pods it just created are always counted and no "expectations" bookkeeping is
//! needed; the watch only decides *when* to reconcile.

use std::{cmp::Ordering, sync::Arc, time::Duration};

use futures_util::{StreamExt as _, future::join_all};
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::Pod},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    ControllerError, Ctx,
    events::EventType,
    pods::{self, PodName},
};

const COMPONENT: &str = "replicaset-controller";
/// Upstream's burst limit: at most this many pods are created or deleted per sync.
const BURST: usize = 500;

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    controller
        .watches(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            move |pod| owners_of(&store, &pod),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures_util::future::ready(()))
        .await;
}

/// The ReplicaSets a pod event concerns: its controller, or (for an orphan) every ReplicaSet
/// whose selector matches it, which may adopt it.
pub(crate) fn owners_of(store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(owner) = pods::controller_of(&pod.metadata) {
        return if owner.kind == "ReplicaSet" {
            vec![ObjectRef::new(&owner.name).within(&ns)]
        } else {
            Vec::new()
        };
    }
    store
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| {
            rs.spec.as_ref().is_some_and(|s| {
                !pods::selector_is_empty(&s.selector)
                    && pods::selector_matches(&s.selector, pod.metadata.labels.as_ref())
            })
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

fn error_policy(rs: Arc<ReplicaSet>, err: &ControllerError, _ctx: Arc<Ctx>) -> Action {
    warn!(replicaset = %rs.name_any(), error = %err, "sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    // The cached object may be stale; decisions are made on the current one.
    let Some(rs) = api.get_opt(&rs.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let spec = rs.spec.clone().unwrap_or_default();
    if pods::selector_is_empty(&spec.selector) {
        return Err(ControllerError::Invalid(format!(
            "ReplicaSet {ns}/{} has an empty selector",
            rs.name_any()
        )));
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = claim_pods(&rs, &pod_api).await?;
    let active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let mut sync_error = None;
    match active.len().cmp(&want) {
        Ordering::Less => {
            let missing = (want - active.len()).min(BURST);
            if let Err(e) = create_pods(&ctx, &rs, &pod_api, missing).await {
                sync_error = Some(e);
            }
        }
        Ordering::Greater => {
            let mut victims = active.clone();
            victims.sort_by(|a, b| deletion_order(a, b));
            let victims = &victims[..(active.len() - want).min(BURST)];
            delete_pods(&ctx, &rs, &pod_api, victims).await;
        }
        Ordering::Equal => {}
    }
    // Status from a fresh list, so counts include what was just created or deleted.
    let owned = claim_pods(&rs, &pod_api).await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let requeue = update_status(&api, &rs, &owned, min_ready).await?;
    if let Some(e) = sync_error {
        return Err(e);
    }
    Ok(requeue.map_or_else(
        || Action::requeue(Duration::from_secs(300)),
        Action::requeue,
    ))
}

/// The pods this ReplicaSet controls after adopting matching orphans and releasing owned pods
/// whose labels no longer match (upstream's ClaimPods).
async fn claim_pods(rs: &ReplicaSet, pod_api: &Api<Pod>) -> Result<Vec<Pod>, ControllerError> {
    let spec = rs.spec.clone().unwrap_or_default();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let all = pod_api.list(&ListParams::default()).await?.items;
    let mut owned = Vec::new();
    for pod in all {
        let matches = pods::selector_matches(&spec.selector, pod.metadata.labels.as_ref());
        let controller = pods::controller_of(&pod.metadata).map(|r| r.uid.clone());
        match (controller, matches) {
            (Some(owner), true) if owner == uid => owned.push(pod),
            (Some(owner), false) if owner == uid => {
                release(pod_api, &pod, &uid).await;
            }
            (None, true) if pod.metadata.deletion_timestamp.is_none() && pods::is_active(&pod) => {
                if rs.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(pods::controller_ref(rs));
                let patch = json!({"metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": pod.metadata.resource_version,
                }});
                match pod_api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => {
                        debug!(pod = %adopted.name_any(), replicaset = %rs.name_any(), "adopted");
                        owned.push(adopted);
                    }
                    Err(e) => debug!(error = %e, "adopting a pod; another controller may have"),
                }
            }
            _ => {}
        }
    }
    Ok(owned)
}

async fn release(pod_api: &Api<Pod>, pod: &Pod, uid: &str) {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.metadata.resource_version,
    }});
    if let Err(e) = pod_api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        debug!(error = %e, pod = %pod.name_any(), "releasing a pod");
    }
}

/// Creates `count` pods in batches of 1, 2, 4, ... (upstream's slow start), so a template the
/// server rejects costs one failed request, not hundreds. Stops at the first failing batch.
async fn create_pods(
    ctx: &Ctx,
    rs: &ReplicaSet,
    pod_api: &Api<Pod>,
    count: usize,
) -> Result<(), ControllerError> {
    let spec = rs.spec.clone().unwrap_or_default();
    let template = spec.template.unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let owner = pods::controller_ref(rs);
    let mut remaining = count;
    let mut batch = 1;
    while remaining > 0 {
        let size = batch.min(remaining);
        let results = join_all((0..size).map(|_| {
            let pod =
                pods::from_template(&template, owner.clone(), &ns, PodName::Generate(&name), &[]);
            async move { pod_api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        let mut failed = None;
        for result in results {
            match result {
                Ok(pod) => {
                    ctx.events
                        .publish(
                            COMPONENT,
                            rs,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created pod: {}", pod.name_any()),
                        )
                        .await;
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            ctx.events
                .publish(
                    COMPONENT,
                    rs,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
            return Err(e.into());
        }
        remaining -= size;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pods(ctx: &Ctx, rs: &ReplicaSet, pod_api: &Api<Pod>, victims: &[&Pod]) {
    let results = join_all(victims.iter().map(|pod| async move {
        let name = pod.name_any();
        (
            name.clone(),
            pod_api.delete(&name, &DeleteParams::default()).await,
        )
    }))
    .await;
    for (name, result) in results {
        match result {
            Ok(_) => {
                ctx.events
                    .publish(
                        COMPONENT,
                        rs,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    )
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                ctx.events
                    .publish(
                        COMPONENT,
                        rs,
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Error deleting pod {name}: {e}"),
                    )
                    .await;
            }
        }
    }
}

/// Which pod goes first when scaling down (upstream's ActivePods ordering): unscheduled before
/// scheduled, Pending before Unknown before Running, not ready before ready, recently ready
/// before long ready, more restarts first, newer before older.
pub(crate) fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let ready_since = |p: &Pod| ready_since(p).map(std::cmp::Reverse);
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum::<i32>())
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pods::is_ready(a).cmp(&pods::is_ready(b)))
        .then_with(|| ready_since(a).cmp(&ready_since(b)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
}

/// When the pod's Ready condition last turned True.
fn ready_since(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// Ready for at least `min_ready` seconds at `now` (or ready at all when it is 0). The second
/// value is how long until it will be, when it is ready but not yet long enough.
pub(crate) fn available(pod: &Pod, min_ready: i32, now: Timestamp) -> (bool, Option<Duration>) {
    if !pods::is_ready(pod) {
        return (false, None);
    }
    if min_ready <= 0 {
        return (true, None);
    }
    let Some(since) = ready_since(pod) else {
        return (true, None);
    };
    let need = Duration::from_secs(u64::try_from(min_ready).unwrap_or(0));
    let waited = Duration::try_from(now.duration_since(since)).unwrap_or_default();
    if waited >= need {
        (true, None)
    } else {
        (false, Some(need - waited + Duration::from_millis(100)))
    }
}

/// Writes the status when it changed. Returns when to look again for pods becoming available.
async fn update_status(
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    owned: &[Pod],
    min_ready: i32,
) -> Result<Option<Duration>, ControllerError> {
    let now = Timestamp::now();
    let active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| pods::is_ready(p)).count();
    let mut available_count = 0;
    let mut next: Option<Duration> = None;
    for pod in &active {
        let (ok, later) = available(pod, min_ready, now);
        if ok {
            available_count += 1;
        }
        if let Some(later) = later {
            next = Some(next.map_or(later, |n| n.min(later)));
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let status = json!({
        "replicas": count(active.len()),
        "fullyLabeledReplicas": count(fully_labeled),
        "readyReplicas": count(ready),
        "availableReplicas": count(available_count),
        "observedGeneration": rs.metadata.generation,
    });
    let current = serde_json::to_value(rs.status.clone().unwrap_or_default()).unwrap_or_default();
    let unchanged = [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .iter()
    .all(|k| current.get(*k).unwrap_or(&json!(0)) == status.get(*k).unwrap_or(&json!(0)));
    if !unchanged {
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready {"True"} else {"False"},
                 "lastTransitionTime": created}]},
        }))
        .unwrap()
    }

    #[test]
    fn scale_down_prefers_unscheduled_then_pending_then_unready_then_newest() {
        let unscheduled = pod(None, "Pending", false, "2026-01-01T00:00:00Z");
        let pending = pod(Some("n"), "Pending", false, "2026-01-01T00:00:00Z");
        let unready = pod(Some("n"), "Running", false, "2026-01-01T00:00:00Z");
        let ready_old = pod(Some("n"), "Running", true, "2026-01-01T00:00:00Z");
        let ready_new = pod(Some("n"), "Running", true, "2026-01-02T00:00:00Z");
        let mut all = [&ready_old, &unready, &ready_new, &pending, &unscheduled];
        all.sort_by(|a, b| deletion_order(a, b));
        let order: Vec<*const Pod> = all.iter().map(|p| *p as *const Pod).collect();
        let want: Vec<*const Pod> = [&unscheduled, &pending, &unready, &ready_new, &ready_old]
            .iter()
            .map(|p| *p as *const Pod)
            .collect();
        assert_eq!(order, want);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod(Some("n"), "Running", true, "2026-01-01T00:00:00Z");
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(available(&p, 0, at("2026-01-01T00:00:01Z")), (true, None));
        let (ok, later) = available(&p, 10, at("2026-01-01T00:00:04Z"));
        assert!(!ok);
        assert!(later.unwrap() > Duration::from_secs(5));
        assert!(available(&p, 10, at("2026-01-01T00:00:11Z")).0);
    }
}
