//! `skiff server`: the control plane (API server and its store) as one process.
//!
//! Lifecycle: parse and check the configuration (exit 64 when it is wrong), open the store and
//! bind the listener (after which nothing is expected to fail), serve, and on SIGINT/SIGTERM
//! stop accepting, drain in-flight requests for a bounded time, and exit.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clap::Args;
use skiff_apiserver::{ApiServer, Config, router};
use skiff_store::{MemStore, Store};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// How long in-flight requests (watches included) get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// State directory: the store, and the admin kubeconfig (DATA_DIR/kubeconfig.yaml).
    #[arg(long, default_value = "/var/lib/skiff/server")]
    pub data_dir: PathBuf,
    /// Address to serve the Kubernetes API on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Serve plain HTTP without authentication. Only allowed on a loopback address; meant
    /// for tests.
    #[arg(long)]
    pub insecure_loopback: bool,
    /// The Kubernetes minor version to report (the machine's kubectl dispatcher picks its
    /// kubectl by it); 27 to 33.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(27..=33))]
    pub kubernetes_minor: u32,
    /// Where objects live: `memory` (lost on exit; for tests).
    #[arg(long, default_value = "memory")]
    pub datastore: String,
}

pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    if !args.insecure_loopback {
        bail!(
            "only --insecure-loopback serving exists so far (TLS and authentication come with the security work); pass it to serve plain HTTP on a loopback address"
        );
    }
    if !args.listen.ip().is_loopback() {
        bail!(
            "--insecure-loopback serves without TLS or authentication, so it only listens on loopback addresses, not {}",
            args.listen.ip()
        );
    }
    if args.datastore != "memory" {
        bail!("unknown --datastore {:?}: use \"memory\"", args.datastore);
    }
    warn!(
        "serving the Kubernetes API WITHOUT TLS OR AUTHENTICATION on {} (--insecure-loopback): anyone on this machine has full control",
        args.listen
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args, Arc::new(MemStore::new())))
}

async fn serve<S: Store>(args: &ServerArgs, store: Arc<S>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let config = Config {
        minor: args.kubernetes_minor,
        ..Config::default()
    };
    let api = ApiServer::new(store, config)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping the cluster objects: {e}"))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let kubeconfig = args.data_dir.join("kubeconfig.yaml");
    write_kubeconfig(&kubeconfig, &format!("http://{addr}"))?;
    let background = api.spawn_background();
    info!(%addr, kubeconfig = %kubeconfig.display(), "API server ready");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(api))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
    let _ = stop_tx.send(());
    background.abort();
    match tokio::time::timeout(DRAIN, server).await {
        Ok(result) => result.context("server task")?.context("serving")?,
        Err(_) => warn!("requests still open after {DRAIN:?}; exiting anyway"),
    }
    Ok(())
}

/// A kubeconfig for the admin: kubectl uses it as is (`--kubeconfig` or `KUBECONFIG`).
fn write_kubeconfig(path: &std::path::Path, server: &str) -> anyhow::Result<()> {
    let content = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user: {{}}\n"
    );
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
}
