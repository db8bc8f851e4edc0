//! The node-facing subresources against a fake kubelet: a rustls HTTPS server with a certificate
//! from the test's CA for the node name, requiring the API server's client certificate. All
//! traffic stays on 127.0.0.1 (the fake kubelet's CONNECT dials the test's echo server, which
//! stands in for a pod at 127.0.0.1).

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde_json::{Value, json};
use skiff_api::registry;
use skiff_store::{MemStore, Store as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    ApiServer, Config,
    kubelet::{self, KubeletClient},
    objects,
    tls::{LeafSpec, Pki},
};

const STEP: Duration = Duration::from_secs(5);

/// What the fake kubelet saw and how the test steers it.
#[derive(Default)]
struct Kubelet {
    /// "METHOD URI" of each request, with the client certificate's CN.
    seen: Mutex<Vec<(String, String)>>,
    /// Lets the followed log stream send its second line.
    release: Notify,
    /// Signalled when a log stream is dropped (its connection went away).
    log_dropped: Notify,
}

/// Tells the test when the log stream holding it is dropped.
struct DropSignal(Arc<Kubelet>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.log_dropped.notify_one();
    }
}

impl Kubelet {
    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn summary() -> Value {
    json!({
        "node": {"nodeName": "n1", "startTime": "2026-01-01T00:00:00Z",
                 "cpu": {"time": "2026-01-01T00:10:00Z", "usageNanoCores": 123_456_789u64, "usageCoreNanoSeconds": 5},
                 "memory": {"time": "2026-01-01T00:10:00Z", "workingSetBytes": 104_857_600u64, "usageBytes": 1}},
        "pods": [
            {"podRef": {"name": "p", "namespace": "default", "uid": "u1"},
             "cpu": {"time": "2026-01-01T00:10:01Z", "usageNanoCores": 12_000_000u64},
             "memory": {"workingSetBytes": 12_641_280u64},
             "containers": [{"name": "c", "cpu": {"time": "2026-01-01T00:10:01Z", "usageNanoCores": 12_000_000u64},
                             "memory": {"time": "2026-01-01T00:10:01Z", "workingSetBytes": 12_641_280u64}}]},
            {"podRef": {"name": "gone", "namespace": "default", "uid": "u2"},
             "containers": [{"name": "c", "cpu": {"usageNanoCores": 1u64}, "memory": {"workingSetBytes": 1u64}}]}
        ]
    })
}

fn text(code: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_owned()));
    *r.status_mut() = code;
    r
}

async fn kubelet_answer(
    state: Arc<Kubelet>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let uri = req.uri().to_string();
    let path = req.uri().path().to_owned();
    if req.method() == hyper::Method::CONNECT {
        let target = req
            .uri()
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default();
        // Like the real kubelet: only the addresses of its pods (here the test's 127.0.0.1).
        if !target.starts_with("127.0.0.1:") {
            return Ok(text(StatusCode::FORBIDDEN, "not a pod of this node"));
        }
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let (Ok(up), Ok(mut backend)) = (upgrade.await, TcpStream::connect(&target).await)
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(up), &mut backend).await;
        });
        return Ok(text(StatusCode::OK, ""));
    }
    let streaming = path.starts_with("/exec/") || path.starts_with("/portforward/");
    if streaming && req.headers().contains_key(hyper::header::UPGRADE) {
        let Some(version) = req
            .headers()
            .get("x-stream-protocol-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return Ok(text(StatusCode::BAD_REQUEST, "no stream protocol version"));
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = upgrade.await else { return };
            let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        // The first version offered (v4 for exec, portforward.k8s.io for port-forward).
        let chosen = version
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        h.insert("X-Stream-Protocol-Version", chosen.parse().unwrap());
        h.insert(hyper::header::UPGRADE, "SPDY/3.1".parse().unwrap());
        h.insert(hyper::header::CONNECTION, "Upgrade".parse().unwrap());
        return Ok(r);
    }
    Ok(match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/stats/summary" => text(StatusCode::OK, &summary().to_string()),
        "/containerLogs/default/p/c" => {
            let follow = uri.contains("follow=true");
            let signal = DropSignal(Arc::clone(&state));
            let stream = futures_util::stream::unfold((0u8, signal), move |(step, signal)| {
                let state = Arc::clone(&state);
                async move {
                    match step {
                        0 => Some((Ok::<_, Infallible>(Bytes::from("line1\n")), (1, signal))),
                        1 if follow => {
                            state.release.notified().await;
                            Some((Ok(Bytes::from("line2\n")), (2, signal)))
                        }
                        _ => None,
                    }
                }
            });
            Response::new(Body::from_stream(stream))
        }
        "/containerLogs/default/two/b" => text(
            StatusCode::BAD_REQUEST,
            "container \"b\" in pod \"two\" is waiting to start: ContainerCreating",
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    })
}

/// The fake kubelet of node n1; returns its address.
async fn start_kubelet(pki: &Pki, state: Arc<Kubelet>) -> SocketAddr {
    let leaf = pki
        .issue(&LeafSpec {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            sans: vec!["n1".into()],
            server: true,
            client: false,
        })
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .unwrap();
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, state) = (acceptor.clone(), Arc::clone(&state));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|der| crate::tls::certificate_identity(der))
                    .map(|(cn, _)| cn)
                    .unwrap_or_default();
                let service = service_fn(move |req: Request<Incoming>| {
                    state
                        .seen
                        .lock()
                        .unwrap()
                        .push((format!("{} {}", req.method(), req.uri()), cn.clone()));
                    kubelet_answer(Arc::clone(&state), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A plain HTTP server standing in for a pod: it describes each request it gets.
/// Speaks TLS (with `tls`) when the client starts a handshake, plain HTTP otherwise.
async fn start_echo(tls: TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                let secure = matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == 0x16);
                let service = service_fn(move |req: Request<Incoming>| async move {
                    if req.uri().path() == "/redirect" {
                        let mut r = text(StatusCode::FOUND, "");
                        r.headers_mut()
                            .insert(hyper::header::LOCATION, "/target".parse().unwrap());
                        return Ok::<_, Infallible>(r);
                    }
                    let described = json!({
                        "method": req.method().as_str(),
                        "uri": req.uri().to_string(),
                        "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
                        "authorization": req.headers().contains_key("authorization"),
                        "connection": req.headers().contains_key("connection"),
                        "tls": secure,
                    });
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let mut d = described;
                    d["body"] = json!(String::from_utf8_lossy(&body));
                    Ok(text(StatusCode::OK, &d.to_string()))
                });
                let http = hyper::server::conn::http1::Builder::new();
                if secure {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                } else {
                    let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                }
            });
        }
    });
    addr
}

/// A serving certificate for the echo "pod" (not trusted by anyone: upstream does not verify
/// backends either).
fn echo_tls(pki: &Pki) -> TlsAcceptor {
    let leaf = pki
        .issue(&LeafSpec {
            common_name: "some-pod".into(),
            organizations: Vec::new(),
            sans: vec!["some-pod.example".into()],
            server: true,
            client: false,
        })
        .unwrap();
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

struct Cluster {
    api: Arc<ApiServer<MemStore>>,
    addr: SocketAddr,
    kubelet: Arc<Kubelet>,
    echo: SocketAddr,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn put(api: &ApiServer<MemStore>, group: &str, version: &str, plural: &str, obj: Value) {
    let r = registry::find(group, version, plural).unwrap();
    let ns = obj["metadata"]["namespace"].as_str();
    let name = obj["metadata"]["name"].as_str().unwrap();
    api.store
        .create(&objects::key(r, ns, name), objects::encode(&obj))
        .await
        .unwrap();
}

async fn cluster() -> Cluster {
    let dir = std::env::temp_dir().join(format!("skiff-kubelet-{}", uuid::Uuid::new_v4()));
    let pki = Pki::load_or_create(&dir).unwrap();
    let state = Arc::new(Kubelet::default());
    let kubelet_addr = start_kubelet(&pki, Arc::clone(&state)).await;
    let echo = start_echo(echo_tls(&pki)).await;
    let leaf = pki.issue(&kubelet::client_spec()).unwrap();
    let config = Config {
        kubelet: Some(Arc::new(KubeletClient::new(pki.ca_pem(), &leaf).unwrap())),
        ..Config::default()
    };
    let api = ApiServer::new(Arc::new(MemStore::new()), config)
        .await
        .unwrap();
    let ready = json!([{"type": "Ready", "status": "True"}]);
    put(
        &api,
        "",
        "v1",
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"zone": "a"},
                     "annotations": {kubelet::ENDPOINT_ANNOTATION: kubelet_addr.to_string()}},
        "status": {"conditions": ready}}),
    )
    .await;
    let pod = |name: &str, containers: Value, node: Option<&str>| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
               "spec": {"containers": containers, "nodeName": node},
               "status": {"podIP": "127.0.0.1"}})
    };
    let echo_port = echo.port();
    for p in [
        pod(
            "p",
            json!([{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": echo_port}]}]),
            Some("n1"),
        ),
        pod(
            "two",
            json!([{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]),
            Some("n1"),
        ),
        pod("pending", json!([{"name": "c", "image": "i"}]), None),
    ] {
        put(&api, "", "v1", "pods", p).await;
    }
    put(
        &api,
        "",
        "v1",
        "services",
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    put(&api, "discovery.k8s.io", "v1", "endpointslices", json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": echo_port, "protocol": "TCP"}],
        "endpoints": [
            // Not ready, on an address the fake kubelet refuses: never chosen.
            {"addresses": ["127.0.0.2"], "conditions": {"ready": false}, "nodeName": "n1"},
            {"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "nodeName": "n1"}]})).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = crate::router(Arc::clone(&api));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Cluster {
        api,
        addr,
        kubelet: state,
        echo,
        dir,
    }
}

impl Cluster {
    async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response<Incoming> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_owned())).unwrap();
        tokio::time::timeout(STEP, sender.send_request(req))
            .await
            .unwrap()
            .unwrap()
    }

    async fn get(&self, uri: &str) -> (StatusCode, String) {
        let resp = self.send("GET", uri, &[], "").await;
        let status = resp.status();
        let body = tokio::time::timeout(STEP, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get_json(&self, uri: &str) -> (StatusCode, Value) {
        self.get_json_with(uri, &[]).await
    }

    async fn get_json_with(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self.send("GET", uri, headers, "").await;
        let status = resp.status();
        let body = tokio::time::timeout(STEP, resp.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        )
    }
}

#[tokio::test]
async fn followed_logs_arrive_before_the_kubelet_finishes() {
    let c = cluster().await;
    let resp = c
        .send(
            "GET",
            "/api/v1/namespaces/default/pods/p/log?follow=true&tailLines=10",
            &[],
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(STEP, body.frame())
        .await
        .expect("the first line arrives while the kubelet still holds the stream")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "line1\n");
    c.kubelet.release.notify_one();
    let rest = tokio::time::timeout(STEP, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "line2\n");
    let seen = c.kubelet.seen();
    assert_eq!(
        seen[0],
        (
            "GET /containerLogs/default/p/c?follow=true&tailLines=10".to_owned(),
            kubelet::CLIENT_COMMON_NAME.to_owned()
        ),
        "the container is defaulted and the kubelet sees the API server's client certificate"
    );
}

#[tokio::test]
async fn log_errors_read_like_upstream() {
    let c = cluster().await;
    let (code, status) = c.get_json("/api/v1/namespaces/default/pods/two/log").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let (code, status) = c
        .get_json("/api/v1/namespaces/default/pods/two/log?container=b")
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    assert_eq!(
        status["message"], "container \"b\" in pod \"two\" is waiting to start: ContainerCreating",
        "the kubelet's message is passed on"
    );
    let (code, status) = c
        .get_json("/api/v1/namespaces/default/pods/pending/log")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "pod pending does not have a host assigned"
    );
    let (code, _) = c.get_json("/api/v1/namespaces/default/pods/nope/log").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // Without a kubelet client (the API alone) the subresources stay unavailable.
    let bare = crate::router(
        ApiServer::new(Arc::new(MemStore::new()), Config::default())
            .await
            .unwrap(),
    );
    let resp = tower::ServiceExt::oneshot(
        bare,
        Request::get("/api/v1/namespaces/default/pods/p/log")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn spdy_exec_is_relayed_both_ways() {
    let c = cluster().await;
    let resp = c
        .send(
            "POST",
            "/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=false",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "v4.channel.k8s.io"),
                ("x-stream-protocol-version", "v3.channel.k8s.io"),
            ],
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()["x-stream-protocol-version"],
        "v4.channel.k8s.io"
    );
    assert_eq!(resp.headers()["upgrade"], "SPDY/3.1");
    let upgraded = tokio::time::timeout(STEP, hyper::upgrade::on(resp))
        .await
        .unwrap()
        .unwrap();
    let mut io = TokioIo::new(upgraded);
    for msg in [&b"ping"[..], &b"and more bytes"[..]] {
        io.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        tokio::time::timeout(STEP, io.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg);
    }
    assert_eq!(
        c.kubelet.seen()[0].0,
        "POST /exec/default/p/c?command=sh&command=-c&command=echo%20hi&input=1&output=1"
    );
    // No command, or nothing to attach to: refused before the kubelet is asked.
    let (code, status) = c
        .get_json("/api/v1/namespaces/default/pods/p/exec?stdout=true")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(status["message"], "you must specify at least 1 command");
    let (code, status) = c
        .get_json("/api/v1/namespaces/default/pods/two/attach?stdout=true")
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
}

#[tokio::test]
async fn pod_proxy_goes_through_a_connect_tunnel() {
    let c = cluster().await;
    let port = c.echo.port();
    let resp = c
        .send(
            "POST",
            &format!("/api/v1/namespaces/default/pods/p:{port}/proxy/hello/?x=1"),
            &[
                ("authorization", "Bearer secret"),
                ("content-type", "text/plain"),
            ],
            "payload",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(
        seen["uri"], "/hello/?x=1",
        "the path and query after /proxy, as sent"
    );
    assert_eq!(seen["host"], format!("127.0.0.1:{port}"));
    assert_eq!(
        seen["authorization"], false,
        "the client's credentials stay here"
    );
    assert_eq!(seen["body"], "payload");
    assert_eq!(seen["tls"], false);
    assert!(
        c.kubelet
            .seen()
            .iter()
            .any(|(r, _)| r == &format!("CONNECT 127.0.0.1:{port}")),
        "{:?}",
        c.kubelet.seen()
    );
    // A port by name, defaulted from the first container port, and a redirect rewritten.
    let (code, body) = c.get("/api/v1/namespaces/default/pods/p:http/proxy/").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let resp = c
        .send(
            "GET",
            "/api/v1/namespaces/default/pods/p/proxy/redirect",
            &[],
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(
        resp.headers()["location"],
        "/api/v1/namespaces/default/pods/p/proxy/target"
    );
}

#[tokio::test]
async fn service_proxy_picks_a_ready_endpoint() {
    let c = cluster().await;
    for _ in 0..6 {
        let (code, body) = c
            .get_json("/api/v1/namespaces/default/services/web:80/proxy/svc")
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["uri"], "/svc");
    }
    let (code, body) = c
        .get_json("/api/v1/namespaces/default/services/web:http/proxy/")
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, status) = c
        .get_json("/api/v1/namespaces/default/services/web:9999/proxy/")
        .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        status["message"],
        "no endpoints available for service \"web:9999\""
    );
    assert!(
        !c.kubelet
            .seen()
            .iter()
            .any(|(r, _)| r.contains("127.0.0.2")),
        "the unready endpoint is never dialed"
    );
}

#[tokio::test]
async fn node_proxy_reaches_the_kubelet() {
    let c = cluster().await;
    assert_eq!(
        c.get("/api/v1/nodes/n1/proxy/healthz").await,
        (StatusCode::OK, "ok".to_owned())
    );
    assert_eq!(c.kubelet.seen()[0].0, "GET /healthz");
    let (code, _) = c.get("/api/v1/nodes/nope/proxy/healthz").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_come_from_the_kubelet_summary() {
    let c = cluster().await;
    let (code, nodes) = c.get_json("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(code, StatusCode::OK, "{nodes}");
    assert_eq!(nodes["kind"], "NodeMetricsList");
    let n1 = &nodes["items"][0];
    assert_eq!(n1["metadata"]["name"], "n1");
    assert_eq!(n1["metadata"]["labels"]["zone"], "a");
    assert_eq!(n1["usage"], json!({"cpu": "123456789n", "memory": "100Mi"}));
    assert_eq!(n1["timestamp"], "2026-01-01T00:10:00Z");
    assert_eq!(n1["window"], "10s");
    let (code, pod) = c
        .get_json("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/p")
        .await;
    assert_eq!(code, StatusCode::OK, "{pod}");
    assert_eq!(pod["kind"], "PodMetrics");
    assert_eq!(
        pod["containers"],
        json!([{"name": "c", "usage": {"cpu": "12m", "memory": "12345Ki"}}])
    );
    let (_, selected) = c
        .get_json("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb")
        .await;
    let names: Vec<&str> = selected["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["p"],
        "pods without stats and stats without pods are left out"
    );
    let (_, none) = c
        .get_json("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dnope")
        .await;
    assert_eq!(none["items"], json!([]));
    let (code, missing) = c
        .get_json("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/two")
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(
        missing["message"],
        "podmetrics.metrics.k8s.io \"two\" not found"
    );
    // Discovery lists the group so kubectl top finds it.
    let (_, groups) = c.get_json("/apis").await;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "metrics.k8s.io"),
        "{groups}"
    );
    let resp = c
        .send(
            "GET",
            "/apis",
            &[(
                "accept",
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            )],
            "",
        )
        .await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let aggregated: Value = serde_json::from_slice(&body).unwrap();
    let metrics = aggregated["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "metrics.k8s.io")
        .unwrap();
    assert_eq!(
        metrics["versions"][0]["resources"][1]["responseKind"]["kind"],
        "PodMetrics"
    );
    let (_, list) = c.get_json("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(list["resources"][0]["name"], "nodes");
    assert!(c.api.config.kubelet.is_some());
}

#[test]
fn viewers_read_metrics_but_do_not_exec() {
    use axum::http::Method;
    use skiff_api::authz::{RbacSnapshot, bootstrap_objects};

    let mut objects = bootstrap_objects();
    objects.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "viewer", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer"}]}),
    );
    objects.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "editor", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "editor"}]}),
    );
    let rbac = RbacSnapshot::from_mixed(&objects);
    let allowed = |user: &str, method: Method, path: &str, query: Option<&str>| {
        let attrs = crate::authz::attributes(&method, path, query);
        rbac.authorize(&crate::authn::User::new(user, &[]), &attrs)
            .allowed
    };
    let pods_metrics = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";
    assert!(allowed("viewer", Method::GET, pods_metrics, None));
    assert!(allowed(
        "viewer",
        Method::GET,
        &format!("{pods_metrics}/p"),
        None
    ));
    assert!(!allowed(
        "viewer",
        Method::GET,
        "/apis/metrics.k8s.io/v1beta1/namespaces/other/pods",
        None
    ));
    assert!(allowed(
        "viewer",
        Method::GET,
        "/api/v1/namespaces/default/pods/p/log",
        None
    ));
    let exec = "/api/v1/namespaces/default/pods/p/exec";
    assert!(!allowed("viewer", Method::POST, exec, Some("command=sh")));
    assert!(!allowed("viewer", Method::GET, exec, Some("command=sh")));
    assert!(allowed("editor", Method::POST, exec, Some("command=sh")));
    assert!(allowed("editor", Method::GET, exec, Some("command=sh")));
    assert!(allowed("editor", Method::GET, pods_metrics, None));
    let attrs = crate::authz::attributes(&Method::GET, exec, None);
    assert_eq!(
        attrs.verb(),
        "create",
        "a WebSocket exec needs create, as SPDY's POST"
    );
}

#[tokio::test]
async fn websocket_upgrades_become_spdy_towards_the_kubelet() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::{
        WebSocketStream,
        tungstenite::{Message, protocol::Role},
    };

    let c = cluster().await;
    let ws = |protocols: &'static str| {
        [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", protocols),
        ]
    };
    // exec: the best protocol both sides know, SPDY v4 to the kubelet.
    let resp = c
        .send(
            "GET",
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true&stderr=true",
            &ws("v4.channel.k8s.io, v5.channel.k8s.io"),
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    assert_eq!(
        resp.headers()["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert_eq!(
        c.kubelet.seen()[0].0,
        "POST /exec/default/p/c?command=ls&output=1&error=1"
    );
    let (code, status) = c
        .get_json_with(
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true",
            &ws("channel.k8s.io"),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
    // port-forward: binary messages carry the kubelet's SPDY bytes (echoed by the fake).
    let resp = c
        .send(
            "GET",
            "/api/v1/namespaces/default/pods/p/portforward?ports=8080",
            &ws("SPDY/3.1+portforward.k8s.io"),
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    let upgraded = tokio::time::timeout(STEP, hyper::upgrade::on(resp))
        .await
        .unwrap()
        .unwrap();
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    socket
        .send(Message::binary(&b"spdy bytes"[..]))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < 10 {
        match tokio::time::timeout(STEP, socket.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => echoed.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(echoed, b"spdy bytes");
    assert!(
        c.kubelet
            .seen()
            .iter()
            .any(|(r, _)| r == "POST /portforward/default/p?port=8080"),
        "{:?}",
        c.kubelet.seen()
    );
}

#[tokio::test]
async fn a_followed_log_ends_when_the_client_leaves() {
    let c = cluster().await;
    let resp = c
        .send(
            "GET",
            "/api/v1/namespaces/default/pods/p/log?follow=true",
            &[],
            "",
        )
        .await;
    let mut body = resp.into_body();
    let first = tokio::time::timeout(STEP, body.frame()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "line1\n");
    drop(body);
    tokio::time::timeout(STEP, c.kubelet.log_dropped.notified())
        .await
        .expect("the kubelet's stream is dropped once the client is gone");
}

#[tokio::test]
async fn https_backends_are_reached_through_the_tunnel() {
    let c = cluster().await;
    let port = c.echo.port();
    let (code, seen) = c
        .get_json(&format!(
            "/api/v1/namespaces/default/pods/https:p:{port}/proxy/secure"
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{seen}");
    assert_eq!(
        (&seen["uri"], &seen["tls"]),
        (&json!("/secure"), &json!(true))
    );
    let (code, seen) = c
        .get_json("/api/v1/namespaces/default/services/https:web:http/proxy/s")
        .await;
    assert_eq!(code, StatusCode::OK, "{seen}");
    assert_eq!((&seen["uri"], &seen["tls"]), (&json!("/s"), &json!(true)));
}
