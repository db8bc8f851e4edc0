//! The HorizontalPodAutoscaler controller (autoscaling/v2, CPU utilization), as upstream's
//! replica calculator: utilization is the pods' CPU usage over their CPU requests, the desired
//! count `ceil(ready pods × utilization / target)` outside a 10% tolerance, scale-up at most
//! doubling (or +4) per step, scale-down only to the highest recommendation of the last
//! stabilization window (300 s by default), all within min/maxReplicas.
//!
//! Usage comes from the resource metrics API (metrics.k8s.io) through a [`MetricsSource`];
//! tests give the controller a fake one.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{StreamExt as _, future::BoxFuture};
use k8s_openapi::{
    api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::warn;

use crate::{ControllerError, Ctx, events::EventType, pods, quantity::cpu_millis};

const COMPONENT: &str = "horizontal-pod-autoscaler";
/// Upstream's --horizontal-pod-autoscaler-tolerance.
const TOLERANCE: f64 = 0.1;
const DEFAULT_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// CPU usage in millicores per pod name, for the pods of `namespace` matching `selector`.
pub trait MetricsSource: Send + Sync {
    fn pod_cpu<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, String>>;
}

/// Where the controller reads usage from; the resource metrics API by default.
#[derive(Clone)]
pub struct Metrics(pub Arc<dyn MetricsSource>);

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

/// The resource metrics API (metrics.k8s.io/v1beta1 PodMetrics), served for kubectl top.
pub struct MetricsApi(pub Client);

impl MetricsSource for MetricsApi {
    fn pod_cpu<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, String>> {
        Box::pin(async move {
            let resource = ApiResource {
                group: "metrics.k8s.io".into(),
                version: "v1beta1".into(),
                api_version: "metrics.k8s.io/v1beta1".into(),
                kind: "PodMetrics".into(),
                plural: "pods".into(),
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.0.clone(), namespace, &resource);
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| format!("unable to get metrics for resource cpu: {e}"))?;
            Ok(list
                .items
                .iter()
                .map(|m| {
                    let cpu = m.data["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| cpu_millis(c["usage"]["cpu"].as_str().unwrap_or("0")))
                        .sum();
                    (m.name_any(), cpu)
                })
                .collect())
        })
    }
}

/// Recent recommendations per HPA (namespace/name), for the scale-down stabilization window.
type History = Mutex<HashMap<String, Vec<(Timestamp, i32)>>>;

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let history: Arc<History> = Arc::default();
    let api = Api::<HorizontalPodAutoscaler>::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .run(
            move |hpa, ctx| reconcile(hpa, ctx, Arc::clone(&history)),
            error_policy,
            ctx,
        )
        .for_each(|_| futures_util::future::ready(()))
        .await;
}

fn error_policy(hpa: Arc<HorizontalPodAutoscaler>, err: &ControllerError, ctx: Arc<Ctx>) -> Action {
    warn!(hpa = %hpa.name_any(), error = %err, "autoscaling failed; retrying");
    Action::requeue(ctx.options.hpa_sync_period)
}

/// The workload kinds whose scale subresource the autoscaler drives.
fn scale_target(kind: &str, api_version: &str) -> Option<ApiResource> {
    let plural = match (api_version, kind) {
        ("apps/v1", "Deployment") => "deployments",
        ("apps/v1", "ReplicaSet") => "replicasets",
        ("apps/v1", "StatefulSet") => "statefulsets",
        _ => return None,
    };
    Some(ApiResource {
        group: "apps".into(),
        version: "v1".into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    })
}

/// The replica count for `utilization` (percent) against `target` with `ready` pods measured,
/// or `current` inside the tolerance (upstream's GetResourceReplicas).
pub(crate) fn desired_replicas(current: i32, ready: usize, utilization: i64, target: i32) -> i32 {
    let ratio = utilization as f64 / f64::from(target.max(1));
    if (ratio - 1.0).abs() <= TOLERANCE || ready == 0 {
        return current;
    }
    #[expect(clippy::cast_possible_truncation, reason = "replica counts are small")]
    let desired = (ratio * ready as f64).ceil() as i32;
    desired
}

/// Upstream's default behaviour: scale up by at most max(+4, ×2) per sync; scale down only to
/// the highest recommendation within the stabilization window.
fn stabilize(current: i32, desired: i32, recent: &[(Timestamp, i32)]) -> i32 {
    if desired > current {
        desired.min((current * 2).max(current + 4))
    } else {
        recent
            .iter()
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(desired)
            .max(desired)
            .min(current)
    }
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Ctx>,
    history: Arc<History>,
) -> Result<Action, ControllerError> {
    let ns = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = hpa.spec.clone().unwrap_or_default();
    let target_ref = &spec.scale_target_ref;
    let mut conditions = Vec::new();
    let now = Timestamp::now();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": Time(now)})
    };
    let Some(resource) = scale_target(
        &target_ref.kind,
        target_ref.api_version.as_deref().unwrap_or("apps/v1"),
    ) else {
        let message = format!(
            "the HPA controller was unable to get the target's current scale: {} is not scalable",
            target_ref.kind
        );
        conditions.push(cond("AbleToScale", "False", "FailedGetScale", &message));
        write_status(&hpas, &hpa, json!({"conditions": conditions})).await?;
        return Ok(Action::requeue(ctx.options.hpa_sync_period));
    };
    let targets: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &resource);
    let scale = match targets.get_scale(&target_ref.name).await {
        Ok(s) => s,
        Err(e) => {
            let message =
                format!("the HPA controller was unable to get the target's current scale: {e}");
            ctx.events
                .publish(
                    COMPONENT,
                    hpa.as_ref(),
                    EventType::Warning,
                    "FailedGetScale",
                    &message,
                )
                .await;
            conditions.push(cond("AbleToScale", "False", "FailedGetScale", &message));
            write_status(&hpas, &hpa, json!({"conditions": conditions})).await?;
            return Ok(Action::requeue(ctx.options.hpa_sync_period));
        }
    };
    let current = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale.status.and_then(|s| s.selector).unwrap_or_default();
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let target = spec
        .metrics
        .iter()
        .flatten()
        .filter(|m| m.type_ == "Resource")
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| r.target.average_utilization);
    if current == 0 {
        // Scaled to zero by hand: autoscaling is off until someone scales it up again.
        conditions.push(cond(
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        ));
        write_status(
            &hpas,
            &hpa,
            json!({"currentReplicas": 0, "desiredReplicas": 0, "conditions": conditions}),
        )
        .await?;
        return Ok(Action::requeue(ctx.options.hpa_sync_period));
    }
    let measured = match target {
        None => Err(
            "only a cpu Resource metric with a target averageUtilization is supported".to_owned(),
        ),
        Some(_) => measure(&ctx, &ns, &selector).await,
    };
    let (utilization, ready, usage_avg) = match measured {
        Ok(m) => m,
        Err(message) => {
            ctx.events
                .publish(
                    COMPONENT,
                    hpa.as_ref(),
                    EventType::Warning,
                    "FailedGetResourceMetric",
                    &message,
                )
                .await;
            conditions.push(cond(
                "AbleToScale",
                "True",
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale",
            ));
            conditions.push(cond(
                "ScalingActive",
                "False",
                "FailedGetResourceMetric",
                &format!("the HPA was unable to compute the replica count: {message}"),
            ));
            write_status(&hpas, &hpa, json!({"currentReplicas": current, "desiredReplicas": current, "conditions": conditions})).await?;
            return Ok(Action::requeue(ctx.options.hpa_sync_period));
        }
    };
    let target = target.unwrap_or(80);
    let recommended = desired_replicas(current, ready, utilization, target);
    let key = format!("{ns}/{name}");
    let window = spec
        .behavior
        .as_ref()
        .and_then(|b| b.scale_down.as_ref())
        .and_then(|d| d.stabilization_window_seconds)
        .map_or(DEFAULT_DOWN_WINDOW, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
    let desired = {
        let mut history = history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent = history.entry(key).or_default();
        recent.retain(|(at, _)| {
            Duration::try_from(now.duration_since(*at)).unwrap_or_default() < window
        });
        let desired = stabilize(current, recommended, recent);
        recent.push((now, recommended));
        desired
    };
    let (bounded, limited) = if desired > max {
        (
            max,
            Some((
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )),
        )
    } else if desired < min {
        (
            min,
            Some((
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )),
        )
    } else {
        (desired, None)
    };
    let mut last_scale = hpa
        .status
        .as_ref()
        .and_then(|s| s.last_scale_time.clone())
        .map(|t| json!(t));
    if bounded != current {
        targets
            .patch_scale(
                &target_ref.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": bounded}})),
            )
            .await?;
        let direction = if bounded > current { "above" } else { "below" };
        ctx.events
            .publish(COMPONENT, hpa.as_ref(), EventType::Normal, "SuccessfulRescale",
                &format!("New size: {bounded}; reason: cpu resource utilization (percentage of request) {direction} target"))
            .await;
        last_scale = Some(json!(Time(now)));
        conditions.push(cond(
            "AbleToScale",
            "True",
            "SucceededRescale",
            &format!("the HPA controller was able to update the target scale to {bounded}"),
        ));
    } else {
        conditions.push(cond(
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
        ));
    }
    conditions.push(cond("ScalingActive", "True", "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"));
    conditions.push(match limited {
        Some((reason, message)) => cond("ScalingLimited", "True", reason, message),
        None => cond(
            "ScalingLimited",
            "False",
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        ),
    });
    let status = json!({
        "observedGeneration": hpa.metadata.generation,
        "currentReplicas": current,
        "desiredReplicas": bounded,
        "lastScaleTime": last_scale,
        "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": utilization, "averageValue": format!("{usage_avg}m")}}}],
        "conditions": conditions,
    });
    write_status(&hpas, &hpa, status).await?;
    Ok(Action::requeue(ctx.options.hpa_sync_period))
}

/// (utilization percent, pods measured, average usage in millicores) of the ready pods matching
/// `selector` that have metrics and CPU requests.
async fn measure(ctx: &Ctx, ns: &str, selector: &str) -> Result<(i64, usize, i64), String> {
    let source = ctx
        .options
        .metrics
        .clone()
        .unwrap_or_else(|| Metrics(Arc::new(MetricsApi(ctx.client.clone()))));
    let usage = source.0.pod_cpu(ns, selector).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("listing the target's pods: {e}"))?;
    let (mut used, mut requested, mut counted) = (0i64, 0i64, 0usize);
    for pod in list
        .items
        .iter()
        .filter(|p| pods::is_active(p) && pods::is_ready(p))
    {
        let Some(cpu) = usage.get(&pod.name_any()) else {
            continue;
        };
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut request = 0;
        for c in &containers {
            let Some(q) = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu"))
            else {
                return Err(format!(
                    "missing request for cpu in container {} of Pod {}",
                    c.name,
                    pod.name_any()
                ));
            };
            request += cpu_millis(&q.0);
        }
        used += cpu;
        requested += request;
        counted += 1;
    }
    if counted == 0 || requested == 0 {
        return Err(format!(
            "did not receive metrics for targeted pods (pods might be unready) in {ns} matching {selector:?}"
        ));
    }
    let count = i64::try_from(counted).unwrap_or(i64::MAX);
    Ok((used * 100 / requested, counted, used / count))
}

/// Writes `status` unless it says what the stored one says: every status write is a watch
/// event that makes the controller look again, so an unchanged status must not be rewritten.
/// A condition keeps its lastTransitionTime while its status stays the same.
async fn write_status(
    api: &Api<HorizontalPodAutoscaler>,
    hpa: &HorizontalPodAutoscaler,
    mut status: serde_json::Value,
) -> Result<(), ControllerError> {
    let old = serde_json::to_value(hpa.status.clone().unwrap_or_default()).unwrap_or_default();
    let old_conditions = old["conditions"].as_array().cloned().unwrap_or_default();
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for c in conditions.iter_mut() {
            if let Some(prev) = old_conditions
                .iter()
                .find(|p| p["type"] == c["type"] && p["status"] == c["status"])
            {
                c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
            }
        }
    }
    let unchanged = status.as_object().is_some_and(|m| {
        m.iter().all(|(k, v)| {
            old.get(k).unwrap_or(&serde_json::Value::Null) == v
                || v.is_null() && old.get(k).is_none()
        })
    });
    if unchanged {
        return Ok(());
    }
    api.patch_status(
        &hpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_follow_utilization_outside_the_tolerance() {
        assert_eq!(desired_replicas(2, 2, 100, 50), 4);
        assert_eq!(desired_replicas(4, 4, 54, 50), 4, "within 10%");
        assert_eq!(desired_replicas(4, 4, 10, 50), 1);
        assert_eq!(desired_replicas(3, 3, 70, 50), 5, "rounded up");
    }

    #[test]
    fn scale_up_is_rate_limited_and_scale_down_stabilized() {
        let now = Timestamp::now();
        assert_eq!(
            stabilize(2, 20, &[]),
            6,
            "+4 beats doubling for small counts"
        );
        assert_eq!(stabilize(10, 50, &[]), 20, "doubling");
        assert_eq!(
            stabilize(10, 3, &[(now, 8), (now, 5)]),
            8,
            "highest recent recommendation"
        );
        assert_eq!(stabilize(10, 3, &[]), 3);
    }
}
