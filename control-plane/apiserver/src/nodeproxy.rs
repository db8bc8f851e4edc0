//! The node-facing subresources, served through the kubelets: `pods/log` (streamed),
//! `pods/exec|attach|portforward` (HTTP/1.1 upgrades: SPDY relayed raw, WebSocket translated by
//! [`crate::stream`]), and `pods|services|nodes/proxy` (HTTP over a CONNECT tunnel through the
//! kubelet of the pod's node; nodes/proxy straight to the kubelet). The API server never dials a
//! pod address itself: only kubelet endpoints.
//!
//! ```text
//!  client ─▶ authn/authz ─▶ handle() ─┬─ log ──────────▶ GET  /containerLogs/NS/POD/C ─┐
//!                                     ├─ exec/attach ──▶ POST /exec|attach/NS/POD/C   ─┤ kubelet (TLS,
//!                                     ├─ portforward ──▶ POST /portforward/NS/POD     ─┤ node name as
//!                                     ├─ pod/svc proxy ▶ CONNECT podIP:port, then HTTP ─┤ server name)
//!                                     └─ node proxy ───▶ METHOD /PATH                 ─┘
//! ```

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Query, Request},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_api::registry;
use skiff_store::Store;
use tracing::debug;

use crate::{
    ApiServer,
    errors::{ApiError, ApiResult},
    kubelet::{self, Endpoint, KubeletClient},
    objects, paths,
    paths::Target,
    stream::{self, ExecStreams},
};

/// The subresources served here.
const SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward", "proxy"];
/// Error bodies read from a kubelet or backend, at most.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Headers that belong to one connection (RFC 9110 7.6.1), never forwarded as they came.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `path` is a node-facing subresource or the metrics API, served here rather than by the
/// generic handlers.
pub(crate) fn claims(path: &str) -> bool {
    if crate::metrics::claims(path) {
        return true;
    }
    matches!(
        paths::parse(path.trim_end_matches('/')),
        Ok(Some(Target { subresource: Some(ref sub), .. })) if SUBRESOURCES.contains(&sub.as_str())
    )
}

/// Serves a request [`claims`] accepted.
pub(crate) async fn handle<S: Store>(api: &Arc<ApiServer<S>>, req: Request) -> Response {
    if crate::metrics::claims(req.uri().path()) {
        return crate::metrics::handle(api, req)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    serve(api, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve<S: Store>(api: &Arc<ApiServer<S>>, req: Request) -> ApiResult<Response> {
    let path = req.uri().path().to_owned();
    let target =
        paths::parse(path.trim_end_matches('/'))?.ok_or_else(|| ApiError::no_route(&path))?;
    let sub = target.subresource.clone().unwrap_or_default();
    let r = target.resource;
    let Some(kubelet) = api.config.kubelet.clone() else {
        return Err(ApiError::unavailable(format!(
            "{}/{sub} is served by the node agent, which is not running in this cluster yet",
            r.plural
        )));
    };
    if target.name.is_none() {
        return Err(ApiError::no_route(&path));
    }
    match sub.as_str() {
        "log" => logs(api, &kubelet, &target, req).await,
        "exec" | "attach" | "portforward" => connect(api, &kubelet, &target, &sub, req).await,
        _ => proxy(api, &kubelet, &target, req).await,
    }
}

/// Reads one object from the store.
pub(crate) async fn object<S: Store>(
    api: &ApiServer<S>,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<Value> {
    let r = registry::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    match api.store.get(&objects::key(r, namespace, name), None).await {
        Ok(Some(kv)) => objects::decode(&kv),
        Ok(None) => Err(ApiError::not_found(r, name)),
        Err(e) => Err(ApiError::from_store(e, r, name)),
    }
}

/// Every object of a resource (in `namespace`, if given).
pub(crate) async fn list<S: Store>(
    api: &ApiServer<S>,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
) -> ApiResult<Vec<Value>> {
    let r = registry::find(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let page = api
        .store
        .list(&objects::list_prefix(r, namespace), None, None, None)
        .await
        .map_err(|e| ApiError::from_store(e, r, ""))?;
    page.items.iter().map(objects::decode).collect()
}

/// The kubelet of node `name`.
pub(crate) async fn node_endpoint<S: Store>(api: &ApiServer<S>, name: &str) -> ApiResult<Endpoint> {
    let node = object(api, "", "nodes", None, name).await?;
    Ok(Endpoint::of(&node)?)
}

/// The query's pairs, in order (repeated keys kept).
fn query_pairs(req: &Request) -> ApiResult<Vec<(String, String)>> {
    Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
}

fn last<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Go's strconv.ParseBool, which decodes boolean query parameters upstream.
fn flag(pairs: &[(String, String)], key: &str) -> bool {
    matches!(
        last(pairs, key),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let joined: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", joined.join("&"))
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// The container a request is for: the one asked for (it must exist), else the only one
/// (upstream's `validateContainer`).
fn container_of(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let pod_name = objects::meta_str(pod, "name").unwrap_or_default();
    let containers = names(pod, "containers");
    if let Some(c) = requested {
        let known = containers.iter().any(|n| n == c)
            || names(pod, "initContainers").iter().any(|n| n == c)
            || names(pod, "ephemeralContainers").iter().any(|n| n == c);
        return if known {
            Ok(c.to_owned())
        } else {
            Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {pod_name}"
            )))
        };
    }
    match containers.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        ))),
        many => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                many.join(" ")
            );
            let init = names(pod, "initContainers");
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// The node a pod runs on; a pod not yet scheduled has no kubelet to ask.
fn node_of(pod: &Value) -> ApiResult<&str> {
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                objects::meta_str(pod, "name").unwrap_or_default()
            ))
        })
}

/// A kubelet's (or backend's) error answer as a Status carrying its message, the way
/// upstream's `GenericHttpResponseChecker` reports it.
async fn kubelet_error(resp: Response<Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let body = axum::body::to_bytes(Body::new(resp.into_body()), ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or(text);
    let message = if message.is_empty() {
        format!(
            "the server responded with the status code {code} but did not return more information"
        )
    } else {
        message
    };
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    ApiError::new(code, reason, message)
}

fn method_not_allowed(method: &Method, target: &Target) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), target.resource)
}

/// `GET pods/NAME/log`: the kubelet's log stream, passed through as it arrives.
async fn logs<S: Store>(
    api: &ApiServer<S>,
    kubelet: &KubeletClient,
    target: &Target,
    req: Request,
) -> ApiResult<Response> {
    if req.method() != Method::GET {
        return Err(method_not_allowed(req.method(), target));
    }
    let pairs = query_pairs(&req)?;
    let ns = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().unwrap_or_default();
    let pod = object(api, "", "pods", Some(ns), name).await?;
    let container = container_of(&pod, last(&pairs, "container"))?;
    let node = node_of(&pod)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    for key in ["follow", "previous", "timestamps"] {
        if flag(&pairs, key) {
            query.push((key, "true".into()));
        }
    }
    for (key, min) in [("tailLines", 0), ("sinceSeconds", 1), ("limitBytes", 1)] {
        if let Some(v) = last(&pairs, key) {
            match v.parse::<i64>() {
                Ok(n) if n >= min => query.push((key, n.to_string())),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "{key}: Invalid value: {v:?}: must be an integer greater than or equal to {min}"
                    )));
                }
            }
        }
    }
    if let Some(t) = last(&pairs, "sinceTime") {
        if last(&pairs, "sinceSeconds").is_some() {
            return Err(ApiError::bad_request(
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        if t.parse::<jiff::Timestamp>().is_err() {
            return Err(ApiError::bad_request(format!(
                "sinceTime: Invalid value: {t:?}: must be an RFC 3339 time"
            )));
        }
        query.push(("sinceTime", t.to_owned()));
    }
    let endpoint = node_endpoint(api, node).await?;
    let uri = format!(
        "/containerLogs/{ns}/{name}/{container}{}",
        query_string(&query)
    );
    let request = hyper::Request::get(uri)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = kubelet.send(&endpoint, request).await?;
    if !resp.status().is_success() {
        return Err(kubelet_error(resp).await);
    }
    // Each chunk goes out as it comes in; when the client leaves, the body is dropped and with
    // it the kubelet connection.
    let mut out = Response::new(Body::new(resp.into_body()));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// `pods/NAME/exec|attach|portforward`: an upgrade relayed to the kubelet.
async fn connect<S: Store>(
    api: &ApiServer<S>,
    kubelet: &KubeletClient,
    target: &Target,
    sub: &str,
    mut req: Request,
) -> ApiResult<Response> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(method_not_allowed(req.method(), target));
    }
    let pairs = query_pairs(&req)?;
    let ns = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().unwrap_or_default();
    let pod = object(api, "", "pods", Some(ns), name).await?;
    let node = node_of(&pod)?.to_owned();
    let mut query: Vec<(&str, String)> = Vec::new();
    let streams = ExecStreams {
        stdin: flag(&pairs, "stdin"),
        stdout: flag(&pairs, "stdout"),
        stderr: flag(&pairs, "stderr"),
        tty: flag(&pairs, "tty"),
    };
    let path = if sub == "portforward" {
        for (_, port) in pairs.iter().filter(|(k, _)| k == "ports") {
            for p in port.split(',').filter(|p| !p.is_empty()) {
                match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => query.push(("port", n.to_string())),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "ports: Invalid value: {p:?}: must be a valid port number"
                        )));
                    }
                }
            }
        }
        format!("/portforward/{ns}/{name}")
    } else {
        let container = container_of(&pod, last(&pairs, "container"))?;
        if sub == "exec" {
            for (_, c) in pairs.iter().filter(|(k, _)| k == "command") {
                query.push(("command", c.clone()));
            }
            if query.is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
        }
        if !(streams.stdin || streams.stdout || streams.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least one of stdin, stdout, stderr",
            ));
        }
        // The kubelet's names for the streams (upstream's api.ExecStdinParam...).
        for (on, key) in [
            (streams.stdin, "input"),
            (streams.stdout, "output"),
            (streams.stderr, "error"),
            (streams.tty, "tty"),
        ] {
            if on {
                query.push((key, "1".into()));
            }
        }
        format!("/{sub}/{ns}/{name}/{container}")
    };
    let uri = format!("{path}{}", query_string(&query));
    let upgrade = header_values(req.headers(), "upgrade")
        .first()
        .map(|u| u.to_ascii_lowercase())
        .unwrap_or_default();
    if upgrade.is_empty() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let Some(client) = req.extensions_mut().remove::<OnUpgrade>() else {
        return Err(ApiError::internal(
            "this connection cannot be upgraded (HTTP/1.1 is required)",
        ));
    };
    let endpoint = node_endpoint(api, &node).await?;
    if upgrade == "websocket" {
        return websocket(
            kubelet,
            &endpoint,
            sub,
            &uri,
            req.headers(),
            client,
            streams,
        )
        .await;
    }
    // SPDY (or any other protocol the kubelet speaks): relayed as is.
    let mut kreq = hyper::Request::builder().method(req.method()).uri(&uri);
    for (k, v) in req.headers() {
        let forward = matches!(
            k.as_str(),
            "connection" | "upgrade" | "x-stream-protocol-version"
        ) || k.as_str().starts_with("sec-websocket-");
        if forward {
            kreq = kreq.header(k, v);
        }
    }
    let kreq = kreq
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = kubelet.send(&endpoint, kreq).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(kubelet_error(resp).await);
    }
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        if k != header::CONTENT_LENGTH {
            out.headers_mut().append(k, v.clone());
        }
    }
    let backend = hyper::upgrade::on(resp);
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(client, backend) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                debug!(client = ?c.err(), kubelet = ?b.err(), "an upgrade did not complete");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            debug!(error = %e, "relayed stream ended with an error");
        }
    });
    Ok(out)
}

/// A WebSocket exec/attach/port-forward: SPDY to the kubelet, translated by [`crate::stream`].
async fn websocket(
    kubelet: &KubeletClient,
    endpoint: &Endpoint,
    sub: &str,
    uri: &str,
    headers: &HeaderMap,
    client: OnUpgrade,
    streams: ExecStreams,
) -> ApiResult<Response> {
    let Some(key) = header_values(headers, "sec-websocket-key")
        .into_iter()
        .next()
    else {
        return Err(ApiError::bad_request(
            "missing Sec-WebSocket-Key: not a WebSocket upgrade request",
        ));
    };
    let offered = header_values(headers, "sec-websocket-protocol");
    let (protocol, spdy_version) = if sub == "portforward" {
        if !offered.iter().any(|p| p == stream::PORTFORWARD_WS_PROTOCOL) {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade: the client offered no supported subprotocol (offered {offered:?}, supported [{}])",
                stream::PORTFORWARD_WS_PROTOCOL
            )));
        }
        (
            stream::PORTFORWARD_WS_PROTOCOL.to_owned(),
            "portforward.k8s.io",
        )
    } else {
        let Some(p) = stream::EXEC_WS_PROTOCOLS
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
        else {
            return Err(ApiError::bad_request(format!(
                "unable to upgrade: the client offered no supported subprotocol (offered {offered:?}, supported {:?})",
                stream::EXEC_WS_PROTOCOLS
            )));
        };
        ((*p).to_owned(), "v4.channel.k8s.io")
    };
    let kreq = hyper::Request::post(uri)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", spdy_version)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = kubelet.send(endpoint, kreq).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(kubelet_error(resp).await);
    }
    let accept = stream::websocket_accept(&key);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = out.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&protocol).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    let backend = hyper::upgrade::on(resp);
    let portforward = sub == "portforward";
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(client, backend) {
            (Ok(c), Ok(b)) => (TokioIo::new(c), TokioIo::new(b)),
            (c, b) => {
                debug!(client = ?c.err(), kubelet = ?b.err(), "an upgrade did not complete");
                return;
            }
        };
        let result = if portforward {
            stream::websocket_tunnel(client, backend).await
        } else {
            stream::websocket_to_spdy_exec(client, &protocol, backend, streams).await
        };
        if let Err(e) = result {
            debug!(error = %e, "WebSocket stream ended with an error");
        }
    });
    Ok(out)
}

/// `[scheme:]name[:port]` (upstream's `SplitSchemeNamePort`).
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] if matches!(*scheme, "http" | "https") => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty()).then_some((scheme, name, port))
}

/// Where a proxied request goes.
enum Backend {
    /// `host:port` reached through a CONNECT tunnel via the kubelet.
    Tunnel { endpoint: Endpoint, host: String },
    /// The kubelet itself.
    Kubelet(Endpoint),
}

/// `pods|services|nodes/NAME/proxy[/PATH]`, any method.
async fn proxy<S: Store>(
    api: &ApiServer<S>,
    kubelet: &KubeletClient,
    target: &Target,
    req: Request,
) -> ApiResult<Response> {
    let id = target.name.as_deref().unwrap_or_default();
    let plural = target.resource.plural;
    // The path after `/proxy`, exactly as sent (trailing slash included).
    let raw = req.uri().path();
    let marker = format!("/{plural}/{id}/proxy");
    let Some(at) = raw.find(&marker) else {
        return Err(ApiError::no_route(raw));
    };
    let prefix = raw[..at + marker.len()].to_owned();
    let rest = match &raw[at + marker.len()..] {
        "" => "/".to_owned(),
        r => r.to_owned(),
    };
    let invalid = || {
        ApiError::bad_request(format!(
            "invalid {} request {id:?}",
            target.resource.singular
        ))
    };
    let (scheme, name, port) = split_scheme_name_port(id).ok_or_else(invalid)?;
    let backend = match plural {
        "pods" => {
            let ns = target.namespace.as_deref().unwrap_or("default");
            let pod = object(api, "", "pods", Some(ns), name).await?;
            let ip = pod["status"]["podIP"]
                .as_str()
                .filter(|ip| !ip.is_empty())
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .ok_or_else(|| {
                    ApiError::unavailable(format!("pod {name:?} does not have an IP address yet"))
                })?;
            let port = pod_port(&pod, port)?;
            let endpoint = node_endpoint(api, node_of(&pod)?).await?;
            Backend::Tunnel {
                endpoint,
                host: std::net::SocketAddr::new(ip, port).to_string(),
            }
        }
        "services" => {
            let ns = target.namespace.as_deref().unwrap_or("default");
            service_backend(api, ns, id, name, port).await?
        }
        _ => {
            let endpoint = node_endpoint(api, name).await?;
            let kubelet_port = endpoint.addr.rsplit(':').next().unwrap_or_default();
            if !port.is_empty() && port != kubelet_port && port != "10250" {
                return Err(ApiError::unavailable(format!(
                    "only the kubelet of node {name:?} can be proxied to, not port {port}"
                )));
            }
            Backend::Kubelet(endpoint)
        }
    };
    let uri = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest,
    };
    match backend {
        Backend::Kubelet(endpoint) => {
            let stream = kubelet.connect(&endpoint).await?;
            forward(TokioIo::new(stream), &endpoint.addr, &uri, &prefix, req).await
        }
        Backend::Tunnel { endpoint, host } => {
            let connect = hyper::Request::builder()
                .method(Method::CONNECT)
                .uri(&host)
                .header(header::HOST, &host)
                .body(Body::empty())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let resp = kubelet.send(&endpoint, connect).await?;
            if !resp.status().is_success() {
                return Err(kubelet_error(resp).await);
            }
            let tunnel = hyper::upgrade::on(resp).await.map_err(|e| {
                ApiError::internal(format!("error dialing backend through the kubelet: {e}"))
            })?;
            if scheme != "https" {
                return forward(tunnel, &host, &uri, &prefix, req).await;
            }
            let ip = host
                .parse::<std::net::SocketAddr>()
                .map_err(|e| ApiError::internal(e.to_string()))?
                .ip();
            let tls = tokio_rustls::TlsConnector::from(backend_tls()?)
                .connect(
                    rustls::pki_types::ServerName::IpAddress(ip.into()),
                    TokioIo::new(tunnel),
                )
                .await
                .map_err(|e| {
                    ApiError::unavailable(format!("error trying to reach the backend: {e}"))
                })?;
            forward(TokioIo::new(tls), &host, &uri, &prefix, req).await
        }
    }
}

/// The pod port a proxy request names: a number, a container port's name, or (none given) the
/// first declared container port, else 80.
fn pod_port(pod: &Value, port: &str) -> ApiResult<u16> {
    let declared = || {
        pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
    };
    let number = |v: &Value| {
        v["containerPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    };
    if port.is_empty() {
        return Ok(declared().find_map(number).unwrap_or(80));
    }
    if let Ok(n) = port.parse::<u16>() {
        return Ok(n);
    }
    declared()
        .find(|p| p["name"] == port)
        .and_then(number)
        .ok_or_else(|| ApiError::bad_request(format!("pod has no port named {port:?}")))
}

/// A ready endpoint of the Service for the port asked for (by name or by number), chosen at
/// random as upstream does, with the node that hosts it.
async fn service_backend<S: Store>(
    api: &ApiServer<S>,
    ns: &str,
    id: &str,
    name: &str,
    port: &str,
) -> ApiResult<Backend> {
    let svc = object(api, "", "services", Some(ns), name).await?;
    let mut port_name = port.to_owned();
    if let Ok(n) = port.parse::<i64>()
        && let Some(p) = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["port"].as_i64() == Some(n))
    {
        port_name = p["name"].as_str().unwrap_or_default().to_owned();
    }
    let slices = list(api, "discovery.k8s.io", "endpointslices", Some(ns)).await?;
    let mut candidates: Vec<(String, u16, Value)> = Vec::new();
    for slice in slices
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == name)
    {
        for sp in slice["ports"].as_array().into_iter().flatten() {
            if sp["name"].as_str().unwrap_or_default() != port_name {
                continue;
            }
            let Some(number) = sp["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in slice["endpoints"].as_array().into_iter().flatten() {
                if ep["conditions"]["ready"] == Value::Bool(false) {
                    continue;
                }
                if let Some(addr) = ep["addresses"][0].as_str() {
                    candidates.push((addr.to_owned(), number, ep.clone()));
                }
            }
        }
    }
    let none = || ApiError::unavailable(format!("no endpoints available for service {id:?}"));
    if candidates.is_empty() {
        return Err(none());
    }
    let pick = usize::try_from(uuid::Uuid::new_v4().as_u128() % candidates.len() as u128)
        .unwrap_or_default();
    let (addr, number, ep) = candidates.swap_remove(pick);
    let ip: std::net::IpAddr = addr.parse().map_err(|_| none())?;
    let node = match ep["nodeName"].as_str().filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None if ep["targetRef"]["kind"] == "Pod" => {
            let pod_ns = ep["targetRef"]["namespace"].as_str().unwrap_or(ns);
            let pod_name = ep["targetRef"]["name"].as_str().unwrap_or_default();
            let pod = object(api, "", "pods", Some(pod_ns), pod_name).await?;
            node_of(&pod).map_err(|_| none())?.to_owned()
        }
        None => return Err(none()),
    };
    Ok(Backend::Tunnel {
        endpoint: node_endpoint(api, &node).await?,
        host: std::net::SocketAddr::new(ip, number).to_string(),
    })
}

/// Headers named by the Connection header, also hop-by-hop.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    header_values(headers, "connection")
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect()
}

/// Sends the client's request over `io` to `host` as `uri` and streams the answer back;
/// upgrades (WebSocket to a pod) are relayed both ways.
async fn forward<I>(io: I, host: &str, uri: &str, prefix: &str, req: Request) -> ApiResult<Response>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut parts, body) = req.into_parts();
    let listed = connection_listed(&parts.headers);
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    let mut out = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(uri);
    for (k, v) in &parts.headers {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name)
            || listed.iter().any(|l| l == name)
            || name == "authorization"
            || name == "host"
            || name.starts_with("impersonate-")
        {
            continue;
        }
        out = out.header(k, v);
    }
    out = out.header(header::HOST, host);
    let client_upgrade = match upgrade {
        Some(u) => {
            out = out
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, u);
            parts.extensions.remove::<OnUpgrade>()
        }
        None => None,
    };
    let request = out
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = kubelet::send_on(io, request)
        .await
        .map_err(|e| ApiError::unavailable(format!("error trying to reach the backend: {e}")))?;
    let status = resp.status();
    let listed = connection_listed(resp.headers());
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    for (k, v) in resp.headers() {
        let name = k.as_str();
        let keep_for_upgrade =
            status == StatusCode::SWITCHING_PROTOCOLS && matches!(name, "connection" | "upgrade");
        if !keep_for_upgrade && (HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name)) {
            continue;
        }
        if k == header::LOCATION
            && let Some(rewritten) = v
                .to_str()
                .ok()
                .and_then(|l| rewrite_location(l, host, prefix))
            && let Ok(value) = HeaderValue::from_str(&rewritten)
        {
            response.headers_mut().append(k, value);
            continue;
        }
        response.headers_mut().append(k, v.clone());
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(ApiError::internal("the backend switched protocols unasked"));
        };
        let backend = hyper::upgrade::on(resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(b)) = tokio::join!(client, backend) {
                let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
            }
        });
        return Ok(response);
    }
    *response.body_mut() = Body::new(resp.into_body());
    Ok(response)
}

/// A backend's redirect, made to point back through the proxy (`prefix`) when it points at the
/// backend itself; redirects elsewhere are left alone.
fn rewrite_location(location: &str, host: &str, prefix: &str) -> Option<String> {
    let path = if let Some(rest) = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("https://"))
    {
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if &rest[..split] != host {
            return None;
        }
        match &rest[split..] {
            "" => "/",
            p if p.starts_with('/') => p,
            p => return Some(format!("{prefix}/{p}")),
        }
    } else if location.starts_with('/') && !location.starts_with("//") {
        location
    } else {
        return None;
    };
    if path.starts_with(&format!("{prefix}/")) {
        return Some(path.to_owned());
    }
    Some(format!("{prefix}{path}"))
}

/// Pods and service endpoints serve whatever certificate they have: like upstream's proxy
/// (InsecureSkipVerify), `https:` backends are encrypted to but not verified. The kubelet,
/// which the tunnel runs through, is always verified.
#[derive(Debug)]
struct UnverifiedBackend(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedBackend {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn backend_tls() -> ApiResult<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedBackend(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn containers_default_like_upstream() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(container_of(&one, None).unwrap(), "c");
        assert_eq!(
            container_of(&one, Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}],
                         "initContainers": [{"name": "i"}]}});
        assert_eq!(
            container_of(&two, None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container_of(&two, Some("i")).unwrap(), "i");
    }

    #[test]
    fn names_and_redirects() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(split_scheme_name_port("web:80"), Some(("", "web", "80")));
        assert_eq!(
            split_scheme_name_port("https:web:443"),
            Some(("https", "web", "443"))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        let prefix = "/api/v1/namespaces/d/pods/p:80/proxy";
        assert_eq!(
            rewrite_location("/login", "10.0.0.1:80", prefix).as_deref(),
            Some("/api/v1/namespaces/d/pods/p:80/proxy/login")
        );
        assert_eq!(
            rewrite_location("http://10.0.0.1:80/a?b=1", "10.0.0.1:80", prefix).as_deref(),
            Some("/api/v1/namespaces/d/pods/p:80/proxy/a?b=1")
        );
        assert_eq!(
            rewrite_location("https://example.com/", "10.0.0.1:80", prefix),
            None
        );
        assert_eq!(rewrite_location("relative", "10.0.0.1:80", prefix), None);
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
