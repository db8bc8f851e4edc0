//! Jobs against skiff's API server: completion with parallelism, failed pods retried with backoff
//! until BackoffLimitExceeded, activeDeadlineSeconds, and ttlSecondsAfterFinished.

use std::time::Duration;

use crate::common::{Cluster, eventually};
use k8s_openapi::api::{
    batch::v1::{Job, JobCondition},
    core::v1::{Event, Pod},
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn job(name: &str, spec: Value, annotations: Value) -> Job {
    let mut spec = spec;
    spec["template"] = json!({
        "metadata": {"annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn condition(job: &Job, type_: &str) -> Option<JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

async fn job_pods(cluster: &Cluster, name: &str) -> Vec<Pod> {
    cluster
        .pods("default")
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")))
        .await
        .unwrap()
        .items
}

async fn reasons(cluster: &Cluster, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn job_completes_with_parallelism() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "pi",
            json!({"completions": 5, "parallelism": 2}),
            json!({"fake-kubelet/exit-code": "0", "fake-kubelet/run-ms": "300"}),
        ),
    )
    .await
    .unwrap();
    // Sample: never more than 2 active pods.
    let deadline = tokio::time::Instant::now() + WAIT;
    let done = loop {
        let pods = job_pods(&cluster, "pi").await;
        let running = pods
            .iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .count();
        assert!(running <= 2, "{running} pods active at once");
        let j = jobs.get("pi").await.unwrap();
        if condition(&j, "Complete").is_some() {
            break j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job did not complete"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    let status = done.status.clone().unwrap();
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.active, Some(0));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(condition(&done, "SuccessCriteriaMet").is_some());
    assert_eq!(job_pods(&cluster, "pi").await.len(), 5);
    let pod = &job_pods(&cluster, "pi").await[0];
    assert_eq!(
        pod.labels()["batch.kubernetes.io/controller-uid"],
        done.metadata.uid.clone().unwrap()
    );
    let reasons = eventually("events", WAIT, || async {
        let r = reasons(&cluster, "pi").await;
        r.contains(&"Completed".to_owned()).then_some(r)
    })
    .await;
    assert!(
        reasons.contains(&"SuccessfulCreate".to_owned()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn failed_pods_are_retried_until_the_backoff_limit() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "flaky",
            json!({"backoffLimit": 1}),
            json!({"fake-kubelet/exit-code": "1", "fake-kubelet/run-ms": "100"}),
        ),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    // One retry (after a 10 s backoff), then the limit of 1 is exceeded.
    let failed = eventually("the job failing", Duration::from_secs(40), || async {
        let j = jobs.get("flaky").await.ok()?;
        condition(&j, "Failed").map(|c| (j, c))
    })
    .await;
    let (j, c) = failed;
    assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(j.status.as_ref().unwrap().failed, Some(2));
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the retry did not back off: {:?}",
        started.elapsed()
    );
    assert_eq!(job_pods(&cluster, "flaky").await.len(), 2);
    let reasons = eventually("the event", WAIT, || async {
        let r = reasons(&cluster, "flaky").await;
        r.contains(&"BackoffLimitExceeded".to_owned()).then_some(r)
    })
    .await;
    assert!(reasons.contains(&"SuccessfulCreate".to_owned()));
}

#[tokio::test]
async fn active_deadline_fails_the_job_and_stops_its_pods() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    // Pods that never finish.
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 2}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    eventually("two running pods", WAIT, || async {
        (job_pods(&cluster, "slow").await.len() == 2).then_some(())
    })
    .await;
    let c = eventually("DeadlineExceeded", WAIT, || async {
        condition(&jobs.get("slow").await.ok()?, "Failed")
    })
    .await;
    assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
    eventually("the pods deleted", WAIT, || async {
        job_pods(&cluster, "slow").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn finished_jobs_are_deleted_after_their_ttl() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "once",
            json!({"ttlSecondsAfterFinished": 1}),
            json!({"fake-kubelet/exit-code": "0"}),
        ),
    )
    .await
    .unwrap();
    eventually("complete", WAIT, || async {
        condition(&jobs.get("once").await.ok()?, "Complete")
    })
    .await;
    eventually("the job deleted after its TTL", WAIT, || async {
        jobs.get_opt("once").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn indexed_job_runs_each_index_once() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            json!({"fake-kubelet/exit-code": "0"}),
        ),
    )
    .await
    .unwrap();
    let done = eventually("complete", WAIT, || async {
        let j = jobs.get("idx").await.ok()?;
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    let mut indexes: Vec<String> = job_pods(&cluster, "idx")
        .await
        .iter()
        .map(|p| p.annotations()["batch.kubernetes.io/job-completion-index"].clone())
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[tokio::test]
async fn suspended_job_runs_nothing_until_resumed() {
    let cluster = Cluster::start(&["n1"], skiff_controllers::Options::default()).await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "later",
            json!({"suspend": true}),
            json!({"fake-kubelet/exit-code": "0"}),
        ),
    )
    .await
    .unwrap();
    let c = eventually("Suspended", WAIT, || async {
        condition(&jobs.get("later").await.ok()?, "Suspended")
    })
    .await;
    assert_eq!(c.reason.as_deref(), Some("JobSuspended"));
    assert!(job_pods(&cluster, "later").await.is_empty());
    jobs.patch(
        "later",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    eventually("complete after resuming", WAIT, || async {
        condition(&jobs.get("later").await.ok()?, "Complete")
    })
    .await;
}
