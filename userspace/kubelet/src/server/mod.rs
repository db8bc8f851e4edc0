//! The kubelet API on :10250, what the API server proxies to: container logs, exec, attach and
//! port-forward (relayed to the runtime's streaming server), a CONNECT tunnel into the node's
//! network for pods/proxy and services/proxy, and resource statistics for metrics.k8s.io.
//!
//! Callers must present a client certificate from the cluster CA; each request is then
//! authorized against the API server with a SubjectAccessReview on the node's subresources, as
//! the upstream kubelet does in webhook mode.

mod auth;
mod logs;
mod relay;
pub mod stats;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::{Runtime, cri, pod::spec};

/// The Node annotation naming where the API server reaches this kubelet ("HOST:PORT"), when
/// that is not the node's InternalIP and kubelet port (a node in a network namespace, reached
/// through a forwarder on the host's loopback).
pub const ENDPOINT_ANNOTATION: &str = "kubelet.skiff.io/endpoint";

/// The kubelet API's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The cluster CA (client certificates must chain to it), PEM.
    pub ca_pem: String,
    /// The serving certificate (its DNS name is the node's name) and key, PEM.
    pub cert_pem: String,
    pub key_pem: String,
    /// How often CPU and memory are sampled (usage rates are over this window).
    pub stats_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the kubelet API's TLS configuration: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

/// An error as the upstream kubelet answers it: plain text with a status.
pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut r = full(status, message.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = full(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// What the handlers share.
pub(crate) struct Ctx<R> {
    pub runtime: Arc<R>,
    pub client: kube::Client,
    pub node_name: String,
    pub pod_log_dir: PathBuf,
    pub authz: auth::Authorizer,
    pub stats: Arc<stats::Stats>,
}

/// Serves the kubelet API on `listener` until the task is dropped, sampling statistics every
/// `config.stats_interval`.
pub async fn serve<R: Runtime>(
    listener: TcpListener,
    config: &ServerConfig,
    kubelet: &crate::KubeletConfig,
    runtime: Arc<R>,
    client: kube::Client,
) -> Result<(), ServerError> {
    let tls = auth::tls_config(config)?;
    let node_name = kubelet.node_name.clone();
    let stats = Arc::new(stats::Stats::default());
    tokio::spawn(stats::sample(
        Arc::clone(&runtime),
        Arc::clone(&stats),
        config.stats_interval,
    ));
    let ctx = Arc::new(Ctx {
        runtime,
        authz: auth::Authorizer::new(client.clone(), node_name.clone()),
        client,
        node_name,
        pod_log_dir: kubelet.pod_log_dir.clone(),
        stats,
    });
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, "kubelet API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, ctx) = (acceptor.clone(), Arc::clone(&ctx));
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
            };
            let user = auth::peer_identity(tls.get_ref().1);
            let service = hyper::service::service_fn(move |req| {
                let (ctx, user) = (Arc::clone(&ctx), user.clone());
                async move { Ok::<_, std::convert::Infallible>(route(&ctx, user, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
}

/// Binds `config.listen` and serves (see [`serve`]).
pub async fn bind_and_serve<R: Runtime>(
    config: &ServerConfig,
    kubelet: &crate::KubeletConfig,
    runtime: Arc<R>,
    client: kube::Client,
) -> Result<(), ServerError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
    serve(listener, config, kubelet, runtime, client).await
}

async fn route<R: Runtime>(
    ctx: &Ctx<R>,
    user: Option<auth::User>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(user) = user else {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let path = req.uri().path().to_owned();
    let subresource = auth::subresource_of(&path);
    let verb = auth::verb_of(req.method());
    match ctx.authz.allowed(&user, verb, subresource).await {
        Ok(true) => {}
        Ok(false) => {
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                    user.name
                ),
            );
        }
        Err(e) => {
            warn!(error = %e, "kubelet API: authorizing a request");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("authorizing the request: {e}"),
            );
        }
    }
    if req.method() == Method::CONNECT {
        return relay::connect(ctx, req).await;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = req.method() == Method::GET;
    match segments.as_slice() {
        ["healthz"] if get => text(StatusCode::OK, "ok"),
        ["pods"] if get => pods(ctx).await,
        ["stats", "summary"] if get => json(&ctx.stats.summary(&ctx.node_name)),
        ["containerLogs", ns, pod, container] if get => {
            let (ns, pod, container) = (*ns, *pod, *container);
            logs::serve(ctx, ns, pod, container, req.uri().query()).await
        }
        ["exec" | "attach", ns, pod, container] => {
            let (kind, ns, pod, container) = (segments[0], *ns, *pod, *container);
            relay::remotecommand(ctx, kind, ns, pod, container, req).await
        }
        ["portforward", ns, pod] => {
            let (ns, pod) = (*ns, *pod);
            relay::portforward(ctx, ns, pod, req).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

async fn pods<R: Runtime>(ctx: &Ctx<R>) -> Response<Body> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    match api.list(&params).await {
        Ok(list) => json(&serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": list.items,
        })),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("listing pods: {e}"),
        ),
    }
}

/// A pod's newest sandbox on this node, by namespace and name.
pub(crate) async fn find_sandbox<R: Runtime>(
    runtime: &R,
    ns: &str,
    pod: &str,
) -> Result<Option<cri::PodSandbox>, crate::RuntimeError> {
    let filter = cri::PodSandboxFilter {
        label_selector: [
            (spec::LABEL_POD_NAMESPACE.to_owned(), ns.to_owned()),
            (spec::LABEL_POD_NAME.to_owned(), pod.to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let mut sandboxes = runtime.list_pod_sandboxes(filter).await?;
    sandboxes.sort_by_key(|s| {
        (
            s.state == cri::PodSandboxState::SandboxReady as i32,
            s.created_at,
        )
    });
    Ok(sandboxes.pop())
}

/// A pod's containers named `container`, newest attempt first.
pub(crate) async fn find_containers<R: Runtime>(
    runtime: &R,
    sandbox: &cri::PodSandbox,
    container: &str,
) -> Result<Vec<cri::Container>, crate::RuntimeError> {
    let uid = sandbox
        .labels
        .get(spec::LABEL_POD_UID)
        .cloned()
        .unwrap_or_default();
    let filter = cri::ContainerFilter {
        label_selector: [
            (spec::LABEL_POD_UID.to_owned(), uid),
            (spec::LABEL_CONTAINER_NAME.to_owned(), container.to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let mut containers = runtime.list_containers(filter).await?;
    containers.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    Ok(containers)
}

#[cfg(test)]
mod tests;
