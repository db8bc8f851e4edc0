//! skiff-controllers: the reconcilers that converge the cluster on its desired state, as ordinary API clients.
//!
//! ```text
//!  skiff server ──leader::run_elected (Lease kube-system/skiff-controller-manager)──▶ run(client)
//!                                                                                      │ one task per controller
//!   replicaset · deployment · daemonset · statefulset · job · cronjob · endpoints · gc · nodelifecycle
//!        └── each: kube-runtime watches ─▶ reconcile(object) ─▶ API writes + events::Recorder
//! ```
//!
//! Controllers reach state only through the API (DESIGN.md), exactly like kube-controller-manager:
//! what they do is what `kubectl get/describe/rollout` shows.
#![forbid(unsafe_code)]

pub mod certificates;
pub mod events;
pub mod leader;
pub mod placement;
pub mod pods;
pub mod quantity;

mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod gc;
pub mod hpa;
mod job;
pub mod nodeipam;
mod nodelifecycle;
mod replicaset;
pub mod rootca;
mod statefulset;

use std::{future::Future, sync::Arc, time::Duration};

use kube::Client;
use tracing::{error, info};

/// What a reconcile step can fail with; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Tunables of the controllers; `Default` is what `skiff server` runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// A node whose Lease (or Ready heartbeat) is older than this becomes Ready=Unknown.
    pub node_monitor_grace: Duration,
    /// How often node health is evaluated.
    pub node_monitor_period: Duration,
    /// Signs approved CertificateSigningRequests with the cluster CA (the server's); `None`
    /// leaves them approved but unsigned.
    pub signer: Option<certificates::Signer>,
    /// Where the autoscaler reads pod CPU usage; `None`: the resource metrics API.
    pub metrics: Option<hpa::Metrics>,
    /// How often each HorizontalPodAutoscaler is evaluated (upstream's 15 s sync period).
    pub hpa_sync_period: Duration,
    /// Pod addresses of the whole cluster; each node gets a `node_cidr_mask` subnet of it.
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    pub node_cidr_mask: u8,
    /// The cluster CA (PEM) published in every namespace as `kube-root-ca.crt`; `None` publishes
    /// nothing.
    pub root_ca: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            node_monitor_grace: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            signer: None,
            metrics: None,
            hpa_sync_period: Duration::from_secs(15),
            cluster_cidr: (std::net::Ipv4Addr::new(10, 244, 0, 0), 16),
            node_cidr_mask: 24,
            root_ca: None,
        }
    }
}

/// Shared by every controller's reconcile function.
pub struct Ctx {
    pub client: Client,
    pub events: events::Recorder,
    pub options: Options,
}

impl Ctx {
    /// Deletes `name` through `api` (gone already counts as done) and records a
    /// SuccessfulDelete event with `message` on `owner`, as the upstream controllers do.
    pub(crate) async fn delete_recorded<K, O>(
        &self,
        component: &'static str,
        api: &kube::Api<K>,
        name: &str,
        params: &kube::api::DeleteParams,
        owner: &O,
        message: &str,
    ) -> Result<(), ControllerError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        O: kube::Resource<DynamicType = ()>,
    {
        match api.delete(name, params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.events
            .publish(
                component,
                owner,
                events::EventType::Normal,
                "SuccessfulDelete",
                message,
            )
            .await;
        Ok(())
    }

    pub fn new(client: Client, options: Options) -> Arc<Self> {
        Arc::new(Self {
            events: events::Recorder::new(client.clone()),
            client,
            options,
        })
    }
}

/// Runs every controller until the returned future is dropped (leadership lost, shutdown).
pub async fn run(client: Client, options: Options) {
    let ctx = Ctx::new(client, options);
    let mut tasks = tokio::task::JoinSet::new();
    spawn(&mut tasks, "replicaset", replicaset::run(Arc::clone(&ctx)));
    spawn(&mut tasks, "deployment", deployment::run(Arc::clone(&ctx)));
    spawn(&mut tasks, "daemonset", daemonset::run(Arc::clone(&ctx)));
    spawn(
        &mut tasks,
        "statefulset",
        statefulset::run(Arc::clone(&ctx)),
    );
    spawn(&mut tasks, "job", job::run(Arc::clone(&ctx)));
    spawn(&mut tasks, "cronjob", cronjob::run(Arc::clone(&ctx)));
    spawn(&mut tasks, "endpoints", endpoints::run(Arc::clone(&ctx)));
    spawn(&mut tasks, "garbage-collector", gc::run(Arc::clone(&ctx)));
    spawn(
        &mut tasks,
        "node-lifecycle",
        nodelifecycle::run(Arc::clone(&ctx)),
    );
    spawn(
        &mut tasks,
        "certificates",
        certificates::run(Arc::clone(&ctx)),
    );
    spawn(&mut tasks, "node-ipam", nodeipam::run(Arc::clone(&ctx)));
    spawn(
        &mut tasks,
        "root-ca-cert-publisher",
        rootca::run(Arc::clone(&ctx)),
    );
    spawn(
        &mut tasks,
        "horizontal-pod-autoscaler",
        hpa::run(Arc::clone(&ctx)),
    );
    info!(controllers = tasks.len(), "controllers started");
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            error!(error = %e, "a controller task panicked");
        }
    }
}

fn spawn(
    tasks: &mut tokio::task::JoinSet<()>,
    name: &'static str,
    work: impl Future<Output = ()> + Send + 'static,
) {
    tasks.spawn(async move {
        work.await;
        // Controllers loop until aborted; returning means their watch streams ended.
        error!(controller = name, "controller stopped");
    });
}
