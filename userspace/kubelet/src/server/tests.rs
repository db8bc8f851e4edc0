//! The kubelet API over TLS against the whole kubelet (real API server in process, fake
//! runtime): who may call it, logs with tail/follow/previous, the exec relay to a streaming
//! server, the CONNECT tunnel and statistics.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use skiff_apiserver::tls::{LeafSpec, Pki, client_config};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsConnector;

use super::ServerConfig;
use crate::{
    cri,
    fake::FakeRuntime,
    tests::{Harness, eventually, pod, start_with},
};

struct Api_ {
    harness: Harness,
    addr: std::net::SocketAddr,
    pki: Pki,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn start(fake: FakeRuntime) -> Api_ {
    let dir = std::env::temp_dir().join(format!(
        "skiff-kubelet-api-{}-{}",
        std::process::id(),
        free_port().port()
    ));
    let pki = Pki::load_or_create(&dir).expect("pki");
    let serving = pki
        .issue(&LeafSpec {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            sans: vec!["n1".into()],
            server: true,
            client: false,
        })
        .expect("serving cert");
    let addr = free_port();
    let server = ServerConfig {
        listen: addr,
        ca_pem: pki.ca_pem().to_owned(),
        cert_pem: serving.cert_pem,
        key_pem: serving.key_pem,
        stats_interval: Duration::from_millis(50),
    };
    fake.add_image("busybox");
    let harness = start_with(fake, |c| c.server = Some(server)).await;
    Api_ {
        harness,
        addr,
        pki,
        _dir: TempDir(dir),
    }
}

impl Api_ {
    /// An HTTP/1.1 connection as `user` (with `groups`), or with no certificate.
    async fn connect(&self, user: Option<(&str, &[&str])>) -> SendRequest<Empty<Bytes>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = match user {
            Some((name, groups)) => {
                let leaf = self
                    .pki
                    .issue(&LeafSpec {
                        common_name: name.into(),
                        organizations: groups.iter().map(|g| (*g).to_owned()).collect(),
                        sans: Vec::new(),
                        server: false,
                        client: true,
                    })
                    .expect("client cert");
                client_config(self.pki.ca_pem(), &leaf).expect("client config")
            }
            None => {
                let mut roots = rustls::RootCertStore::empty();
                use rustls::pki_types::{CertificateDer, pem::PemObject as _};
                for c in CertificateDer::pem_slice_iter(self.pki.ca_pem().as_bytes()) {
                    roots.add(c.expect("ca")).expect("root");
                }
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .expect("versions")
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
        };
        let tcp = eventually("the kubelet API to listen", async || {
            TcpStream::connect(self.addr).await.ok()
        })
        .await;
        let tls = TlsConnector::from(config)
            .connect("n1".try_into().expect("name"), tcp)
            .await
            .expect("TLS with the node's name");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("handshake");
        tokio::spawn(conn.with_upgrades());
        sender
    }

    async fn admin(&self) -> SendRequest<Empty<Bytes>> {
        self.connect(Some(("kube-apiserver-kubelet-client", &["system:masters"])))
            .await
    }

    /// A pod "p" with one container "app", running; returns its uid and container id.
    async fn running_pod(&self) -> (String, String) {
        let api: Api<Pod> = Api::namespaced(self.harness.client.clone(), "default");
        let created = api
            .create(
                &PostParams::default(),
                &pod(serde_json::json!({
                    "nodeName": "n1",
                    "containers": [{"name": "app", "image": "busybox"}],
                })),
            )
            .await
            .expect("pod");
        let uid = created.metadata.uid.expect("uid");
        let fake = self.harness.fake.clone();
        let watchdog = {
            let (fake, api) = (fake.clone(), api.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(8)).await;
                let p = api.get("p").await.ok().and_then(|p| p.status);
                eprintln!("calls: {:?}\nstatus: {p:?}", fake.calls());
            })
        };
        let id = eventually("the container to run", async || {
            fake.list_containers(cri::ContainerFilter::default())
                .await
                .ok()?
                .into_iter()
                .find(|c| c.state == cri::ContainerState::ContainerRunning as i32)
                .map(|c| c.id)
        })
        .await;
        watchdog.abort();
        (uid, id)
    }
}

use crate::Runtime as _;

async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (StatusCode, String) {
    let req = Request::get(path)
        .header("host", "n1")
        .body(Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The annotation is the contract with the API server, which cannot depend on this crate: one
/// spelling on both sides.
#[test]
fn the_endpoint_annotation_is_the_one_the_api_server_reads() {
    assert_eq!(
        super::ENDPOINT_ANNOTATION,
        skiff_apiserver::kubelet::ENDPOINT_ANNOTATION
    );
}

#[tokio::test]
async fn callers_need_a_cluster_certificate_then_get_served() {
    let api = start(FakeRuntime::new()).await;
    let (status, body) = get(&mut api.connect(None).await, "/healthz").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthorized")
    );
    // Refusals need RBAC, which the in-process test server does not run: the end-to-end test
    // (tests/integration/tests/up.rs) checks them against `skiff up`.
    let (status, body) = get(&mut api.admin().await, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, body) = get(&mut api.admin().await, "/pods").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"PodList\""), "{body}");
}

#[tokio::test]
async fn logs_tail_follow_and_previous() {
    let api = start(FakeRuntime::new()).await;
    let (uid, id) = api.running_pod().await;
    let dir = api
        .harness
        .config
        .pod_log_dir
        .join(format!("default_p_{uid}"))
        .join("app");
    std::fs::create_dir_all(&dir).expect("log dir");
    let log = dir.join("0.log");
    std::fs::write(
        &log,
        "2026-11-27T12:00:00Z stdout F one\n2026-11-27T12:00:01Z stderr F two\n2026-11-27T12:00:02Z stdout F thr",
    )
    .expect("log");
    let mut admin = api.admin().await;
    let (status, body) = get(&mut admin, "/containerLogs/default/p/app").await;
    // A line the runtime is still writing (no newline yet) is not shown until it is whole.
    assert_eq!((status, body.as_str()), (StatusCode::OK, "one\ntwo\n"));
    let (_, body) = get(
        &mut admin,
        "/containerLogs/default/p/app?tailLines=1&timestamps=true",
    )
    .await;
    assert_eq!(body, "2026-11-27T12:00:01Z two\n");
    let (status, body) = get(&mut admin, "/containerLogs/default/p/app?previous=true").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        "previous terminated container \"app\" in pod \"p\" not found"
    );
    let (status, _) = get(&mut admin, "/containerLogs/default/nope/app").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Following: lines arrive as they are written, and the stream ends when the container does.
    let req = Request::get("/containerLogs/default/p/app?follow=true")
        .header("host", "n1")
        .body(Empty::new())
        .expect("request");
    let mut body = admin.send_request(req).await.expect("response").into_body();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open");
    use std::io::Write as _;
    write!(file, "ee\n2026-11-27T12:00:03Z stdout F four\n").expect("append");
    let mut seen = String::new();
    while !seen.contains("four") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a followed line within 5 s")
            .expect("a frame")
            .expect("data");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(seen, "one\ntwo\nthree\nfour\n");
    api.harness.fake.exit(&id, 0);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            frame.expect("frame");
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "the followed log did not end with its container"
    );
}

/// A streaming server that answers one upgrade with 101 and then echoes; returns what request
/// line and headers it saw.
async fn streaming_server() -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/exec/one-time-token",
        listener.local_addr().expect("addr")
    );
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.expect("head");
            head.push(b[0]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .expect("101");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.expect("read");
        s.write_all(&buf[..n]).await.expect("echo");
        String::from_utf8_lossy(&head).into_owned()
    });
    (url, task)
}

#[tokio::test]
async fn exec_is_relayed_to_the_runtimes_streaming_server() {
    let fake = FakeRuntime::new();
    let api = start(fake.clone()).await;
    let (_, id) = api.running_pod().await;
    let (url, seen) = streaming_server().await;
    fake.set_stream_url(&url);
    let mut admin = api.admin().await;
    let req = Request::post(
        "/exec/default/p/app?command=sh&command=-c&command=id&input=1&output=1&tty=1",
    )
    .header("host", "n1")
    .header("connection", "Upgrade")
    .header("upgrade", "SPDY/3.1")
    .header("x-stream-protocol-version", "v4.channel.k8s.io")
    .body(Empty::new())
    .expect("request");
    let mut resp = admin.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()["x-stream-protocol-version"],
        "v4.channel.k8s.io"
    );
    let upgraded = hyper::upgrade::on(&mut resp).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    io.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"ping");
    let head = seen.await.expect("server");
    assert!(
        head.starts_with("POST /exec/one-time-token HTTP/1.1"),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    // The runtime was asked for exactly this exec: a terminal has no separate stderr.
    assert!(
        fake.calls()
            .iter()
            .any(|c| c == &format!("Exec {id} sh -c id")),
        "{:?}",
        fake.calls()
    );

    // A container that is not there, and an exec without a command.
    let (status, body) = get(
        &mut api.admin().await,
        "/exec/default/p/nope?command=id&output=1",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = get(&mut api.admin().await, "/exec/default/p/app?output=1").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_REQUEST, "you must specify a command")
    );
}

#[tokio::test]
async fn connect_reaches_pods_of_this_node_only_and_stats_are_served() {
    let fake = FakeRuntime::new();
    let api = start(fake.clone()).await;
    let (_, id) = api.running_pod().await;
    // The fake's pods all have 127.244.0.5: a loopback address, so this stays on the machine.
    let pod_server = TcpListener::bind("127.244.0.5:0").await.expect("bind");
    let port = pod_server.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut s, _) = pod_server.accept().await.expect("accept");
        s.write_all(b"hello from the pod").await.expect("write");
    });
    let mut admin = api.admin().await;
    let req = Request::connect(format!("127.244.0.5:{port}"))
        .body(Empty::new())
        .expect("request");
    let resp = admin.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.expect("tunnel"));
    let mut got = String::new();
    io.read_to_string(&mut got).await.expect("read");
    assert_eq!(got, "hello from the pod");

    let req = Request::connect(format!("127.244.0.6:{port}"))
        .body(Empty::new())
        .expect("request");
    let resp = api.admin().await.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let stats = move |cpu: u64| cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            labels: [
                (
                    crate::pod::spec::LABEL_POD_NAMESPACE.to_owned(),
                    "default".to_owned(),
                ),
                (crate::pod::spec::LABEL_POD_NAME.to_owned(), "p".to_owned()),
            ]
            .into(),
            ..Default::default()
        }),
        cpu: Some(cri::CpuUsage {
            usage_core_nano_seconds: Some(cri::UInt64Value { value: cpu }),
            ..Default::default()
        }),
        memory: Some(cri::MemoryUsage {
            working_set_bytes: Some(cri::UInt64Value { value: 4096 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    fake.set_stats(vec![stats(1)]);
    let summary = eventually("a pod in the stats summary with a CPU rate", async || {
        let (status, body) = get(&mut api.admin().await, "/stats/summary").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let pod = v["pods"].as_array()?.first()?.clone();
        pod["cpu"].get("usageNanoCores")?;
        Some(v)
    });
    // Keep the counter moving so a rate exists.
    let feeder = {
        let fake = fake.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            for i in 2..200u64 {
                fake.set_stats(vec![stats(i * 1_000_000)]);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let v = summary.await;
    feeder.abort();
    assert_eq!(v["node"]["nodeName"], "n1");
    assert!(v["node"]["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(v["pods"][0]["podRef"]["name"], "p");
    assert_eq!(
        v["pods"][0]["containers"][0]["memory"]["workingSetBytes"],
        4096
    );
    assert!(v["pods"][0]["cpu"]["usageNanoCores"].as_u64().unwrap_or(0) > 0);
}
