//! CronJobs against skiff's API server: a CronJob whose last run is in the past gets the run it
//! missed at once (the latest scheduled minute, named like upstream), without waiting for the
//! clock; schedule parsing has unit tests beside the parser.

use std::time::Duration;

use crate::common::{Cluster, eventually};
use k8s_openapi::{
    api::batch::v1::{CronJob, Job},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_due_schedule_creates_a_job_and_tracks_it() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "* * * * *",
            "suspend": true,
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {"template": {
                "metadata": {"annotations": {"fake-kubelet/exit-code": "0"}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "main", "image": "busybox"}]}}}}}}))
    .unwrap();
    cronjobs.create(&PostParams::default(), &cj).await.unwrap();
    // As if the last run were five minutes ago: the latest missed minute is due now.
    let past = Timestamp::now() - SignedDuration::from_mins(5);
    cronjobs
        .patch_status(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"lastScheduleTime": past.to_string()}})),
        )
        .await
        .unwrap();
    let before = Timestamp::now().as_second() / 60;
    cronjobs
        .patch(
            "tick",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let job = eventually("a job for the missed minute", WAIT, || async {
        jobs.list(&ListParams::default().labels("app=tick"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let after = Timestamp::now().as_second() / 60;
    let minute: i64 = job
        .name_any()
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .expect("job named tick-<unix minutes>");
    assert!(
        (before..=after).contains(&minute),
        "{minute} not in {before}..={after}"
    );
    assert!(
        job.annotations()
            .contains_key("batch.kubernetes.io/cronjob-scheduled-timestamp")
    );
    let owner = job.owner_references()[0].clone();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "tick")
    );

    // The job runs to completion; the CronJob records it.
    let status = eventually("lastSuccessfulTime set, no active job", WAIT, || async {
        let s = cronjobs.get("tick").await.ok()?.status?;
        (s.last_successful_time.is_some() && s.active.as_ref().is_none_or(Vec::is_empty))
            .then_some(s)
    })
    .await;
    let scheduled = status.last_schedule_time.unwrap().0.as_second() / 60;
    assert!(scheduled >= minute);
}

#[tokio::test]
async fn finished_jobs_beyond_the_history_limits_are_deleted() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let cronjobs: Api<CronJob> = Api::namespaced(cluster.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "hist"},
        "spec": {
            "schedule": "@yearly",
            "suspend": true,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}}}}))
    .unwrap();
    let cj = cronjobs.create(&PostParams::default(), &cj).await.unwrap();
    let owner = json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": "hist",
        "uid": cj.metadata.uid.clone().unwrap(), "controller": true});
    // Four finished runs (suspended, so the job controller leaves them alone), oldest first.
    for (i, how) in [
        (1, "Complete"),
        (2, "Failed"),
        (3, "Complete"),
        (4, "Failed"),
    ] {
        let name = format!("hist-{i}");
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [owner]},
            "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}}))
        .unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
        // Let the job controller record the suspension first, so it does not race our status.
        eventually("the job suspended", WAIT, || async {
            let j = jobs.get(&name).await.ok()?;
            j.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Suspended")
                .then_some(())
        })
        .await;
        let at = Timestamp::now() - SignedDuration::from_mins(60 - i64::from(i));
        let mut status = json!({"status": {"startTime": at.to_string(),
            "conditions": [{"type": how, "status": "True", "lastTransitionTime": at.to_string()}]}});
        if how == "Complete" {
            status["status"]["completionTime"] = json!(at.to_string());
        }
        jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    let left = eventually("only the newest of each kind left", WAIT, || async {
        let mut names: Vec<String> = jobs
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .map(|j| j.name_any())
            .collect();
        names.sort();
        (names == ["hist-3", "hist-4"]).then_some(names)
    })
    .await;
    assert_eq!(left, ["hist-3", "hist-4"]);
    let status = eventually("lastSuccessfulTime from hist-3", WAIT, || async {
        cronjobs
            .get("hist")
            .await
            .ok()?
            .status?
            .last_successful_time
    })
    .await;
    let expected = Timestamp::now() - SignedDuration::from_mins(57);
    assert!((status.0.as_second() - expected.as_second()).abs() < 30);
}
