//! The Deployment controller: one ReplicaSet per pod template (named by its pod-template-hash),
//! rolled from old to new within maxSurge / maxUnavailable (or Recreate), with the revision
//! annotations, conditions and events that `kubectl rollout status/history/undo` and
//! `kubectl describe` read. The arithmetic follows upstream's deployment/sync.go and rolling.go.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, Time},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::{Value, json};
use tracing::warn;

use crate::{ControllerError, Ctx, events::EventType, pods};

const COMPONENT: &str = "deployment-controller";
const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const HASH_LABEL: &str = "pod-template-hash";
/// Annotations of the Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX_REPLICAS,
];

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<ReplicaSet>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, ctx)
    .for_each(|_| futures_util::future::ready(()))
    .await;
}

fn error_policy(d: Arc<Deployment>, err: &ControllerError, _ctx: Arc<Ctx>) -> Action {
    warn!(deployment = %d.name_any(), error = %err, "sync failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The pod-template-hash of a template: FNV-1a over its JSON (and the collision count),
/// rendered with upstream's SafeEncodeString alphabet so names look like Kubernetes' own.
pub(crate) fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(template)
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// Templates equal once the pod-template-hash label is ignored (upstream's EqualIgnoreHash).
fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

/// An IntOrString against `total`: percentages round up for surge, down for unavailability.
fn resolve(value: Option<&IntOrString>, total: i32, default: &str, round_up: bool) -> i32 {
    let pct = |s: &str| s.trim_end_matches('%').parse::<i64>().ok();
    let n = match value {
        Some(IntOrString::Int(n)) => i64::from(*n),
        Some(IntOrString::String(s)) => pct(s).map_or(0, |p| percent_of(p, total, round_up)),
        None => pct(default).map_or(0, |p| percent_of(p, total, round_up)),
    };
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

fn percent_of(pct: i64, total: i32, round_up: bool) -> i64 {
    let product = pct * i64::from(total);
    if round_up {
        (product + 99) / 100
    } else {
        product / 100
    }
}

/// (maxSurge, maxUnavailable) resolved for `replicas`; both zero would deadlock, so
/// unavailability becomes 1 then (as upstream).
pub(crate) fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, 0);
    }
    let rolling = strategy.rolling_update.unwrap_or_default();
    let surge = resolve(rolling.max_surge.as_ref(), replicas, "25%", true);
    let mut unavailable = resolve(rolling.max_unavailable.as_ref(), replicas, "25%", false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The new ReplicaSet's size after a scale-up step (upstream's NewRSNewReplicas).
pub(crate) fn new_rs_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let current = spec_replicas(new);
    if d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
    {
        // Recreate grows the new set only once every old pod is gone.
        let old_pods = all
            .iter()
            .filter(|rs| rs.metadata.uid != new.metadata.uid)
            .any(|rs| spec_replicas(rs) > 0 || status_of(rs).0 > 0);
        return if old_pods { current } else { replicas };
    }
    let (surge, _) = surge_and_unavailable(d);
    // Pods of an old ReplicaSet just scaled down exist until its controller deletes them (and
    // then reports it in status.replicas): counting the larger number keeps surge strict.
    let total: i32 = all
        .iter()
        .map(|rs| spec_replicas(rs).max(status_of(rs).0))
        .sum();
    let max_total = replicas + surge;
    if total >= max_total {
        return current;
    }
    (current + (max_total - total))
        .min(replicas)
        .max(current.min(replicas))
}

/// How many old pods may go now (upstream's reconcileOldReplicaSets budget), given every
/// ReplicaSet's spec and status: the deployment keeps `replicas - maxUnavailable` available.
pub(crate) fn old_scale_down_budget(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (_, unavailable) = surge_and_unavailable(d);
    let min_available = replicas - unavailable;
    let all_pods: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let new_unavailable = spec_replicas(new) - status_of(new).2;
    all_pods - min_available - new_unavailable.max(0)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = d.namespace().unwrap_or_default();
    let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(d) = dapi.get_opt(&d.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.clone().unwrap_or_default();
    if pods::selector_is_empty(&spec.selector) {
        ctx.events
            .publish(
                COMPONENT,
                &d,
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
        return Ok(Action::await_change());
    }
    let rsapi: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut owned = claim_replica_sets(&rsapi, &d).await?;
    owned.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let template = spec.template.clone();
    let mut new = owned
        .iter()
        .find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| same_template(t, &template))
        })
        .cloned();
    let old: Vec<ReplicaSet> = owned
        .iter()
        .filter(|rs| Some(rs.metadata.uid.clone()) != new.as_ref().map(|n| n.metadata.uid.clone()))
        .cloned()
        .collect();
    let max_old_revision = old.iter().map(revision).max().unwrap_or(0);
    let paused = spec.paused == Some(true);
    let mut progressed = false;

    if paused {
        // A paused deployment still follows replica changes, but rolls nothing.
        let active: Vec<&ReplicaSet> = owned.iter().filter(|rs| spec_replicas(rs) > 0).collect();
        let target = new.as_ref().or(active.first().copied()).cloned();
        if active.len() <= 1
            && let Some(rs) = target
            && spec_replicas(&rs) != spec.replicas.unwrap_or(1)
        {
            scale(&ctx, &rsapi, &d, &rs, spec.replicas.unwrap_or(1)).await?;
        }
    } else {
        match &mut new {
            None => {
                let created = create_new(&ctx, &rsapi, &d, &old, max_old_revision + 1).await?;
                new = Some(created);
                progressed = true;
            }
            Some(rs) if revision(rs) <= max_old_revision || needs_annotations(&d, rs) => {
                *rs = bump_revision(&rsapi, &d, rs, max_old_revision).await?;
            }
            Some(_) => {}
        }
        let Some(new_rs) = new.clone() else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            progressed |= rollout_recreate(&ctx, &rsapi, &d, &new_rs, &old).await?;
        } else {
            progressed |= rollout_rolling(&ctx, &rsapi, &d, &new_rs, &old).await?;
        }
    }

    // Fresh state for the status and cleanup.
    let mut owned = claim_replica_sets(&rsapi, &d).await?;
    owned.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let new = new.and_then(|n| {
        owned
            .iter()
            .find(|rs| rs.metadata.uid == n.metadata.uid)
            .cloned()
    });
    let complete = update_status(&ctx, &dapi, &d, new.as_ref(), &owned, progressed).await?;
    if complete {
        cleanup_history(&ctx, &rsapi, &d, new.as_ref(), &owned).await;
    }
    if let Some(rs) = &new
        && d.annotations().get(REVISION) != rs.annotations().get(REVISION)
        && let Some(rev) = rs.annotations().get(REVISION)
    {
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        dapi.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(if complete || paused {
        Action::requeue(Duration::from_secs(300))
    } else {
        // Re-check the progress deadline and minReadySeconds even when nothing changes.
        Action::requeue(Duration::from_secs(5))
    })
}

/// The ReplicaSets this Deployment controls, after adopting matching orphans.
async fn claim_replica_sets(
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
) -> Result<Vec<ReplicaSet>, ControllerError> {
    let selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut owned = Vec::new();
    for rs in rsapi.list(&ListParams::default()).await?.items {
        let labels = rs.metadata.labels.as_ref();
        match pods::controller_of(&rs.metadata) {
            Some(owner) if owner.uid == uid => owned.push(rs),
            None if pods::selector_matches(&selector, labels)
                && rs.metadata.deletion_timestamp.is_none() =>
            {
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(pods::controller_ref(d));
                let patch = json!({"metadata": {"ownerReferences": refs,
                    "resourceVersion": rs.metadata.resource_version}});
                if let Ok(adopted) = rsapi
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    owned.push(adopted);
                }
            }
            _ => {}
        }
    }
    Ok(owned)
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn needs_annotations(d: &Deployment, rs: &ReplicaSet) -> bool {
    let a = rs.annotations();
    copied_annotations(d)
        .iter()
        .any(|(k, v)| a.get(k) != Some(v))
}

async fn create_new(
    ctx: &Ctx,
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
    old: &[ReplicaSet],
    revision: i64,
) -> Result<ReplicaSet, ControllerError> {
    let spec = d.spec.clone().unwrap_or_default();
    let mut collision = d.status.as_ref().and_then(|s| s.collision_count);
    loop {
        let hash = template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let (surge, _) = surge_and_unavailable(d);
        let replicas = spec.replicas.unwrap_or(1);
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION.into(), revision.to_string());
        annotations.insert(DESIRED.into(), replicas.to_string());
        annotations.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: d.namespace(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![pods::controller_ref(d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().collect();
        let size = new_rs_replicas(d, &all, &rs);
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(size);
        }
        match rsapi.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                ctx.events
                    .publish(
                        COMPONENT,
                        d,
                        EventType::Normal,
                        "ScalingReplicaSet",
                        &format!(
                            "Scaled up replica set {} from 0 to {size}",
                            created.name_any()
                        ),
                    )
                    .await;
                return Ok(created);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // A ReplicaSet of that name exists: ours with the same template is the new one;
                // anything else is a hash collision, resolved as upstream with collisionCount.
                let existing = rsapi.get(&format!("{}-{hash}", d.name_any())).await?;
                let ours = pods::controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                if ours
                    && existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| same_template(t, &spec.template))
                {
                    return Ok(existing);
                }
                collision = Some(collision.unwrap_or(0) + 1);
                let patch = json!({"status": {"collisionCount": collision}});
                Api::<Deployment>::namespaced(
                    rsapi.clone().into_client(),
                    &d.namespace().unwrap_or_default(),
                )
                .patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An old ReplicaSet brought back (rollout undo, or a template reverted) becomes the newest
/// revision; the revision it had is kept in revision-history, as upstream does.
async fn bump_revision(
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
    rs: &ReplicaSet,
    max_old: i64,
) -> Result<ReplicaSet, ControllerError> {
    let mut annotations: serde_json::Map<String, Value> = copied_annotations(d)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let current = revision(rs);
    if current <= max_old {
        annotations.insert(REVISION.into(), json!((max_old + 1).to_string()));
        if current > 0 {
            let history = rs
                .annotations()
                .get(REVISION_HISTORY)
                .filter(|h| !h.is_empty())
                .map_or_else(|| current.to_string(), |h| format!("{h},{current}"));
            annotations.insert(REVISION_HISTORY.into(), json!(history));
        }
    }
    let patch = json!({"metadata": {"annotations": annotations}});
    Ok(rsapi
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

async fn scale(
    ctx: &Ctx,
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
    rs: &ReplicaSet,
    to: i32,
) -> Result<(), ControllerError> {
    let from = spec_replicas(rs);
    if from == to {
        return Ok(());
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (surge, _) = surge_and_unavailable(d);
    let patch = json!({
        "metadata": {"annotations": {DESIRED: replicas.to_string(), MAX_REPLICAS: (replicas + surge).to_string()}},
        "spec": {"replicas": to},
    });
    rsapi
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let direction = if to > from { "up" } else { "down" };
    ctx.events
        .publish(
            COMPONENT,
            d,
            EventType::Normal,
            "ScalingReplicaSet",
            &format!(
                "Scaled {direction} replica set {} from {from} to {to}",
                rs.name_any()
            ),
        )
        .await;
    Ok(())
}

/// One RollingUpdate step: grow the new ReplicaSet within maxSurge, shrink old ones within
/// maxUnavailable (unhealthy old pods first). Returns whether anything was scaled.
async fn rollout_rolling(
    ctx: &Ctx,
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
    new: &ReplicaSet,
    old: &[ReplicaSet],
) -> Result<bool, ControllerError> {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut all: Vec<ReplicaSet> = old.to_vec();
    all.push(new.clone());
    let refs: Vec<&ReplicaSet> = all.iter().collect();
    let mut changed = false;
    let mut new = new.clone();
    let target = if spec_replicas(&new) > replicas {
        replicas
    } else {
        new_rs_replicas(d, &refs, &new)
    };
    if target != spec_replicas(&new) {
        scale(ctx, rsapi, d, &new, target).await?;
        if let Some(s) = new.spec.as_mut() {
            s.replicas = Some(target);
        }
        changed = true;
    }
    let mut old: Vec<ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .cloned()
        .collect();
    if old.is_empty() {
        return Ok(changed);
    }
    // Oldest first, as upstream scales them down.
    old.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let mut all: Vec<ReplicaSet> = old.clone();
    all.push(new.clone());
    let refs: Vec<&ReplicaSet> = all.iter().collect();
    let mut budget = old_scale_down_budget(d, &refs, &new);
    if budget <= 0 {
        return Ok(changed);
    }
    // Unhealthy old pods first: they cost no availability.
    for rs in &mut old {
        if budget <= 0 {
            break;
        }
        let unhealthy = spec_replicas(rs) - status_of(rs).2;
        let cut = unhealthy.min(budget).max(0);
        if cut > 0 {
            let to = spec_replicas(rs) - cut;
            scale(ctx, rsapi, d, rs, to).await?;
            if let Some(s) = rs.spec.as_mut() {
                s.replicas = Some(to);
            }
            budget -= cut;
            changed = true;
        }
    }
    // Then healthy ones, only as far as availability allows.
    let (_, unavailable) = surge_and_unavailable(d);
    let min_available = replicas - unavailable;
    // A status written before the last scale-down overstates what is left: cap it by the spec.
    let available: i32 = old
        .iter()
        .map(|rs| status_of(rs).2.min(spec_replicas(rs)))
        .sum::<i32>()
        + status_of(&new).2;
    let mut allowed = (available - min_available).min(budget);
    for rs in &old {
        if allowed <= 0 {
            break;
        }
        let cut = spec_replicas(rs).min(allowed);
        if cut > 0 {
            scale(ctx, rsapi, d, rs, spec_replicas(rs) - cut).await?;
            allowed -= cut;
            changed = true;
        }
    }
    Ok(changed)
}

/// Recreate: every old pod gone before the new ReplicaSet grows.
async fn rollout_recreate(
    ctx: &Ctx,
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
    new: &ReplicaSet,
    old: &[ReplicaSet],
) -> Result<bool, ControllerError> {
    let mut changed = false;
    for rs in old.iter().filter(|rs| spec_replicas(rs) > 0) {
        scale(ctx, rsapi, d, rs, 0).await?;
        changed = true;
    }
    if changed || old.iter().any(|rs| status_of(rs).0 > 0) {
        return Ok(changed);
    }
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if spec_replicas(new) != replicas {
        scale(ctx, rsapi, d, new, replicas).await?;
        changed = true;
    }
    Ok(changed)
}

/// Old ReplicaSets scaled to zero beyond revisionHistoryLimit go, oldest first.
async fn cleanup_history(
    ctx: &Ctx,
    rsapi: &Api<ReplicaSet>,
    d: &Deployment,
    new: Option<&ReplicaSet>,
    owned: &[ReplicaSet],
) {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0);
    let new_uid = new.and_then(|n| n.metadata.uid.clone());
    let mut idle: Vec<&ReplicaSet> = owned
        .iter()
        .filter(|rs| rs.metadata.uid != new_uid)
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = idle
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    idle.sort_by_key(|rs| revision(rs));
    for rs in idle.into_iter().take(excess) {
        match rsapi.delete(&rs.name_any(), &Default::default()).await {
            Ok(_) => {
                ctx.events
                    .publish(
                        COMPONENT,
                        d,
                        EventType::Normal,
                        "DeletedOldReplicaSet",
                        &format!(
                            "Deleted old replica set {} beyond revisionHistoryLimit",
                            rs.name_any()
                        ),
                    )
                    .await;
            }
            Err(e) => warn!(error = %e, replicaset = %rs.name_any(), "deleting an old ReplicaSet"),
        }
    }
}

/// Writes the status and conditions; returns whether the rollout is complete.
async fn update_status(
    ctx: &Ctx,
    dapi: &Api<Deployment>,
    d: &Deployment,
    new: Option<&ReplicaSet>,
    owned: &[ReplicaSet],
    progressed: bool,
) -> Result<bool, ControllerError> {
    let spec = d.spec.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let (_, max_unavailable) = surge_and_unavailable(d);
    let sum = |f: fn(&ReplicaSet) -> i32| owned.iter().map(f).sum::<i32>();
    let replicas = sum(|rs| status_of(rs).0);
    let ready = sum(|rs| status_of(rs).1);
    let available = sum(|rs| status_of(rs).2);
    let updated = new.map_or(0, |rs| status_of(rs).0);
    let complete = new.is_some()
        && updated == want
        && replicas == want
        && available == want
        && new.is_some_and(|rs| spec_replicas(rs) == want);
    let old_status = d.status.clone().unwrap_or_default();
    let old_conditions = old_status.conditions.clone().unwrap_or_default();
    let now = Timestamp::now();
    let condition = |type_: &str| old_conditions.iter().find(|c| c.type_ == type_).cloned();
    let new_name = new.map(ResourceExt::name_any).unwrap_or_default();

    let (avail_status, avail_reason, avail_msg) = if available >= want - max_unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
        )
    };
    let made_progress = progressed
        || updated > old_status.updated_replicas.unwrap_or(0)
        || ready > old_status.ready_replicas.unwrap_or(0)
        || available > old_status.available_replicas.unwrap_or(0)
        || (replicas - updated)
            < (old_status.replicas.unwrap_or(0) - old_status.updated_replicas.unwrap_or(0));
    let previous = condition("Progressing");
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let last_update = previous
        .as_ref()
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0);
    let timed_out = !complete
        && last_update.is_some_and(|t| {
            Duration::try_from(now.duration_since(t)).unwrap_or_default()
                > Duration::from_secs(u64::try_from(deadline.max(0)).unwrap_or(0))
        });
    let created_now = progressed
        && new.is_some_and(|rs| {
            status_of(rs).0 == 0
                && spec_replicas(rs) > 0
                && old_status.updated_replicas.unwrap_or(0) == 0
                && updated == 0
        });
    let progressing: Option<(&str, &str, String)> = if spec.paused == Some(true) {
        Some((
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_owned(),
        ))
    } else if previous.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused") {
        Some((
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".to_owned(),
        ))
    } else if complete {
        Some((
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        ))
    } else if made_progress && created_now {
        Some((
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        ))
    } else if made_progress || previous.is_none() {
        Some((
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        ))
    } else if timed_out {
        Some((
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        ))
    } else {
        None
    };

    let render = |type_: &str, status: &str, reason: &str, message: &str, bump_update: bool| {
        let prev = condition(type_);
        let same_status = prev.as_ref().is_some_and(|c| c.status == status);
        let same_reason = prev
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(reason));
        let transition = if same_status {
            prev.as_ref()
                .and_then(|c| c.last_transition_time.clone())
                .map(|t| t.0)
                .unwrap_or(now)
        } else {
            now
        };
        let update = if same_status && same_reason && !bump_update {
            prev.as_ref()
                .and_then(|c| c.last_update_time.clone())
                .map(|t| t.0)
                .unwrap_or(now)
        } else {
            now
        };
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastUpdateTime": Time(update), "lastTransitionTime": Time(transition)})
    };
    let available_c = render("Available", avail_status, avail_reason, &avail_msg, false);
    let progressing_c = match &progressing {
        Some((status, reason, message)) => render(
            "Progressing",
            status,
            reason,
            message,
            made_progress && !complete,
        ),
        None => serde_json::to_value(previous.clone()).unwrap_or(Value::Null),
    };
    let mut conditions = vec![available_c];
    if !progressing_c.is_null() && spec.progress_deadline_seconds != Some(i32::MAX) {
        conditions.push(progressing_c);
    }
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (want - available).max(0),
        "conditions": conditions,
        "collisionCount": old_status.collision_count,
    });
    let current = serde_json::to_value(&old_status).unwrap_or_default();
    let numbers_same = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .all(|k| current.get(*k).unwrap_or(&json!(0)) == status.get(*k).unwrap_or(&json!(0)));
    let conditions_same = {
        let strip = |v: &Value| {
            v.as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            (
                                c["type"].clone(),
                                c["status"].clone(),
                                c["reason"].clone(),
                                c["lastUpdateTime"].clone(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        strip(&current["conditions"]) == strip(&status["conditions"])
    };
    if !(numbers_same && conditions_same) {
        dapi.patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
        let was_timed_out =
            previous.as_ref().and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded");
        if timed_out
            && !was_timed_out
            && progressing
                .as_ref()
                .is_some_and(|p| p.1 == "ProgressDeadlineExceeded")
        {
            ctx.events
                .publish(
                    COMPONENT,
                    d,
                    EventType::Warning,
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                )
                .await;
        }
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate":
                        {"maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
        }))
        .unwrap()
    }

    fn rs(spec: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "rs"},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": spec, "availableReplicas": available, "readyReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn percentages_round_like_upstream() {
        assert_eq!(surge_and_unavailable(&deployment(10, "25%", "25%")), (3, 2));
        assert_eq!(surge_and_unavailable(&deployment(1, "25%", "25%")), (1, 0));
        assert_eq!(surge_and_unavailable(&deployment(4, "0%", "0%")), (0, 1));
    }

    #[test]
    fn rolling_steps_respect_surge_and_unavailability() {
        // 10 replicas, maxSurge 3, maxUnavailable 2: the new RS may grow to 3 at once.
        let d = deployment(10, "25%", "25%");
        let old = rs(10, 10);
        let new = rs(0, 0);
        assert_eq!(new_rs_replicas(&d, &[&old, &new], &new), 3);
        // With 13 pods in total, old pods may go down to 8 available: 13 - 8 - 3 unavailable new.
        let new = rs(3, 0);
        assert_eq!(old_scale_down_budget(&d, &[&old, &new], &new), 2);
        // Once the new pods are available, more old ones may go.
        let new = rs(3, 3);
        assert_eq!(old_scale_down_budget(&d, &[&old, &new], &new), 5);
    }

    #[test]
    fn hash_ignores_nothing_but_changes_with_collisions() {
        let d = deployment(1, "1", "0");
        let t = d.spec.unwrap().template;
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert_ne!(h, template_hash(&t, Some(1)));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
