//! The job controller: runs pods to `completions` successes with `parallelism` at a time
//! (NonIndexed or Indexed), replaces failed pods with exponential backoff until `backoffLimit`,
//! enforces `activeDeadlineSeconds`, honours `suspend`, and deletes finished Jobs after
//! `ttlSecondsAfterFinished` (the TTL-after-finished controller's part).
//!
//! Successes and failures are counted from the Job's pods that still exist (upstream tracks them
//! with a finalizer); the counts in status never go down, so a deleted finished pod is not
//! forgotten, but one deleted before the controller saw it finish is not counted.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobStatus},
        core::v1::{EnvVar, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt as _,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tracing::{debug, warn};

use crate::{
    ControllerError, Ctx,
    daemonset::claim_pods,
    events::EventType,
    pods::{self, PodName},
};

const COMPONENT: &str = "job-controller";
pub(crate) const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// The first retry waits this long, doubling per failure up to [`MAX_BACKOFF`] (upstream values).
const BASE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(360);

pub(crate) async fn run(ctx: Arc<Ctx>) {
    let client = ctx.client.clone();
    Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "job reconcile");
            }
        })
        .await;
}

fn error_policy(_job: Arc<Job>, err: &ControllerError, _ctx: Arc<Ctx>) -> Action {
    warn!(error = %err, "job reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn condition_true(status: &JobStatus, type_: &str) -> Option<JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

/// When the pod finished (its last container's finishedAt), for backoff.
fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The backoff before the next pod after `failures` failures.
fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(16);
    BASE_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF)
}

/// Indexes as the API spells `completedIndexes`: "0-2,5".
fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(INDEX_KEY)?.parse().ok()
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets (or replaces) a condition, keeping its transition time when its status did not change.
fn set_condition(conditions: &mut Vec<JobCondition>, new: JobCondition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        let keep = old.status == new.status;
        let since = old.last_transition_time.clone();
        *old = new;
        if keep {
            old.last_transition_time = since;
        }
    } else {
        conditions.push(new);
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one pass over the job's state, in upstream's order"
)]
async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let old_status = job.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    // Finished: only the TTL remains.
    let finished =
        condition_true(&old_status, "Complete").or_else(|| condition_true(&old_status, "Failed"));
    if let Some(done) = finished {
        let Some(ttl) = spec.ttl_seconds_after_finished else {
            return Ok(Action::await_change());
        };
        let since = old_status
            .completion_time
            .as_ref()
            .or(done.last_transition_time.as_ref())
            .map_or(now, |t| t.0);
        let due = since.as_second() + i64::from(ttl);
        if now.as_second() >= due {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match jobs.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        }
        let wait = u64::try_from(due - now.as_second()).unwrap_or(1);
        return Ok(Action::requeue(Duration::from_secs(wait)));
    }

    // Our pods: controlled by this Job (and matching its selector, if it has one).
    let labels = spec.selector.as_ref().map_or_else(
        || format!("{CONTROLLER_UID_LABEL}={uid}"),
        pods::selector_string,
    );
    let matching = pod_api
        .list(&ListParams::default().labels(&labels))
        .await?
        .items;
    let owned = claim_pods(&pod_api, job.as_ref(), matching).await?;
    let active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let succeeded_pods: Vec<&Pod> = owned
        .iter()
        .filter(|p| phase(p) == Some("Succeeded"))
        .collect();
    let failed_pods: Vec<&Pod> = owned
        .iter()
        .filter(|p| phase(p) == Some("Failed"))
        .collect();
    let completions = spec.completions;
    let succeeded_indexes: BTreeSet<i32> = if indexed {
        succeeded_pods
            .iter()
            .filter_map(|p| index_of(p))
            .filter(|i| completions.is_none_or(|c| *i < c))
            .collect()
    } else {
        BTreeSet::new()
    };
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let succeeded = if indexed {
        count(succeeded_indexes.len())
    } else {
        count(succeeded_pods.len())
    }
    .max(old_status.succeeded.unwrap_or(0));
    // Pods restarted in place (restartPolicy OnFailure) count as failures too, as upstream.
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let failed = count(failed_pods.len()).max(old_status.failed.unwrap_or(0));
    let ready = count(active.iter().filter(|p| pods::is_ready(p)).count());

    let mut status = JobStatus {
        active: Some(count(active.len())),
        ready: Some(ready),
        succeeded: Some(succeeded),
        failed: Some(failed),
        completed_indexes: indexed.then(|| format_indexes(&succeeded_indexes)),
        ..old_status.clone()
    };
    let mut conditions = old_status.conditions.clone().unwrap_or_default();
    let mut requeue: Option<Duration> = None;
    let mut event: Option<(EventType, &str, String)> = None;

    let suspended = spec.suspend == Some(true);
    let was_suspended = condition_true(&old_status, "Suspended").is_some();
    if suspended {
        for pod in &active {
            delete_pod(&ctx, &pod_api, &job, pod).await?;
        }
        status.active = Some(0);
        status.ready = Some(0);
        if !was_suspended {
            set_condition(
                &mut conditions,
                condition("Suspended", "JobSuspended", "Job suspended", now),
            );
            event = Some((EventType::Normal, "Suspended", "Job suspended".to_owned()));
        }
        status.start_time = None;
    } else {
        if was_suspended {
            let mut resumed = condition("Suspended", "JobResumed", "Job resumed", now);
            resumed.status = "False".to_owned();
            set_condition(&mut conditions, resumed);
            event = Some((EventType::Normal, "Resumed", "Job resumed".to_owned()));
            // Upstream restarts the deadline clock on resume.
            status.start_time = Some(Time(now));
        }
        let start = status.start_time.get_or_insert(Time(now)).0;

        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let past_deadline = spec.active_deadline_seconds.map(|s| start.as_second() + s);
        let complete = if indexed {
            completions.is_some_and(|c| count(succeeded_indexes.len()) >= c)
        } else {
            match completions {
                Some(c) => succeeded >= c,
                // Work-queue mode: done once one pod succeeded and none is left running.
                None => succeeded > 0 && active.is_empty(),
            }
        };
        let failure = if failed + restarts > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if past_deadline.is_some_and(|d| now.as_second() >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };

        if let Some((reason, message)) = failure {
            for pod in &active {
                delete_pod(&ctx, &pod_api, &job, pod).await?;
            }
            status.active = Some(0);
            status.ready = Some(0);
            set_condition(
                &mut conditions,
                condition("FailureTarget", reason, message, now),
            );
            set_condition(&mut conditions, condition("Failed", reason, message, now));
            event = Some((EventType::Warning, reason, message.to_owned()));
        } else if complete {
            // Work-queue or over-run pods still running are not needed any more.
            for pod in &active {
                delete_pod(&ctx, &pod_api, &job, pod).await?;
            }
            status.active = Some(0);
            status.ready = Some(0);
            let message = "Reached expected number of succeeded pods";
            set_condition(
                &mut conditions,
                condition("SuccessCriteriaMet", "CompletionsReached", message, now),
            );
            set_condition(
                &mut conditions,
                condition("Complete", "CompletionsReached", message, now),
            );
            status.completion_time = Some(Time(now));
            event = Some((EventType::Normal, "Completed", "Job completed".to_owned()));
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                requeue = Some(Duration::from_secs(u64::try_from(ttl).unwrap_or(0)));
            }
        } else {
            if let Some(d) = past_deadline {
                let left = u64::try_from(d - now.as_second()).unwrap_or(0).max(1);
                requeue = Some(Duration::from_secs(left));
            }
            let parallelism = spec.parallelism.unwrap_or(1).max(0);
            // Backoff after failures before new pods, counted from the latest failure.
            let last_failure = failed_pods.iter().filter_map(|p| finished_at(p)).max();
            let ready_at = last_failure.map(|t| {
                t.as_millisecond()
                    + i64::try_from(backoff(failed + restarts).as_millis()).unwrap_or(i64::MAX)
            });
            let waiting = ready_at.is_some_and(|at| at > now.as_millisecond());
            if let Some(at) = ready_at.filter(|_| waiting) {
                let wait = Duration::from_millis(
                    u64::try_from(at - now.as_millisecond()).unwrap_or(0) + 10,
                );
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
            }
            if indexed {
                let c = completions.unwrap_or(0);
                let running: HashSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                let mut free = parallelism - count(active.len());
                if !waiting {
                    for index in 0..c {
                        if free <= 0 {
                            break;
                        }
                        if succeeded_indexes.contains(&index) || running.contains(&index) {
                            continue;
                        }
                        create_pod(&ctx, &pod_api, &job, Some(index)).await?;
                        free -= 1;
                    }
                }
            } else {
                let want = match completions {
                    Some(c) => parallelism.min(c - succeeded).max(0),
                    None if succeeded > 0 => count(active.len()),
                    None => parallelism,
                };
                let have = count(active.len());
                if have < want && !waiting {
                    for _ in have..want {
                        create_pod(&ctx, &pod_api, &job, None).await?;
                    }
                } else if have > want {
                    // Parallelism lowered: the not-ready and newest go first.
                    let mut extra: Vec<&&Pod> = active.iter().collect();
                    extra.sort_by_key(|p| {
                        (
                            pods::is_ready(p),
                            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                        )
                    });
                    for pod in extra
                        .into_iter()
                        .take(usize::try_from(have - want).unwrap_or(0))
                    {
                        delete_pod(&ctx, &pod_api, &job, pod).await?;
                    }
                }
            }
        }
    }

    status.conditions = (!conditions.is_empty()).then_some(conditions);
    if job.status.as_ref() != Some(&status) {
        let mut body = json!({ "status": status });
        if status.start_time.is_none() {
            body["status"]["startTime"] = serde_json::Value::Null;
        }
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    if let Some((kind, reason, message)) = event {
        ctx.events
            .publish(COMPONENT, job.as_ref(), kind, reason, &message)
            .await;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

async fn create_pod(
    ctx: &Ctx,
    api: &Api<Pod>,
    job: &Job,
    index: Option<i32>,
) -> Result<(), ControllerError> {
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let index_s = index.map(|i| i.to_string());
    let prefix = index.map_or_else(|| name.clone(), |i| format!("{name}-{i}"));
    let mut labels = vec![
        (CONTROLLER_UID_LABEL, uid.as_str()),
        (JOB_NAME_LABEL, name.as_str()),
        ("controller-uid", uid.as_str()),
        ("job-name", name.as_str()),
    ];
    if let Some(i) = &index_s {
        labels.push((INDEX_KEY, i));
    }
    let mut pod = pods::from_template(
        &template,
        pods::controller_ref(job),
        &job.namespace().unwrap_or_default(),
        PodName::Generate(&prefix),
        &labels,
    );
    if let Some(i) = index_s {
        pod.annotations_mut()
            .insert(INDEX_KEY.to_owned(), i.clone());
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.hostname = Some(format!("{name}-{i}"));
        for c in &mut spec.containers {
            c.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: "JOB_COMPLETION_INDEX".to_owned(),
                value: Some(i.clone()),
                value_from: None,
            });
        }
    }
    match api.create(&PostParams::default(), &pod).await {
        Ok(created) => {
            ctx.events
                .publish(
                    COMPONENT,
                    job,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", created.name_any()),
                )
                .await;
            Ok(())
        }
        Err(e) => {
            ctx.events
                .publish(
                    COMPONENT,
                    job,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {e}"),
                )
                .await;
            Err(e.into())
        }
    }
}

async fn delete_pod(
    ctx: &Ctx,
    api: &Api<Pod>,
    job: &Job,
    pod: &Pod,
) -> Result<(), ControllerError> {
    let name = pod.name_any();
    ctx.delete_recorded(
        COMPONENT,
        api,
        &name,
        &DeleteParams::default(),
        job,
        &format!("Deleted pod: {name}"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(1000), MAX_BACKOFF);
    }

    #[test]
    fn completed_indexes_are_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 5, 7, 8].into();
        assert_eq!(format_indexes(&set), "0-2,5,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut cs = vec![condition("Suspended", "JobSuspended", "m", t0)];
        set_condition(&mut cs, condition("Suspended", "JobSuspended", "m", t1));
        assert_eq!(cs[0].last_transition_time, Some(Time(t0)));
        let mut resumed = condition("Suspended", "JobResumed", "m", t1);
        resumed.status = "False".into();
        set_condition(&mut cs, resumed);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Some(Time(t1)));
    }
}
