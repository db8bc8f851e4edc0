//! The daemonset controller: one pod on every eligible node, following nodes as they come and go,
//! rolling updates bounded by maxUnavailable, and ControllerRevision history (which
//! `kubectl rollout history/undo daemonset` read).
//!
//! Daemon pods get `spec.nodeName` set directly (like kube-controller-manager before 1.12), so
//! they run even when no scheduler does; eligibility (nodeSelector, required node affinity,
//! taints against tolerations) is decided here.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash as _, Hasher as _},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus},
        core::v1::{Node, NodeSelector, Pod, PodSpec, PodTemplateSpec, Toleration},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        runtime::RawExtension,
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::{self, Store, reflector},
        watcher::{self, watcher},
    },
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    ControllerError, Ctx,
    events::EventType,
    placement::tolerates,
    pods::{self, PodName},
};

const COMPONENT: &str = "daemonset-controller";
/// The label carrying the template hash of the revision a pod (or ControllerRevision) belongs to.
pub(crate) const REVISION_LABEL: &str = "controller-revision-hash";

/// The controller's context: the shared one plus a cache of the nodes.
struct DsCtx {
    ctx: Arc<Ctx>,
    nodes: Store<Node>,
}

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let (nodes, writer) = reflector::store::<Node>();
    // Only node changes that can move daemons wake the DaemonSets, not status heartbeats.
    let mut seen: HashMap<String, u64> = HashMap::new();
    let node_changes = reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .filter_map(move |ev| {
        let out = match ev {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                let print = placement_fingerprint(&n);
                (seen.insert(n.name_any(), print) != Some(print)).then_some(())
            }
            Ok(watcher::Event::Delete(n)) => {
                seen.remove(&n.name_any());
                Some(())
            }
            // After a re-list, nodes deleted meanwhile were never seen going: look again.
            Ok(watcher::Event::InitDone) => Some(()),
            Ok(watcher::Event::Init) => None,
            Err(e) => {
                debug!(error = %e, "watching nodes");
                None
            }
        };
        std::future::ready(out)
    });
    controller
        .owns(Api::<Pod>::all(client), watcher::Config::default())
        .reconcile_all_on(node_changes)
        .run(reconcile, error_policy, Arc::new(DsCtx { ctx, nodes }))
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "daemonset reconcile");
            }
        })
        .await;
}

/// A hash of what decides which daemons a node gets: labels, taints, unschedulable.
fn placement_fingerprint(node: &Node) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    node.metadata.labels.hash(&mut h);
    node.metadata.uid.hash(&mut h);
    if let Some(spec) = &node.spec {
        spec.unschedulable.hash(&mut h);
        for t in spec.taints.iter().flatten() {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
    }
    h.finish()
}

fn error_policy(_ds: Arc<DaemonSet>, err: &ControllerError, _ctx: Arc<DsCtx>) -> Action {
    warn!(error = %err, "daemonset reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// A node's daemon at an old revision.
struct OldDaemon {
    node: String,
    pod: Pod,
    /// Whether the node's new-revision daemon is available, if it has one (a surge).
    new_available: Option<bool>,
}

/// What one node's daemon pods look like.
#[derive(Default)]
struct NodePods {
    pods: Vec<Pod>,
}

async fn reconcile(ds: Arc<DaemonSet>, dctx: Arc<DsCtx>) -> Result<Action, ControllerError> {
    let ctx = &dctx.ctx;
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let spec = ds.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone();
    if pods::selector_is_empty(&selector) {
        return Err(ControllerError::Invalid(format!(
            "daemonset {ns}/{name} has an empty selector"
        )));
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&pods::selector_string(&selector));
    let owned = claim_pods(&pod_api, ds.as_ref(), pod_api.list(&lp).await?.items).await?;
    let live_hashes: HashSet<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(REVISION_LABEL).cloned())
        .collect();
    let (current, _) = sync_revisions(
        ctx,
        ds.as_ref(),
        &spec.template,
        &selector,
        spec.revision_history_limit.unwrap_or(10),
        &live_hashes,
    )
    .await?;
    let hash = current
        .labels()
        .get(REVISION_LABEL)
        .cloned()
        .unwrap_or_default();

    if dctx.nodes.wait_until_ready().await.is_err() {
        return Err(ControllerError::Invalid("the node cache stopped".into()));
    }
    let nodes = dctx.nodes.state();
    let mut by_node: BTreeMap<String, NodePods> = BTreeMap::new();
    for pod in owned {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().pods.push(pod);
    }

    let template_spec = daemon_pod_spec(&spec.template);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();
    let mut to_create: Vec<String> = Vec::new();
    let mut to_delete: Vec<Pod> = Vec::new();
    let mut desired = 0i32;
    let mut current_scheduled = 0i32;
    let mut misscheduled = 0i32;
    let mut ready = 0i32;
    let mut available = 0i32;
    let mut updated = 0i32;
    // Nodes that should run a daemon and have an old-revision one: rolling update candidates.
    let mut olds: Vec<OldDaemon> = Vec::new();
    let mut unavailable_nodes = 0i32;
    let mut requeue: Option<Duration> = None;
    let node_names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();

    for node in &nodes {
        let node_name = node.name_any();
        let (should_run, should_continue) = eligibility(node, &template_spec);
        let entry = by_node.remove(&node_name).unwrap_or_default();
        // Failed daemons are replaced (the kubelet would not restart them).
        let (failed, mut live): (Vec<Pod>, Vec<Pod>) = entry
            .pods
            .into_iter()
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        for pod in &failed {
            let message = format!(
                "Found failed daemon pod {}/{} on node {node_name}, will try to kill it",
                ns,
                pod.name_any()
            );
            ctx.events
                .publish(
                    COMPONENT,
                    ds.as_ref(),
                    EventType::Warning,
                    "FailedDaemonPod",
                    &message,
                )
                .await;
        }
        to_delete.extend(failed);
        let terminating = live.iter().any(|p| p.metadata.deletion_timestamp.is_some());
        live.retain(|p| p.metadata.deletion_timestamp.is_none());
        if should_run {
            desired += 1;
        }
        if !should_continue {
            if !live.is_empty() {
                misscheduled += 1;
            }
            to_delete.extend(live);
            continue;
        }
        if !should_run {
            // Running where it would not be placed now (e.g. a NoSchedule taint was added):
            // upstream lets it continue, but counts it as misscheduled.
            if !live.is_empty() {
                misscheduled += 1;
            }
            continue;
        }
        if live.is_empty() {
            // A daemon still terminating is waited for (it may hold host ports).
            if !terminating {
                to_create.push(node_name);
            }
            unavailable_nodes += 1;
            continue;
        }
        current_scheduled += 1;
        live.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
        let (mut new, mut old): (Vec<Pod>, Vec<Pod>) = live
            .into_iter()
            .partition(|p| p.labels().get(REVISION_LABEL) == Some(&hash));
        // At most one daemon per revision (two only while surging); the oldest stays.
        to_delete.extend(new.split_off(new.len().min(1)));
        to_delete.extend(old.split_off(old.len().min(1)));
        let (new, old) = (new.pop(), old.pop());
        let mut node_ready = false;
        let mut node_available = false;
        let mut new_available = None;
        for pod in new.iter().chain(old.iter()) {
            let (ok, wait) = is_available(pod, min_ready, now);
            if let Some(wait) = wait {
                requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
            }
            node_ready |= pods::is_ready(pod);
            node_available |= ok;
            if new
                .as_ref()
                .is_some_and(|n| n.metadata.uid == pod.metadata.uid)
            {
                new_available = Some(ok);
            }
        }
        ready += i32::from(node_ready);
        available += i32::from(node_available);
        unavailable_nodes += i32::from(!node_available);
        updated += i32::from(new.is_some());
        if let Some(pod) = old {
            olds.push(OldDaemon {
                node: node_name,
                pod,
                new_available,
            });
        }
    }
    // Daemons on nodes that no longer exist.
    for (node, entry) in by_node {
        if node.is_empty() || !node_names.contains(&node) {
            to_delete.extend(
                entry
                    .pods
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
            );
        }
    }

    // A node that has both: the surge is over once the new daemon is available.
    let (replaced, olds): (Vec<OldDaemon>, Vec<OldDaemon>) = olds
        .into_iter()
        .partition(|o| o.new_available == Some(true));
    to_delete.extend(replaced.into_iter().map(|o| o.pod));
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate" {
        let rolling = strategy.rolling_update.clone().unwrap_or_default();
        let max_surge = rolling
            .max_surge
            .as_ref()
            .map_or(0, |v| scaled(v, desired, true));
        let max_unavailable = rolling
            .max_unavailable
            .as_ref()
            .map_or(1, |v| scaled(v, desired, true));
        if max_surge > 0 {
            // Surge: a new daemon beside the old one, at once where the old one is unavailable
            // anyway, elsewhere as far as maxSurge allows.
            let mut surging =
                i32::try_from(olds.iter().filter(|o| o.new_available.is_some()).count())
                    .unwrap_or(i32::MAX);
            for o in olds.into_iter().filter(|o| o.new_available.is_none()) {
                if !is_available(&o.pod, min_ready, now).0 {
                    to_create.push(o.node);
                } else if surging < max_surge {
                    surging += 1;
                    to_create.push(o.node);
                }
            }
        } else {
            // Validation forbids both being 0; never stall if they are.
            let max_unavailable = max_unavailable.max(1);
            // Old daemons that are not available anyway go first and cost nothing.
            let (unavail, avail): (Vec<OldDaemon>, Vec<OldDaemon>) = olds
                .into_iter()
                .filter(|o| o.new_available.is_none())
                .partition(|o| !is_available(&o.pod, min_ready, now).0);
            to_delete.extend(unavail.into_iter().map(|o| o.pod));
            let mut budget = max_unavailable - unavailable_nodes;
            for o in avail {
                if budget <= 0 {
                    break;
                }
                budget -= 1;
                to_delete.push(o.pod);
            }
        }
    }

    // Deletions first: a surge never has more nodes doubled up than maxSurge, even briefly.
    for pod in &to_delete {
        delete_pod(ctx, &pod_api, ds.as_ref(), pod).await?;
    }
    for node in &to_create {
        let mut pod = pods::from_template(
            &spec.template,
            pods::controller_ref(ds.as_ref()),
            &ns,
            PodName::Generate(&name),
            &[
                (REVISION_LABEL, &hash),
                (
                    "pod-template-generation",
                    &ds.metadata.generation.unwrap_or(1).to_string(),
                ),
            ],
        );
        let mut pod_spec = template_spec.clone();
        pod_spec.node_name = Some(node.clone());
        pod.spec = Some(pod_spec);
        match pod_api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                ctx.events
                    .publish(
                        COMPONENT,
                        ds.as_ref(),
                        EventType::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", created.name_any()),
                    )
                    .await;
            }
            Err(e) => {
                ctx.events
                    .publish(
                        COMPONENT,
                        ds.as_ref(),
                        EventType::Warning,
                        "FailedCreate",
                        &format!("Error creating: {e}"),
                    )
                    .await;
                return Err(e.into());
            }
        }
    }

    let status = DaemonSetStatus {
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        current_number_scheduled: current_scheduled,
        desired_number_scheduled: desired,
        number_available: Some(available),
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_unavailable: Some(desired - available),
        observed_generation: ds.metadata.generation,
        updated_number_scheduled: Some(updated),
    };
    if ds.status.as_ref() != Some(&status) {
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

async fn delete_pod<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    api: &Api<Pod>,
    owner: &K,
    pod: &Pod,
) -> Result<(), ControllerError> {
    let name = pod.name_any();
    ctx.delete_recorded(
        COMPONENT,
        api,
        &name,
        &DeleteParams::default(),
        owner,
        &format!("Deleted pod: {name}"),
    )
    .await
}

/// `intstr.GetScaledValueFromIntOrPercent`.
pub(crate) fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let n = i64::from(total) * p;
            let v = if round_up { (n + 99) / 100 } else { n / 100 };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    }
}

/// Whether the pod has been Ready for `min_ready` seconds; if it is ready but not yet for long
/// enough, how long until it will be.
pub(crate) fn is_available(pod: &Pod, min_ready: i32, now: Timestamp) -> (bool, Option<Duration>) {
    if !pods::is_ready(pod) {
        return (false, None);
    }
    if min_ready <= 0 {
        return (true, None);
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    let Some(since) = since else {
        return (true, None);
    };
    let ready_for = now.as_second() - since.as_second();
    let min_ready = i64::from(min_ready);
    if ready_for >= min_ready {
        (true, None)
    } else {
        let wait = u64::try_from(min_ready - ready_for).unwrap_or(1);
        (false, Some(Duration::from_secs(wait)))
    }
}

/// The template's pod spec with the tolerations upstream gives every daemon pod, so daemons stay
/// on nodes that are not ready, unreachable, under pressure or cordoned.
fn daemon_pod_spec(template: &PodTemplateSpec) -> PodSpec {
    let mut spec = template.spec.clone().unwrap_or_default();
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some(effect.to_owned()),
                ..Toleration::default()
            });
        }
    }
    spec
}

/// (should a new daemon be placed here, may an existing one keep running here).
fn eligibility(node: &Node, spec: &PodSpec) -> (bool, bool) {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.name_any();
    let selected = spec
        .node_selector
        .as_ref()
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| node_selector_matches(sel, &labels, &name));
    if !(selected && affinity) {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    let no_execute = untolerated("NoExecute");
    let no_schedule = untolerated("NoSchedule");
    (!no_execute && !no_schedule, !no_execute)
}

/// Required node affinity: the terms are ORed, a term's requirements ANDed.
fn node_selector_matches(
    sel: &NodeSelector,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    sel.node_selector_terms
        .iter()
        .any(|term| crate::placement::term_matches(term, labels, name))
}

/// The pods `owner` controls among those matching its selector, adopting orphans (no
/// controller, not being deleted) the way kube-controller-manager's ControllerRefManager does.
pub(crate) async fn claim_pods<K: Resource<DynamicType = ()>>(
    api: &Api<Pod>,
    owner: &K,
    matching: Vec<Pod>,
) -> Result<Vec<Pod>, ControllerError> {
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let mut owned = Vec::with_capacity(matching.len());
    for pod in matching {
        match pods::controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => owned.push(pod),
            Some(_) => {}
            None if pod.metadata.deletion_timestamp.is_some() => {}
            None => {
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(pods::controller_ref(owner));
                // The uid makes this a precondition: a pod recreated meanwhile is not adopted.
                let patch = json!({"metadata": {"uid": pod.metadata.uid, "ownerReferences": refs}});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(owned)
}

/// `controller.ComputeHash`: FNV-1a over the template, spelled with the safe alphabet.
pub(crate) fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    safe_encode(&h.to_string())
}

/// `rand.SafeEncodeString`: no vowels, no look-alike characters.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The ControllerRevision `data` kubectl compares and applies on `rollout undo`: a strategic
/// merge patch replacing `spec.template`.
fn revision_data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(obj) = t.as_object_mut() {
        obj.insert("$patch".to_owned(), json!("replace"));
    }
    json!({ "spec": { "template": t } })
}

/// The pod template a revision recorded.
pub(crate) fn revision_template(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// Makes sure a ControllerRevision for `template` exists and is the newest (a rollback re-uses
/// an old one and bumps its number, as upstream does), and trims history beyond `limit` among
/// revisions no live pod uses. Returns (the template's revision, all of the owner's revisions).
pub(crate) async fn sync_revisions<K>(
    ctx: &Ctx,
    owner: &K,
    template: &PodTemplateSpec,
    selector: &LabelSelector,
    limit: i32,
    live_hashes: &HashSet<String>,
) -> Result<(ControllerRevision, Vec<ControllerRevision>), ControllerError>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let owner_name = owner.meta().name.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let mut revisions: Vec<ControllerRevision> = api
        .list(&ListParams::default().labels(&pods::selector_string(selector)))
        .await?
        .items
        .into_iter()
        .filter(|r| pods::controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let hash = template_hash(template);
    let data = revision_data(template);
    let max = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let existing = revisions
        .iter()
        .position(|r| r.data.as_ref().map(|d| &d.0) == Some(&data));
    let current = if let Some(i) = existing {
        let rev = &mut revisions[i];
        if rev.revision < max {
            // A rollback: the old revision becomes the newest and takes the owner's annotations
            // (kubectl's CHANGE-CAUSE), as upstream does.
            let patch = json!({
                "revision": max + 1,
                "metadata": {"annotations": owner.meta().annotations},
            });
            let patched = api
                .patch(
                    &rev.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            *rev = patched;
        }
        rev.clone()
    } else {
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(REVISION_LABEL.to_owned(), hash.clone());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("{owner_name}-{hash}")),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: owner.meta().annotations.clone(),
                owner_references: Some(vec![pods::controller_ref(owner)]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(data)),
            revision: max + 1,
        };
        let created = match api.create(&PostParams::default(), &rev).await {
            Ok(c) => c,
            // Made by an earlier pass whose list we raced; take it.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                api.get(&format!("{owner_name}-{hash}")).await?
            }
            Err(e) => return Err(e.into()),
        };
        revisions.push(created.clone());
        created
    };
    // History: drop the oldest revisions no pod runs, beyond the limit.
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| r.metadata.name != current.metadata.name)
        .filter(|r| {
            r.labels()
                .get(REVISION_LABEL)
                .is_none_or(|h| !live_hashes.contains(h))
        })
        .collect();
    old.sort_by_key(|r| r.revision);
    let excess = old
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    let mut gone = HashSet::new();
    for r in old.into_iter().take(excess) {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        gone.insert(r.name_any());
    }
    revisions.retain(|r| !gone.contains(&r.name_any()));
    Ok((current, revisions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
            "spec": {"taints": taints.iter().map(|(k, e)| json!({"key": k, "effect": e})).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        let template: PodTemplateSpec = serde_json::from_value(json!({ "spec": v })).unwrap();
        daemon_pod_spec(&template)
    }

    #[test]
    fn taints_need_tolerations_but_standard_ones_are_added() {
        let plain = spec(json!({"containers": []}));
        assert_eq!(eligibility(&node(&[], &[]), &plain), (true, true));
        assert_eq!(
            eligibility(&node(&[], &[("dedicated", "NoSchedule")]), &plain),
            (false, true)
        );
        assert_eq!(
            eligibility(&node(&[], &[("dedicated", "NoExecute")]), &plain),
            (false, false)
        );
        assert_eq!(
            eligibility(&node(&[], &[("dedicated", "PreferNoSchedule")]), &plain),
            (true, true)
        );
        // Cordoned and not-ready nodes keep their daemons.
        let cordoned = node(
            &[],
            &[
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ("node.kubernetes.io/not-ready", "NoExecute"),
            ],
        );
        assert_eq!(eligibility(&cordoned, &plain), (true, true));
        let tolerant = spec(json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Exists"}]}));
        assert_eq!(
            eligibility(&node(&[], &[("dedicated", "NoExecute")]), &tolerant),
            (true, true)
        );
    }

    #[test]
    fn node_selector_and_affinity_choose_nodes() {
        let by_selector = spec(json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        assert!(eligibility(&node(&[("disk", "ssd")], &[]), &by_selector).0);
        assert!(!eligibility(&node(&[("disk", "hdd")], &[]), &by_selector).0);
        let by_affinity = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
        ]}}}}));
        assert!(eligibility(&node(&[("zone", "b")], &[]), &by_affinity).0);
        // n1 by name through the second term.
        assert!(eligibility(&node(&[("zone", "c")], &[]), &by_affinity).0);
    }

    #[test]
    fn percentages_scale_and_hashes_are_stable_and_safe() {
        assert_eq!(scaled(&IntOrString::String("25%".into()), 10, true), 3);
        assert_eq!(scaled(&IntOrString::String("25%".into()), 10, false), 2);
        assert_eq!(scaled(&IntOrString::Int(2), 10, true), 2);
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}))
                .unwrap();
        let h = template_hash(&t);
        assert_eq!(h, template_hash(&t.clone()));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let rev = ControllerRevision {
            data: Some(RawExtension(revision_data(&t))),
            ..ControllerRevision::default()
        };
        assert_eq!(revision_template(&rev), Some(t));
    }
}
