//! The HorizontalPodAutoscaler against a Deployment, with CPU usage from a fake metrics source:
//! scale up on high utilization (rate-limited), down when it drops, within min/max, with the
//! status `kubectl get hpa` reads.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::future::BoxFuture;
use k8s_openapi::api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, PostParams},
};
use serde_json::json;
use skiff_controllers::hpa::{Metrics, MetricsSource};

use crate::common::{Cluster, eventually};

/// Every pod uses the same CPU, settable by the test.
#[derive(Default)]
struct FakeMetrics {
    millicores: Mutex<i64>,
    client: Mutex<Option<kube::Client>>,
}

impl MetricsSource for FakeMetrics {
    fn pod_cpu<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<BTreeMap<String, i64>, String>> {
        Box::pin(async move {
            let client = self.client.lock().unwrap().clone().ok_or("no client yet")?;
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, namespace);
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| e.to_string())?;
            let cpu = *self.millicores.lock().unwrap();
            Ok(list.items.iter().map(|p| (p.name_any(), cpu)).collect())
        })
    }
}

#[tokio::test]
async fn hpa_scales_a_deployment_on_cpu_utilization() {
    let fake = Arc::new(FakeMetrics::default());
    *fake.millicores.lock().unwrap() = 100;
    let options = skiff_controllers::Options {
        metrics: Some(Metrics(Arc::clone(&fake) as Arc<dyn MetricsSource>)),
        hpa_sync_period: Duration::from_millis(300),
        ..skiff_controllers::Options::default()
    };
    let cluster = Cluster::start(&["n1", "n2"], options).await;
    *fake.client.lock().unwrap() = Some(cluster.client.clone());
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "main", "image": "busybox",
                                  "resources": {"requests": {"cpu": "100m"}}}]}}}}))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client.clone(), "default");
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                     "target": {"type": "Utilization", "averageUtilization": 50}}}],
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    // 100% of requests against a 50% target: 2 -> 4 (doubling), then capped at maxReplicas 5.
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    eventually("scaled up to 4", Duration::from_secs(20), || async {
        (replicas(&deployments.get("web").await.ok()?) == 4).then_some(())
    })
    .await;
    let status = eventually(
        "the max reached and reported",
        Duration::from_secs(20),
        || async {
            let hpa = hpas.get("web").await.ok()?;
            let status = hpa.status?;
            (status.desired_replicas == 5).then_some(status)
        },
    )
    .await;
    let metric = &status.current_metrics.unwrap()[0];
    assert_eq!(
        metric
            .resource
            .as_ref()
            .unwrap()
            .current
            .average_utilization,
        Some(100)
    );
    let limited = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "ScalingLimited")
        .unwrap();
    assert_eq!(limited.reason.as_deref(), Some("TooManyReplicas"));
    assert_eq!(replicas(&deployments.get("web").await.unwrap()), 5);

    // 10% against 50%: down to ceil(5 × 0.2) = 1, the minimum.
    *fake.millicores.lock().unwrap() = 10;
    eventually("scaled down to 1", Duration::from_secs(20), || async {
        (replicas(&deployments.get("web").await.ok()?) == 1).then_some(())
    })
    .await;
    // Steady state: no rescale, and no status rewrite either (each would wake the controller).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = hpas.get("web").await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        hpas.get("web").await.unwrap().resource_version(),
        before,
        "an unchanged status was rewritten"
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(cluster.client.clone(), "default");
    let messages: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.kind=HorizontalPodAutoscaler"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("New size: 4; reason: cpu resource utilization")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("New size: 1;")),
        "{messages:?}"
    );
}
