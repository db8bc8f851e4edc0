//! skiff-apiserver: a Kubernetes-compatible API server over skiff's MVCC store, which the
//! real kubectl, client-go, kube-rs and the Python client use unchanged.
//!
//! ```text
//!  request ─▶ router (paths.rs) ─▶ handlers.rs ─▶ machinery.rs (defaults, validation, patch, tables)
//!                                      │                └─ skiff-api (sans IO)
//!                                      ├─▶ alloc.rs (ClusterIPs, NodePorts as store keys)
//!                                      ├─▶ watch.rs (one store watch per resource, events encoded once)
//!                                      └─▶ skiff-store (SQLite | etcd)
//!  log/exec/attach/portforward/proxy, metrics.k8s.io ─▶ nodeproxy.rs, metrics.rs ─▶ kubelet.rs
//!                                      (the kubelets' HTTPS API; stream/ translates WebSocket)
//! ```

mod alloc;
pub mod authn;
pub mod authz;
mod bootstrap;
mod discovery;
mod errors;
mod handlers;
pub mod kubelet;
mod kubernetes_endpoints;
mod lifecycle;
mod machinery;
pub mod metrics;
mod negotiate;
mod nodeproxy;
mod objects;
mod paths;
pub mod rbac;
pub mod satoken;
pub mod serve;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
mod watch;

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use axum::Router;
pub use errors::ApiError;
pub use kubernetes_endpoints::KubernetesEndpoint;
use skiff_store::Store;

/// What the API server needs to know beyond its store.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Kubernetes minor version reported by /version: the machine's kubectl dispatcher runs
    /// the kubectl of that minor.
    pub minor: u32,
    /// Service ClusterIPs are allocated from this network (address, prefix length).
    pub service_cidr: (Ipv4Addr, u8),
    /// NodePorts are allocated from this range, inclusive.
    pub node_port_range: (u16, u16),
    /// How often watches get a BOOKMARK when they asked for bookmarks.
    pub bookmark_interval: Duration,
    /// How the server reaches kubelets (logs, exec, port-forward, proxy, metrics); `None`:
    /// those answer 503.
    pub kubelet: Option<Arc<kubelet::KubeletClient>>,
    /// What the `kubernetes` Service's endpoints name (in-cluster clients connect there).
    pub kubernetes_endpoint: KubernetesEndpoint,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            minor: 32,
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 12),
            node_port_range: (30_000, 32_767),
            bookmark_interval: Duration::from_secs(60),
            kubelet: None,
            kubernetes_endpoint: KubernetesEndpoint::NodeLocal,
        }
    }
}

/// The shared state of all requests.
pub struct ApiServer<S> {
    pub(crate) store: Arc<S>,
    pub(crate) config: Config,
    pub(crate) hub: watch::Hub<S>,
    pub(crate) alloc: alloc::Allocator,
    /// `None` in the insecure loopback mode: everything is allowed.
    pub(crate) authorizer: Option<Arc<dyn authz::Authorizer>>,
    /// Signs and verifies ServiceAccount tokens; `None` in the insecure loopback mode.
    pub(crate) tokens: Option<Arc<satoken::TokenKeys>>,
}

impl<S: Store> ApiServer<S> {
    /// Builds the server and creates what every cluster has (default namespaces, the
    /// `kubernetes` service) if it is missing.
    pub async fn new(store: Arc<S>, config: Config) -> Result<Arc<Self>, ApiError> {
        Self::build(store, config, None, None).await
    }

    /// A server that authorizes with `authorizer` and issues ServiceAccount tokens with
    /// `tokens` (use it with [`secure_router`]).
    pub async fn secure(
        store: Arc<S>,
        config: Config,
        authorizer: Arc<dyn authz::Authorizer>,
        tokens: Arc<satoken::TokenKeys>,
    ) -> Result<Arc<Self>, ApiError> {
        Self::build(store, config, Some(authorizer), Some(tokens)).await
    }

    async fn build(
        store: Arc<S>,
        config: Config,
        authorizer: Option<Arc<dyn authz::Authorizer>>,
        tokens: Option<Arc<satoken::TokenKeys>>,
    ) -> Result<Arc<Self>, ApiError> {
        let api = Arc::new(Self {
            hub: watch::Hub::new(Arc::clone(&store)),
            alloc: alloc::Allocator::new(config.service_cidr, config.node_port_range),
            store,
            config,
            authorizer,
            tokens,
        });
        bootstrap::ensure(&api).await?;
        Ok(api)
    }

    /// Background work: namespace finalization, allocator repair. Runs until dropped.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let api = Arc::clone(self);
        tokio::spawn(async move { lifecycle::run(api).await })
    }
}

/// The HTTP application without authentication or authorization: everyone may do anything.
/// Only for the loopback test mode and for tests.
pub fn router<S: Store>(api: Arc<ApiServer<S>>) -> Router {
    handlers::router(api)
}

/// The HTTP application behind authentication (`authn`) and authorization (`authz`).
pub fn secure_router<S: Store>(api: Arc<ApiServer<S>>, authn: Arc<authn::Authenticator>) -> Router {
    let authz = api
        .authorizer
        .clone()
        .unwrap_or_else(|| Arc::new(authz::MastersOnly));
    // Layers run outside-in: authentication first, then authorization.
    handlers::router(Arc::clone(&api))
        .layer(axum::middleware::from_fn_with_state(authz, authz::layer))
        .layer(axum::middleware::from_fn_with_state(
            (authn, api),
            authn::layer::<S>,
        ))
}

#[cfg(test)]
mod kubelet_tests;
#[cfg(test)]
mod tests;
