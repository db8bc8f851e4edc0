//! The API server's client of the kubelets' HTTPS API (logs, exec, port-forward, proxy, stats):
//! where a node's kubelet listens, mutual TLS with the cluster CA (the kubelet is verified under
//! the node's name, the server presents `kube-apiserver-kubelet-client` in `system:masters`),
//! and HTTP/1.1 requests with upgrades and CONNECT tunnels over one connection each.

use std::{
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::body::Body;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{
    errors::ApiError,
    tls::{Leaf, LeafSpec, PkiError, client_config},
};

/// The Node annotation that names the kubelet's `HOST:PORT` (sandbox nodes, whose agent
/// forwards from the root namespace's loopback into the node's namespace).
pub const ENDPOINT_ANNOTATION: &str = "kubelet.skiff.io/endpoint";
/// The kubelet's port when the Node does not report one.
const DEFAULT_PORT: u64 = 10_250;
/// The client certificate's common name, as kube-apiserver's `--kubelet-client-certificate`.
pub const CLIENT_COMMON_NAME: &str = "kube-apiserver-kubelet-client";
/// Dialing and the TLS handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The API server's client certificate for kubelets.
#[must_use]
pub fn client_spec() -> LeafSpec {
    LeafSpec {
        common_name: CLIENT_COMMON_NAME.into(),
        organizations: vec!["system:masters".into()],
        sans: Vec::new(),
        server: false,
        client: true,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(
        "node {node:?} has no kubelet endpoint (no {ENDPOINT_ANNOTATION} annotation, no InternalIP)"
    )]
    NoEndpoint { node: String },
    #[error("error dialing backend: dial tcp {addr}: {source}")]
    Dial {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "error dialing backend: TLS handshake with the kubelet of node {node:?} ({addr}): {source}"
    )]
    Tls {
        node: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("error dialing backend: dial tcp {addr}: i/o timeout")]
    Timeout { addr: String },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("error talking to the kubelet: {0}")]
    Http(#[from] hyper::Error),
}

impl From<KubeletError> for ApiError {
    fn from(e: KubeletError) -> Self {
        match e {
            KubeletError::NoEndpoint { .. } => ApiError::unavailable(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// Where a node's kubelet is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The node's name: the TLS server name the kubelet's certificate must carry.
    pub node: String,
    /// `HOST:PORT` to dial.
    pub addr: String,
}

impl Endpoint {
    /// The kubelet of `node` (a Node object), by the contract: the endpoint annotation, else the
    /// first InternalIP with the reported kubelet port. Nothing else is ever dialed.
    pub fn of(node: &Value) -> Result<Self, KubeletError> {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(addr) = node["metadata"]["annotations"][ENDPOINT_ANNOTATION]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            return Ok(Self {
                node: name,
                addr: addr.to_owned(),
            });
        }
        let ip = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .and_then(|a| a.parse::<std::net::IpAddr>().ok());
        let Some(ip) = ip else {
            return Err(KubeletError::NoEndpoint { node: name });
        };
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .filter(|p| *p != 0 && *p <= u64::from(u16::MAX))
            .unwrap_or(DEFAULT_PORT);
        Ok(Self {
            node: name,
            addr: std::net::SocketAddr::new(ip, u16::try_from(port).unwrap_or(10_250)).to_string(),
        })
    }
}

/// The TLS identity used towards kubelets; the certificate is replaceable while the server runs.
pub struct KubeletClient {
    ca_pem: String,
    tls: RwLock<Arc<ClientConfig>>,
}

impl fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeletClient").finish_non_exhaustive()
    }
}

/// An open connection to a kubelet.
pub type KubeletStream = TlsStream<TcpStream>;

impl KubeletClient {
    /// Trusts kubelets whose certificates chain to `ca_pem`, presenting `leaf`.
    pub fn new(ca_pem: &str, leaf: &Leaf) -> Result<Self, PkiError> {
        Ok(Self {
            ca_pem: ca_pem.to_owned(),
            tls: RwLock::new(client_config(ca_pem, leaf)?),
        })
    }

    /// Presents `leaf` from now on (renewal).
    pub fn replace(&self, leaf: &Leaf) -> Result<(), PkiError> {
        let config = client_config(&self.ca_pem, leaf)?;
        *self
            .tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        Ok(())
    }

    fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(
            &self
                .tls
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Dials the kubelet and completes the TLS handshake, verifying it as `endpoint.node`.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<KubeletStream, KubeletError> {
        let server_name = ServerName::try_from(endpoint.node.clone())
            .map_err(|_| KubeletError::ServerName(endpoint.node.clone()))?;
        let connector = TlsConnector::from(self.config());
        let addr = endpoint.addr.clone();
        let dial = async {
            let tcp = TcpStream::connect(&addr)
                .await
                .map_err(|source| KubeletError::Dial {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(server_name, tcp)
                .await
                .map_err(|source| KubeletError::Tls {
                    node: endpoint.node.clone(),
                    addr: addr.clone(),
                    source,
                })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(|_| KubeletError::Timeout {
                addr: endpoint.addr.clone(),
            })?
    }

    /// Sends `request` (origin-form URI, or authority-form for CONNECT) on a new connection to
    /// the kubelet. The connection serves upgrades: after a 101 (or a 2xx to CONNECT)
    /// `hyper::upgrade::on(response)` yields the raw stream.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, KubeletError> {
        let stream = self.connect(endpoint).await?;
        if !request.headers().contains_key(hyper::header::HOST)
            && let Ok(host) = hyper::header::HeaderValue::from_str(&endpoint.addr)
        {
            request.headers_mut().insert(hyper::header::HOST, host);
        }
        send_on(TokioIo::new(stream), request).await
    }
}

/// Sends one request over `io` (HTTP/1.1, upgrades allowed), driving the connection in a task of
/// its own that ends with the connection.
pub async fn send_on<I>(io: I, request: Request<Body>) -> Result<Response<Incoming>, KubeletError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    Ok(sender.send_request(request).await?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_follow_the_contract() {
        let annotated = json!({"metadata": {"name": "n1", "annotations": {ENDPOINT_ANNOTATION: "127.0.0.1:4100"}},
                               "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}});
        assert_eq!(
            Endpoint::of(&annotated).unwrap(),
            Endpoint {
                node: "n1".into(),
                addr: "127.0.0.1:4100".into()
            }
        );
        let plain = json!({"metadata": {"name": "n2"},
                           "status": {"addresses": [{"type": "Hostname", "address": "n2"}, {"type": "InternalIP", "address": "10.0.0.6"}],
                                      "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}}});
        assert_eq!(Endpoint::of(&plain).unwrap().addr, "10.0.0.6:10255");
        let default_port = json!({"metadata": {"name": "n3"}, "status": {"addresses": [{"type": "InternalIP", "address": "fd00::3"}]}});
        assert_eq!(Endpoint::of(&default_port).unwrap().addr, "[fd00::3]:10250");
        assert!(matches!(
            Endpoint::of(&json!({"metadata": {"name": "n4"}})),
            Err(KubeletError::NoEndpoint { .. })
        ));
    }
}
