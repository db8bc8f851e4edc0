//! The resource metrics API (`metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics), served by
//! the API server itself as a built-in metrics-server: each Ready node's kubelet
//! `/stats/summary` is read on request and reported the way metrics-server reports it (CPU in
//! cores from `usageNanoCores`, memory from `workingSetBytes`), for `kubectl top` and the HPA.

use std::time::Duration;

use axum::{
    extract::{Query, Request},
    http::Method,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::Store;
use tracing::debug;

use crate::{
    ApiServer,
    errors::{ApiError, ApiResult},
    kubelet::{Endpoint, KubeletClient},
    machinery::Selectors,
    nodeproxy::{list, object},
};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const GROUP_VERSION: &str = "metrics.k8s.io/v1beta1";
/// The window samples cover: the kubelet's housekeeping interval.
const WINDOW: &str = "10s";
/// How long one kubelet may take to answer a summary.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `path` belongs to the metrics API.
pub(crate) fn claims(path: &str) -> bool {
    path == "/apis/metrics.k8s.io" || path.starts_with("/apis/metrics.k8s.io/")
}

/// A metrics resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsPath {
    /// `nodes` or `pods`.
    pub plural: &'static str,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The resource a metrics path addresses; `None` for discovery paths and anything else.
#[must_use]
pub fn parse(path: &str) -> Option<MetricsPath> {
    let rest = path
        .trim_end_matches('/')
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let owned = |s: &&str| Some((*s).to_owned()).filter(|s| !s.is_empty());
    let (plural, namespace, name) = match segments.as_slice() {
        ["nodes"] => ("nodes", None, None),
        ["nodes", name] => ("nodes", None, owned(name)),
        ["pods"] => ("pods", None, None),
        ["namespaces", ns, "pods"] => ("pods", owned(ns), None),
        ["namespaces", ns, "pods", name] => ("pods", owned(ns), owned(name)),
        _ => return None,
    };
    Some(MetricsPath {
        plural,
        namespace,
        name,
    })
}

fn group_version() -> Value {
    json!({"groupVersion": GROUP_VERSION, "version": VERSION})
}

/// The group as `/apis` lists it.
#[must_use]
pub fn group_doc() -> Value {
    json!({"name": GROUP, "versions": [group_version()], "preferredVersion": group_version()})
}

const RESOURCES: [(&str, &str, &str, bool); 2] = [
    ("nodes", "nodemetrics", "NodeMetrics", false),
    ("pods", "podmetrics", "PodMetrics", true),
];

/// `GET /apis/metrics.k8s.io/v1beta1`.
#[must_use]
pub fn resource_list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, singular, kind, namespaced)| {
            json!({"name": plural, "singularName": singular, "namespaced": namespaced, "kind": kind,
                   "verbs": ["get", "list"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
           "resources": resources})
}

/// The group's entry in the aggregated discovery document of `/apis`.
#[must_use]
pub fn aggregated_item() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, singular, kind, namespaced)| {
            json!({"resource": plural,
                   "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                   "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                   "singularResource": singular, "verbs": ["get", "list"]})
        })
        .collect();
    json!({"metadata": {"name": GROUP},
           "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}]})
}

/// A CPU quantity from nanocores, as `resource.NewScaledQuantity(n, -9).String()` writes it:
/// trailing zeros removed, the exponent brought down to a multiple of three.
#[must_use]
pub fn cpu_quantity(nanocores: u64) -> String {
    decimal(nanocores, -9)
}

fn decimal(value: u64, scale: i32) -> String {
    if value == 0 {
        return "0".into();
    }
    let (mut amount, mut exponent) = (u128::from(value), scale);
    while amount.is_multiple_of(10) {
        amount /= 10;
        exponent += 1;
    }
    match exponent.rem_euclid(3) {
        1 => {
            amount *= 10;
            exponent -= 1;
        }
        2 => {
            amount *= 100;
            exponent -= 2;
        }
        _ => {}
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        e => return format!("{amount}e{e}"),
    };
    format!("{amount}{suffix}")
}

/// A memory quantity from bytes, as `resource.NewQuantity(n, BinarySI).String()` writes it:
/// powers of 1024 as Ki/Mi/Gi..., values below 1024 in decimal SI.
#[must_use]
pub fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return decimal(bytes, 0);
    }
    let (mut amount, mut exponent) = (bytes, 0usize);
    while amount.is_multiple_of(1024) && exponent < 6 {
        amount /= 1024;
        exponent += 1;
    }
    let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exponent];
    format!("{amount}{suffix}")
}

/// `{"cpu", "memory"}` of a summary's cpu and memory stats; `None` when either is unknown
/// (metrics-server leaves such objects out).
fn usage(stats: &Value) -> Option<Value> {
    let cpu = stats["cpu"]["usageNanoCores"].as_u64()?;
    let memory = stats["memory"]["workingSetBytes"].as_u64()?;
    Some(json!({"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}))
}

fn sample_time(stats: &Value) -> Value {
    stats["cpu"]["time"]
        .as_str()
        .or_else(|| stats["memory"]["time"].as_str())
        .map_or_else(|| json!(crate::objects::now()), |t| json!(t))
}

fn labels_of(obj: &Value) -> Value {
    obj["metadata"]["labels"].clone()
}

fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let stats = &summary["node"];
    let mut metadata =
        json!({"name": node["metadata"]["name"], "creationTimestamp": crate::objects::now()});
    if labels_of(node).is_object() {
        metadata["labels"] = labels_of(node);
    }
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": GROUP_VERSION, "metadata": metadata,
        "timestamp": sample_time(stats), "window": WINDOW, "usage": usage(stats)?,
    }))
}

fn pod_metrics(pod: &Value, stats: &Value) -> Option<Value> {
    let containers: Vec<Value> = stats["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some(json!({"name": c["name"].as_str()?, "usage": usage(c)?})))
        .collect();
    if containers.is_empty() {
        return None;
    }
    let timestamp = if stats["cpu"]["time"].is_string() {
        sample_time(stats)
    } else {
        sample_time(&stats["containers"][0])
    };
    let mut metadata = json!({"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                              "creationTimestamp": crate::objects::now()});
    if labels_of(pod).is_object() {
        metadata["labels"] = labels_of(pod);
    }
    Some(json!({
        "kind": "PodMetrics", "apiVersion": GROUP_VERSION, "metadata": metadata,
        "timestamp": timestamp, "window": WINDOW, "containers": containers,
    }))
}

fn ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A kubelet's `/stats/summary`.
async fn summary(kubelet: &KubeletClient, node: &Value) -> Result<Value, String> {
    let endpoint = Endpoint::of(node).map_err(|e| e.to_string())?;
    let request = hyper::Request::get("/stats/summary")
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let resp = kubelet
            .send(&endpoint, request)
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("the kubelet answered {}", resp.status()));
        }
        let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 64 << 20)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(SUMMARY_TIMEOUT, fetch)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// The summaries of the Ready nodes among `nodes`, fetched concurrently; a node that does not
/// answer is left out (as metrics-server leaves out nodes it could not scrape).
async fn summaries(kubelet: &KubeletClient, nodes: Vec<Value>) -> Vec<(Value, Value)> {
    let fetches = nodes.into_iter().filter(ready).map(|node| async move {
        match summary(kubelet, &node).await {
            Ok(s) => Some((node, s)),
            Err(e) => {
                debug!(node = %node["metadata"]["name"], error = %e, "reading the kubelet's summary");
                None
            }
        }
    });
    futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect()
}

fn not_found(plural: &str, name: &str) -> ApiError {
    let singular = if plural == "nodes" {
        "nodemetrics"
    } else {
        "podmetrics"
    };
    ApiError::new(
        404,
        "NotFound",
        format!("{singular}.{GROUP} \"{name}\" not found"),
    )
    .with_details(json!({"name": name, "group": GROUP, "kind": plural}))
}

fn list_of(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": GROUP_VERSION, "metadata": {}, "items": items})
}

fn ok(value: &Value) -> Response {
    let mut r = value.to_string().into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves a request under `/apis/metrics.k8s.io`.
pub(crate) async fn handle<S: Store>(api: &ApiServer<S>, req: Request) -> ApiResult<Response> {
    let path = req.uri().path().trim_end_matches('/');
    if req.method() != Method::GET {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({} {path})",
                req.method()
            ),
        ));
    }
    match path {
        "/apis/metrics.k8s.io" => {
            let mut doc = group_doc();
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            return Ok(ok(&doc));
        }
        "/apis/metrics.k8s.io/v1beta1" => return Ok(ok(&resource_list())),
        _ => {}
    }
    let target = parse(path).ok_or_else(|| ApiError::no_route(path))?;
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let param = |k: &str| {
        params
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    if target.name.is_none() && matches!(param("watch"), Some("true" | "1")) {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource (watch {}.{GROUP})",
                target.plural
            ),
        ));
    }
    let Some(kubelet) = api.config.kubelet.clone() else {
        return Err(ApiError::unavailable(
            "the resource metrics API is served from the kubelets, and this server has no kubelet client configured",
        ));
    };
    let resource = registry::find("", "v1", target.plural).expect("nodes and pods are served");
    let selectors = Selectors::parse(resource, param("labelSelector"), param("fieldSelector"))?;
    if target.plural == "nodes" {
        let nodes = match &target.name {
            Some(name) => vec![
                object(api, "", "nodes", None, name)
                    .await
                    .map_err(|_| not_found("nodes", name))?,
            ],
            None => list(api, "", "nodes", None)
                .await?
                .into_iter()
                .filter(|n| selectors.matches(resource, n))
                .collect(),
        };
        let items: Vec<Value> = summaries(&kubelet, nodes)
            .await
            .iter()
            .filter_map(|(node, s)| node_metrics(node, s))
            .collect();
        return match &target.name {
            Some(name) => items
                .into_iter()
                .next()
                .map(|m| ok(&m))
                .ok_or_else(|| not_found("nodes", name)),
            None => Ok(ok(&list_of("NodeMetrics", items))),
        };
    }
    let ns = target.namespace.as_deref();
    let pods: Vec<Value> = match &target.name {
        Some(name) => vec![
            object(api, "", "pods", ns, name)
                .await
                .map_err(|_| not_found("pods", name))?,
        ],
        None => list(api, "", "pods", ns)
            .await?
            .into_iter()
            .filter(|p| selectors.matches(resource, p))
            .collect(),
    };
    let wanted: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    let nodes: Vec<Value> = list(api, "", "nodes", None)
        .await?
        .into_iter()
        .filter(|n| {
            n["metadata"]["name"]
                .as_str()
                .is_some_and(|name| wanted.contains(name))
        })
        .collect();
    let scraped = summaries(&kubelet, nodes).await;
    let mut items = Vec::new();
    for pod in &pods {
        let key = (&pod["metadata"]["namespace"], &pod["metadata"]["name"]);
        let stats = scraped
            .iter()
            .filter(|(node, _)| node["metadata"]["name"] == pod["spec"]["nodeName"])
            .flat_map(|(_, s)| s["pods"].as_array().into_iter().flatten())
            .find(|s| (&s["podRef"]["namespace"], &s["podRef"]["name"]) == key);
        if let Some(m) = stats.and_then(|s| pod_metrics(pod, s)) {
            items.push(m);
        }
    }
    match &target.name {
        Some(name) => items
            .into_iter()
            .next()
            .map(|m| ok(&m))
            .ok_or_else(|| not_found("pods", name)),
        None => Ok(ok(&list_of("PodMetrics", items))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_like_metrics_server() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(123_456), "123456n");
        assert_eq!(cpu_quantity(12_000_000), "12m");
        assert_eq!(cpu_quantity(1_500_000_000), "1500m");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_230_000), "1230u");
        assert_eq!(memory_quantity(12_345 * 1024), "12345Ki");
        assert_eq!(memory_quantity(64 << 20), "64Mi");
        assert_eq!(memory_quantity(1536 + 1), "1537");
        assert_eq!(memory_quantity(1000), "1k");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/namespaces/d/pods/p"),
            Some(MetricsPath {
                plural: "pods",
                namespace: Some("d".into()),
                name: Some("p".into())
            })
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/nodes").unwrap().plural,
            "nodes"
        );
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1"), None);
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/widgets"), None);
    }
}
