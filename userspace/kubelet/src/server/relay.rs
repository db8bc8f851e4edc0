//! Streams: exec, attach and port-forward are upgraded connections that the runtime's own
//! streaming server speaks (SPDY or WebSocket remotecommand, portforward.k8s.io); the kubelet
//! asks CRI for a one-time URL and relays the upgrade to it, as the upstream kubelet does. A
//! CONNECT tunnel reaches pods' addresses from the node's network for the API server's proxies.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderName},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::{Body, Ctx, find_containers, find_sandbox, full, text};
use crate::{Runtime, cri};

/// Query flags, by the kubelet's names (`input`) or the API's (`stdin`).
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self { pairs }
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn flag(&self, names: &[&str]) -> bool {
        self.pairs.iter().any(|(k, v)| {
            names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True")
        })
    }
}

/// `/exec/NS/POD/CONTAINER` and `/attach/NS/POD/CONTAINER`.
pub async fn remotecommand<R: Runtime>(
    ctx: &Ctx<R>,
    kind: &str,
    ns: &str,
    pod: &str,
    container: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let q = Query::parse(req.uri().query());
    let (stdin, stdout, tty) = (
        q.flag(&["input", "stdin"]),
        q.flag(&["output", "stdout"]),
        q.flag(&["tty"]),
    );
    // A terminal merges stderr into stdout.
    let stderr = !tty && q.flag(&["error", "stderr"]);
    if !stdin && !stdout && !stderr {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one of stdin, stdout, stderr",
        );
    }
    let id = match running_container(ctx, ns, pod, container).await {
        Ok(id) => id,
        Err(response) => return response,
    };
    let url = if kind == "exec" {
        let cmd = q.all("command");
        if cmd.is_empty() {
            return text(StatusCode::BAD_REQUEST, "you must specify a command");
        }
        ctx.runtime
            .exec(cri::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            })
            .await
    } else {
        ctx.runtime
            .attach(cri::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr,
            })
            .await
    };
    match url {
        Ok(url) => relay_upgrade(req, &url).await,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `/portforward/NS/POD`.
pub async fn portforward<R: Runtime>(
    ctx: &Ctx<R>,
    ns: &str,
    pod: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let q = Query::parse(req.uri().query());
    let mut ports = Vec::new();
    for p in q.all("port") {
        match p.parse::<u16>() {
            Ok(port) if port > 0 => ports.push(i32::from(port)),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("invalid port {p:?}: a port is a number from 1 to 65535"),
                );
            }
        }
    }
    let sandbox = match find_sandbox(ctx.runtime.as_ref(), ns, pod).await {
        Ok(Some(s)) if s.state == cri::PodSandboxState::SandboxReady as i32 => s,
        Ok(_) => return pod_not_found(ns, pod),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match ctx.runtime.port_forward(&sandbox.id, ports).await {
        Ok(url) => relay_upgrade(req, &url).await,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn pod_not_found(ns: &str, pod: &str) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("pod {ns}/{pod} is not running on this node"),
    )
}

/// The id of the running container `container` of a pod, or the error response.
async fn running_container<R: Runtime>(
    ctx: &Ctx<R>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<String, Response<Body>> {
    let internal = |e: crate::RuntimeError| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let sandbox = find_sandbox(ctx.runtime.as_ref(), ns, pod)
        .await
        .map_err(internal)?
        .ok_or_else(|| pod_not_found(ns, pod))?;
    let containers = find_containers(ctx.runtime.as_ref(), &sandbox, container)
        .await
        .map_err(internal)?;
    let Some(newest) = containers.first() else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {ns}/{pod}"),
        ));
    };
    if newest.state != cri::ContainerState::ContainerRunning as i32 {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running in pod {ns}/{pod}"),
        ));
    }
    Ok(newest.id.clone())
}

/// Headers that describe one hop, not the upgrade the two ends negotiate.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::AUTHORIZATION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::PROXY_AUTHORIZATION
}

/// Sends `req`'s upgrade to the runtime's streaming `url` and, once both sides switched
/// protocols, copies bytes both ways until either ends.
async fn relay_upgrade(mut req: Request<Incoming>, url: &str) -> Response<Body> {
    let bad_gateway = |what: String| {
        text(
            StatusCode::BAD_GATEWAY,
            format!("the runtime's streaming server: {what}"),
        )
    };
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return bad_gateway(format!("unusable URL {url:?}"));
    };
    let Some(authority) = uri.authority().cloned() else {
        return bad_gateway(format!("URL {url:?} has no host"));
    };
    let stream = match TcpStream::connect(authority.as_str()).await {
        Ok(s) => s,
        Err(e) => return bad_gateway(format!("connecting to {authority}: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        TokioIo::new(stream),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) => return bad_gateway(e.to_string()),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "streaming server connection ended");
        }
    });
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let out = match out
        .header(header::HOST, authority.as_str())
        .body(Empty::new())
    {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let client_side = hyper::upgrade::on(&mut req);
    let mut answer = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(e.to_string()),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = answer.status();
        let body = match Limited::new(answer.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        return full(status, body);
    }
    let runtime_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        match tokio::join!(client_side, runtime_side) {
            (Ok(client), Ok(runtime)) => {
                let (mut client, mut runtime) = (TokioIo::new(client), TokioIo::new(runtime));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut runtime).await;
            }
            (c, r) => debug!(client = ?c.err(), runtime = ?r.err(), "a stream upgrade failed"),
        }
    });
    let mut response = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// `CONNECT IP:PORT`: a raw TCP tunnel to a pod of this node.
pub async fn connect<R: Runtime>(ctx: &Ctx<R>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(target) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs an IP:PORT target");
    };
    match pod_ips(ctx.runtime.as_ref()).await {
        Ok(ips) if ips.contains(&target.ip()) => {}
        Ok(_) => {
            return text(
                StatusCode::FORBIDDEN,
                format!("{} is not the address of a pod on this node", target.ip()),
            );
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("connecting to {target}: {e}"),
            );
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(client) => {
                let (mut client, mut upstream) = (TokioIo::new(client), upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => debug!(error = %e, "a CONNECT tunnel's upgrade failed"),
        }
    });
    full(StatusCode::OK, Bytes::new())
}

/// The addresses of the ready pod sandboxes on this node.
async fn pod_ips<R: Runtime>(runtime: &R) -> Result<Vec<IpAddr>, crate::RuntimeError> {
    let filter = cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    let mut ips = Vec::new();
    for sandbox in runtime.list_pod_sandboxes(filter).await? {
        let Ok(status) = runtime.pod_sandbox_status(&sandbox.id).await else {
            continue;
        };
        let Some(network) = status.network else {
            continue;
        };
        let extra = network.additional_ips.iter().map(|ip| ip.ip.as_str());
        ips.extend(
            std::iter::once(network.ip.as_str())
                .chain(extra)
                .filter_map(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    Ok(ips)
}
