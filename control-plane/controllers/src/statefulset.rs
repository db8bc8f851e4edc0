//! The statefulset controller: stable names NAME-0..N-1, ordered (OrderedReady) or Parallel
//! creation and deletion, rolling updates by ordinal from the highest down to the partition, and
//! ControllerRevision history.
//!
//! `spec.volumeClaimTemplates` needs persistent volumes, which skiff does not provide yet: such a
//! StatefulSet gets no pods, a Warning event and a `ReplicaFailure` condition saying so.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetCondition, StatefulSetStatus},
        core::v1::{Pod, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    ControllerError, Ctx,
    daemonset::{REVISION_LABEL, claim_pods, is_available, revision_template, sync_revisions},
    events::EventType,
    pods::{self, PodName},
};

const COMPONENT: &str = "statefulset-controller";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The condition reason of a StatefulSet refused for its volumeClaimTemplates.
const PVC_UNSUPPORTED: &str = "VolumeClaimTemplatesNotSupported";

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client), watcher::Config::default())
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        if let Err(e) = res {
            debug!(error = %e, "statefulset reconcile");
        }
    })
    .await;
}

fn error_policy(_s: Arc<StatefulSet>, err: &ControllerError, _ctx: Arc<Ctx>) -> Action {
    warn!(error = %err, "statefulset reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// The ordinal of a pod named `{set}-{ordinal}`.
fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && pods::is_ready(pod)
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);

    if spec
        .volume_claim_templates
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return refuse_claims(&ctx, &sets, &set).await;
    }
    if pods::selector_is_empty(&spec.selector) {
        return Err(ControllerError::Invalid(format!(
            "statefulset {ns}/{name} has an empty selector"
        )));
    }

    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let matching = pod_api
        .list(&ListParams::default().labels(&pods::selector_string(&spec.selector)))
        .await?
        .items;
    let owned = claim_pods(&pod_api, set.as_ref(), matching).await?;
    let live_hashes: HashSet<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(REVISION_LABEL).cloned())
        .collect();
    let (update_rev, revisions) = sync_revisions(
        &ctx,
        set.as_ref(),
        &spec.template,
        &spec.selector,
        spec.revision_history_limit.unwrap_or(10),
        &live_hashes,
    )
    .await?;
    let update_name = update_rev.name_any();
    let update_hash = update_rev
        .labels()
        .get(REVISION_LABEL)
        .cloned()
        .unwrap_or_default();
    let status = set.status.clone().unwrap_or_default();
    let current_rev = status
        .current_revision
        .as_ref()
        .and_then(|n| {
            revisions
                .iter()
                .find(|r| r.metadata.name.as_ref() == Some(n))
        })
        .unwrap_or(&update_rev)
        .clone();
    let current_name = current_rev.name_any();
    let current_hash = current_rev
        .labels()
        .get(REVISION_LABEL)
        .cloned()
        .unwrap_or_default();
    let current_template = revision_template(&current_rev).unwrap_or(spec.template.clone());

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0)
        .max(0);

    // Slots 0..replicas and the condemned ones beyond; pods not named like ours are dropped.
    let mut slots: Vec<Option<Pod>> = vec![None; usize::try_from(replicas).unwrap_or(0)];
    let mut condemned: Vec<(i32, Pod)> = Vec::new();
    for pod in owned {
        match ordinal_of(&name, &pod.name_any()) {
            Some(o) if o < replicas => slots[usize::try_from(o).unwrap_or(0)] = Some(pod),
            Some(o) => condemned.push((o, pod)),
            None => {}
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();
    let mut requeue: Option<Duration> = None;
    let mut unhealthy = false;
    for (ordinal, slot) in slots.iter_mut().enumerate() {
        let ordinal = i32::try_from(ordinal).unwrap_or(i32::MAX);
        let failed = slot
            .as_ref()
            .is_some_and(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        if failed && let Some(pod) = slot.take() {
            // Upstream replaces failed pods: delete now, create once it is gone.
            delete_pod(&ctx, &pod_api, &set, &pod).await?;
            unhealthy = true;
            if !parallel {
                break;
            }
            continue;
        }
        match slot {
            None => {
                let (template, hash) = if rolling && ordinal < partition {
                    (&current_template, &current_hash)
                } else {
                    (&spec.template, &update_hash)
                };
                let pod = new_pod(&set, template, &ns, &name, ordinal, hash);
                create_pod(&ctx, &pod_api, &set, &pod).await?;
                unhealthy = true;
                if !parallel {
                    break;
                }
            }
            Some(pod) => {
                if pod.metadata.deletion_timestamp.is_some() || !running_and_ready(pod) {
                    unhealthy = true;
                    if !parallel {
                        break;
                    }
                }
            }
        }
    }

    // Scale down: highest ordinal first; OrderedReady waits for the rest to be healthy.
    if !unhealthy || parallel {
        for (_, pod) in &condemned {
            if pod.metadata.deletion_timestamp.is_some() {
                if parallel {
                    continue;
                }
                break;
            }
            delete_pod(&ctx, &pod_api, &set, pod).await?;
            if !parallel {
                break;
            }
        }
    }

    // Rolling update: the highest ordinal not at the update revision, one at a time, once all
    // are Running and Ready.
    if rolling && !unhealthy && condemned.is_empty() {
        for ordinal in (partition..replicas).rev() {
            let Some(pod) = &slots[usize::try_from(ordinal).unwrap_or(0)] else {
                break;
            };
            if pod.labels().get(REVISION_LABEL) != Some(&update_hash) {
                delete_pod(&ctx, &pod_api, &set, pod).await?;
                break;
            }
        }
    }

    // Status.
    let all: Vec<&Pod> = slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(all.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let ready = count(&|p| pods::is_ready(p));
    let mut available = 0;
    for pod in &all {
        let (ok, wait) = is_available(pod, min_ready, now);
        if let Some(w) = wait {
            requeue = Some(requeue.map_or(w, |r: Duration| r.min(w)));
        }
        if ok {
            available += 1;
        }
    }
    let current_replicas = count(&|p| p.labels().get(REVISION_LABEL) == Some(&current_hash));
    let updated = count(&|p| p.labels().get(REVISION_LABEL) == Some(&update_hash));
    let existing = i32::try_from(all.len()).unwrap_or(i32::MAX);
    // The update is complete once every replica is at the update revision and ready.
    let (current_name, current_replicas) = if updated == replicas && ready == replicas {
        (update_name.clone(), updated)
    } else {
        (current_name, current_replicas)
    };
    let new_status = StatefulSetStatus {
        available_replicas: Some(available),
        collision_count: status.collision_count,
        conditions: status
            .conditions
            .clone()
            .map(|cs| {
                cs.into_iter()
                    .filter(|c| c.reason.as_deref() != Some(PVC_UNSUPPORTED))
                    .collect::<Vec<_>>()
            })
            .filter(|cs| !cs.is_empty()),
        current_replicas: Some(current_replicas),
        current_revision: Some(current_name),
        observed_generation: set.metadata.generation,
        ready_replicas: Some(ready),
        replicas: existing,
        update_revision: Some(update_name),
        updated_replicas: Some(updated),
    };
    if set.status.as_ref() != Some(&new_status) {
        let mut body = json!({ "status": new_status });
        if new_status.conditions.is_none() {
            body["status"]["conditions"] = serde_json::Value::Null;
        }
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    ns: &str,
    name: &str,
    ordinal: i32,
    hash: &str,
) -> Pod {
    let pod_name = format!("{name}-{ordinal}");
    let index = ordinal.to_string();
    let mut pod = pods::from_template(
        template,
        pods::controller_ref(set),
        ns,
        PodName::Fixed(pod_name.clone()),
        &[
            (REVISION_LABEL, hash),
            (POD_NAME_LABEL, &pod_name),
            (POD_INDEX_LABEL, &index),
        ],
    );
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(pod_name);
    if let Some(service) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    pod
}

async fn create_pod(
    ctx: &Ctx,
    api: &Api<Pod>,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<(), ControllerError> {
    let pod_name = pod.name_any();
    match api.create(&PostParams::default(), pod).await {
        Ok(_) => {
            let message = format!(
                "create Pod {pod_name} in StatefulSet {} successful",
                set.name_any()
            );
            ctx.events
                .publish(
                    COMPONENT,
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &message,
                )
                .await;
            Ok(())
        }
        // A pod of that name still terminating (or made by a pass we raced): look again later.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => {
            let message = format!(
                "create Pod {pod_name} in StatefulSet {} failed error: {e}",
                set.name_any()
            );
            ctx.events
                .publish(COMPONENT, set, EventType::Warning, "FailedCreate", &message)
                .await;
            Err(e.into())
        }
    }
}

async fn delete_pod(
    ctx: &Ctx,
    api: &Api<Pod>,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<(), ControllerError> {
    let name = pod.name_any();
    let message = format!(
        "delete Pod {name} in StatefulSet {} successful",
        set.name_any()
    );
    ctx.delete_recorded(
        COMPONENT,
        api,
        &name,
        &DeleteParams::default(),
        set,
        &message,
    )
    .await
}

/// A StatefulSet with volumeClaimTemplates: no pods, and it says why, once per generation.
async fn refuse_claims(
    ctx: &Ctx,
    sets: &Api<StatefulSet>,
    set: &StatefulSet,
) -> Result<Action, ControllerError> {
    let message = "spec.volumeClaimTemplates is not supported: skiff does not provide \
                   persistent volume claims yet, so no pods are created for this StatefulSet";
    let status = set.status.clone().unwrap_or_default();
    let already = status.observed_generation == set.metadata.generation
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.reason.as_deref() == Some(PVC_UNSUPPORTED));
    if already {
        return Ok(Action::await_change());
    }
    ctx.events
        .publish(COMPONENT, set, EventType::Warning, "FailedCreate", message)
        .await;
    let condition = StatefulSetCondition {
        type_: "ReplicaFailure".to_owned(),
        status: "True".to_owned(),
        reason: Some(PVC_UNSUPPORTED.to_owned()),
        message: Some(message.to_owned()),
        last_transition_time: Some(Time(Timestamp::now())),
    };
    let body = json!({"status": {
        "observedGeneration": set.metadata.generation,
        "replicas": status.replicas,
        "conditions": [condition],
    }});
    sets.patch_status(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "other-1"), None);
    }

    #[test]
    fn pods_get_stable_identity() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}))
        .unwrap();
        let template = set.spec.clone().unwrap().template;
        let pod = new_pod(&set, &template, "ns", "web", 2, "h");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], "h");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    }
}
