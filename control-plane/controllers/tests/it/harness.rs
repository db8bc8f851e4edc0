//! The test harness itself: nodes register, unscheduled pods get bound and run, pods being
//! deleted are finished, finishing pods end in the phase their annotation asks for.

use std::time::Duration;

use crate::common::{Cluster, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};

#[tokio::test]
async fn fake_kubelet_binds_runs_finishes_and_deletes_pods() {
    let cluster = Cluster::start(&["n1", "n2"], skiff_controllers::Options::default()).await;
    let pods = cluster.pods("default");
    for (name, exit) in [("runs", None), ("ends", Some("0"))] {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]}}))
        .unwrap();
        if let Some(code) = exit {
            pod.metadata.annotations =
                Some([("fake-kubelet/exit-code".to_owned(), code.to_owned())].into());
        }
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let phase = |name: &'static str| {
        let pods = pods.clone();
        async move {
            let pod = pods.get(name).await.ok()?;
            pod.status?.phase
        }
    };
    eventually("pod runs", Duration::from_secs(10), || async {
        (phase("runs").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    eventually("pod ends", Duration::from_secs(10), || async {
        (phase("ends").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let running = pods.get("runs").await.unwrap();
    assert!(running.spec.unwrap().node_name.is_some());
    pods.delete("runs", &DeleteParams::default()).await.unwrap();
    eventually("pod deleted", Duration::from_secs(10), || async {
        pods.get_opt("runs").await.unwrap().is_none().then_some(())
    })
    .await;
}
