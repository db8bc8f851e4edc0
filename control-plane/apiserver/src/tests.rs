//! The API server driven through its router (no sockets), as kubectl drives it.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use skiff_store::MemStore;
use tower::ServiceExt as _;

use crate::{ApiServer, Config, router};

struct Client {
    app: axum::Router,
}

impl Client {
    async fn new() -> Self {
        let api = ApiServer::new(Arc::new(MemStore::new()), Config::default())
            .await
            .unwrap();
        Self { app: router(api) }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, &[], None).await
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            uri,
            &[("content-type", "application/json")],
            Some(body),
        )
        .await
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

#[tokio::test]
async fn create_get_list_with_resource_versions_and_errors() {
    let c = Client::new().await;
    let (code, created) = c.post("/api/v1/namespaces/default/pods", pod("a")).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let rv: i64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (code, again) = c.post("/api/v1/namespaces/default/pods", pod("a")).await;
    assert_eq!(
        (code, again["reason"].as_str()),
        (StatusCode::CONFLICT, Some("AlreadyExists"))
    );
    assert_eq!(again["message"], "pods \"a\" already exists");
    let (code, missing) = c.post("/api/v1/namespaces/nope/pods", pod("b")).await;
    assert_eq!(
        (code, missing["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("namespaces \"nope\" not found"))
    );
    c.post("/api/v1/namespaces/default/pods", pod("b")).await;
    let (_, list) = c.get("/api/v1/namespaces/default/pods").await;
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["items"][0]["kind"], "Pod");
    let (_, page) = c.get("/api/v1/pods?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    let (_, next) = c
        .get(&format!(
            "/api/v1/pods?limit=1&continue={}",
            urlencode(&token)
        ))
        .await;
    assert_eq!(next["items"][0]["metadata"]["name"], "b");
    assert!(next["metadata"].get("continue").is_none());
    let (_, got) = c.get("/api/v1/namespaces/default/pods/a").await;
    assert_eq!(got["metadata"]["resourceVersion"], rv.to_string());
    let (code, _) = c.get("/api/v1/namespaces/default/pods/zzz").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn updates_check_resource_version_and_bump_generation() {
    let c = Client::new().await;
    let (_, created) = c.post("/apis/apps/v1/namespaces/default/deployments", json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})).await;
    assert_eq!(created["metadata"]["generation"], 1);
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["spec"]["replicas"] = json!(3);
    let (code, conflict) = c
        .call(
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web",
            &[("content-type", "application/json")],
            Some(stale),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{conflict}");
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    let mut fresh = created.clone();
    fresh["spec"]["replicas"] = json!(3);
    fresh["status"] = json!({"replicas": 99});
    let (code, updated) = c
        .call(
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web",
            &[("content-type", "application/json")],
            Some(fresh),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["metadata"]["generation"], 2);
    assert!(
        updated.get("status").is_none(),
        "status is written through /status only"
    );
    // The scale subresource, as `kubectl scale` uses it.
    let (_, scale) = c
        .get("/apis/apps/v1/namespaces/default/deployments/web/scale")
        .await;
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(3))
    );
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, patched) = c
        .call(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &[("content-type", "application/merge-patch+json")],
            Some(json!({"spec": {"replicas": 5}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (
            patched["kind"].as_str(),
            patched["spec"]["replicas"].as_i64()
        ),
        (Some("Scale"), Some(5))
    );
    // A stale resourceVersion in the Scale is a conflict, through PATCH as through PUT.
    let stale = scale["metadata"]["resourceVersion"].clone();
    let (code, _) = c
        .call(
            "PATCH",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &[("content-type", "application/merge-patch+json")],
            Some(json!({"metadata": {"resourceVersion": stale}, "spec": {"replicas": 7}})),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    let mut put = scale.clone();
    put["spec"]["replicas"] = json!(7);
    let (code, _) = c
        .call(
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            &[("content-type", "application/json")],
            Some(put.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (_, d) = c
        .get("/apis/apps/v1/namespaces/default/deployments/web")
        .await;
    assert_eq!(
        (
            d["spec"]["replicas"].as_i64(),
            d["metadata"]["generation"].as_i64()
        ),
        (Some(5), Some(3))
    );
    // Status writes go through /status and leave the spec alone.
    let mut status = d.clone();
    status["spec"]["replicas"] = json!(1);
    status["status"] = json!({"replicas": 5, "observedGeneration": 3});
    let (code, s) = c
        .call(
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/web/status",
            &[("content-type", "application/json")],
            Some(status),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{s}");
    assert_eq!(
        (
            s["spec"]["replicas"].as_i64(),
            s["status"]["replicas"].as_i64()
        ),
        (Some(5), Some(5))
    );
    assert_eq!(
        s["metadata"]["generation"], 3,
        "a status write is no new generation"
    );
}

#[tokio::test]
async fn json_patch_dry_run_and_finalizers() {
    let c = Client::new().await;
    c.post("/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "finalizers": ["example.com/hold"]}, "data": {"a": "1"}})).await;
    let (code, patched) = c
        .call(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            &[("content-type", "application/json-patch+json")],
            Some(json!([{"op": "replace", "path": "/data/a", "value": "2"}])),
        )
        .await;
    assert_eq!(
        (code, patched["data"]["a"].as_str()),
        (StatusCode::OK, Some("2"))
    );
    let (code, dry) = c
        .call(
            "POST",
            "/api/v1/namespaces/default/configmaps?dryRun=All",
            &[("content-type", "application/json")],
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{dry}");
    assert_eq!(
        c.get("/api/v1/namespaces/default/configmaps/dry").await.0,
        StatusCode::NOT_FOUND
    );
    // A finalizer holds the object: deletion marks it, removing the finalizer removes it.
    let (_, marked) = c
        .call(
            "DELETE",
            "/api/v1/namespaces/default/configmaps/cm",
            &[],
            None,
        )
        .await;
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(
        c.get("/api/v1/namespaces/default/configmaps/cm").await.0,
        StatusCode::OK
    );
    let (code, _) = c
        .call(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/cm",
            &[("content-type", "application/merge-patch+json")],
            Some(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        c.get("/api/v1/namespaces/default/configmaps/cm").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports() {
    let c = Client::new().await;
    let (_, k) = c
        .get("/api/v1/namespaces/default/services/kubernetes")
        .await;
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
    let (code, svc) = c
        .post(
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{svc}");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.") && ip != "10.96.0.1");
    let port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30_000..=32_767).contains(&port));
    let (code, clash) = c
        .post(
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{clash}");
    c.call(
        "DELETE",
        "/api/v1/namespaces/default/services/web",
        &[],
        None,
    )
    .await;
    let (code, reuse) = c
        .post(
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "a deleted service's address is free again: {reuse}"
    );
}

#[tokio::test]
async fn discovery_follows_the_accept_header() {
    let c = Client::new().await;
    let (_, legacy) = c.get("/api").await;
    assert_eq!(legacy["kind"], "APIVersions");
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let (_, agg) = c.call("GET", "/apis", &[("accept", accept)], None).await;
    assert_eq!(agg["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    let (_, version) = c.get("/version/").await;
    assert_eq!(version["minor"], "32");
    let (_, table) = c
        .call(
            "GET",
            "/api/v1/namespaces",
            &[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
            None,
        )
        .await;
    assert_eq!(table["kind"], "Table");
    assert_eq!(
        table["rows"].as_array().unwrap().len(),
        4,
        "the four standard namespaces"
    );
}

#[tokio::test]
async fn watch_streams_initial_state_then_changes() {
    let c = Client::new().await;
    c.post("/api/v1/namespaces/default/pods", pod("a")).await;
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=2")
        .body(Body::empty())
        .unwrap();
    let resp = c.app.clone().oneshot(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let event: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        (
            event["type"].as_str(),
            event["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a"))
    );
    c.post("/api/v1/namespaces/default/pods", pod("b")).await;
    c.call("DELETE", "/api/v1/namespaces/default/pods/a", &[], None)
        .await;
    let second: Value =
        serde_json::from_slice(&body.frame().await.unwrap().unwrap().into_data().unwrap()).unwrap();
    let third: Value =
        serde_json::from_slice(&body.frame().await.unwrap().unwrap().into_data().unwrap()).unwrap();
    assert_eq!(
        (
            second["type"].as_str(),
            second["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    assert_eq!(third["type"], "DELETED");
}

/// Reads watch events until `n` have arrived.
async fn watch_events(body: &mut Body, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < n {
        let frame = body.frame().await.expect("the watch ended early").unwrap();
        buf.extend_from_slice(&frame.into_data().unwrap());
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

#[tokio::test]
async fn a_watch_without_resource_version_sends_every_existing_object() {
    let c = Client::new().await;
    // More than the stream's buffer holds.
    for i in 0..300 {
        c.post(
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("cm-{i}")}}),
        )
        .await;
    }
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=5&sendInitialEvents=true&allowWatchBookmarks=true")
        .body(Body::empty())
        .unwrap();
    let mut body = c.app.clone().oneshot(req).await.unwrap().into_body();
    let events = watch_events(&mut body, 301).await;
    let added = events.iter().filter(|e| e["type"] == "ADDED").count();
    assert_eq!(added, 300);
    assert_eq!(events[300]["type"], "BOOKMARK");
    assert_eq!(
        events[300]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn table_watchers_of_different_versions_each_get_their_own() {
    let c = Client::new().await;
    // From the current revision, so both share the resource's feed (and its encoded lines).
    let (_, list) = c.get("/api/v1/namespaces/default/configmaps").await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bodies = Vec::new();
    for version in ["v1", "v1beta1"] {
        let req = Request::builder()
            .uri(format!("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=5&resourceVersion={rv}"))
            .header(
                "accept",
                format!("application/json;as=Table;v={version};g=meta.k8s.io"),
            )
            .body(Body::empty())
            .unwrap();
        bodies.push((
            version,
            c.app.clone().oneshot(req).await.unwrap().into_body(),
        ));
    }
    c.post(
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "t"}}),
    )
    .await;
    for (version, body) in &mut bodies {
        let events = watch_events(body, 1).await;
        assert_eq!(
            events[0]["object"]["apiVersion"],
            format!("meta.k8s.io/{version}"),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let api = ApiServer::new(Arc::new(MemStore::new()), Config::default())
        .await
        .unwrap();
    let bg = api.spawn_background();
    let c = Client { app: router(api) };
    c.post(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"}}),
    )
    .await;
    c.post("/api/v1/namespaces/tmp/pods", pod("a")).await;
    let (_, ns) = c.call("DELETE", "/api/v1/namespaces/tmp", &[], None).await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, refused) = c.post("/api/v1/namespaces/tmp/pods", pod("b")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    for _ in 0..100 {
        if c.get("/api/v1/namespaces/tmp").await.0 == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.get("/api/v1/namespaces/tmp").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/api/v1/namespaces/tmp/pods/a").await.0,
        StatusCode::NOT_FOUND
    );
    bg.abort();
}

#[tokio::test]
async fn jobs_get_a_selector_by_their_uid_unless_they_manage_it() {
    let c = Client::new().await;
    let job = |name: &str, manual: bool| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"manualSelector": manual,
                     "selector": if manual { json!({"matchLabels": {"mine": "yes"}}) } else { Value::Null },
                     "template": {"metadata": {"labels": {"mine": "yes"}},
                                  "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    };
    let (_, created) = c
        .post("/apis/batch/v1/namespaces/default/jobs", job("pi", false))
        .await;
    let uid = created["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        created["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &created["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(labels["mine"], "yes");
    let (_, manual) = c
        .post("/apis/batch/v1/namespaces/default/jobs", job("own", true))
        .await;
    assert_eq!(
        manual["spec"]["selector"],
        json!({"matchLabels": {"mine": "yes"}})
    );
}

#[tokio::test]
async fn certificate_requests_record_their_requestor_and_change_only_through_approval() {
    let c = Client::new().await;
    use base64::Engine as _;
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMA==\n-----END CERTIFICATE REQUEST-----\n";
    let (code, created) = c
        .call(
            "POST",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            &[("content-type", "application/json")],
            Some(
                json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                "metadata": {"name": "n1"},
                "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "forged",
                         "request": base64::engine::general_purpose::STANDARD.encode(pem),
                         "usages": ["client auth"]},
                "status": {"certificate": "Zm9yZ2Vk"}}),
            ),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert!(
        created["spec"].get("username").is_none(),
        "no requestor is taken from the body"
    );
    assert!(
        created.get("status").is_none_or(Value::is_null),
        "{created}"
    );
    // A plain update may not change the request ...
    let mut edited = created.clone();
    edited["spec"]["signerName"] = json!("example.com/other");
    edited["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
    let (code, updated) = c
        .call(
            "PUT",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/n1",
            &[("content-type", "application/json")],
            Some(edited),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client"
    );
    assert!(updated["status"]["conditions"].is_null(), "{updated}");
    // ... the approval subresource writes only the conditions.
    let mut approve = updated.clone();
    approve["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "ByHand"}],
                               "certificate": "Zm9yZ2Vk"});
    approve["spec"]["usages"] = json!(["server auth"]);
    let (code, approved) = c
        .call(
            "PUT",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/n1/approval",
            &[("content-type", "application/json")],
            Some(approve),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
    assert!(approved["status"]["certificate"].is_null());
    assert_eq!(approved["spec"]["usages"], json!(["client auth"]));
}

#[tokio::test]
async fn binding_assigns_a_node_once_and_marks_the_pod_scheduled() {
    let c = Client::new().await;
    c.post(
        "/api/v1/namespaces/default/pods",
        json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    let (code, _) = c
        .call(
            "PATCH",
            "/api/v1/namespaces/default/pods/p/status",
            &[("content-type", "application/merge-patch+json")],
            Some(json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                         "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = c
        .call(
            "POST",
            "/api/v1/namespaces/default/pods/p/binding",
            &[("content-type", "application/json")],
            Some(binding.clone()),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (_, pod) = c
        .call("GET", "/api/v1/namespaces/default/pods/p", &[], None)
        .await;
    assert_eq!(pod["spec"]["nodeName"], "n1");
    let conditions = pod["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1, "{conditions:?}");
    assert_eq!(conditions[0]["type"], "PodScheduled");
    assert_eq!(conditions[0]["status"], "True");
    let (code, conflict) = c
        .call(
            "POST",
            "/api/v1/namespaces/default/pods/p/binding",
            &[("content-type", "application/json")],
            Some(binding),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{conflict}");
}
