//! `skiff server`: the control plane (API server and its store) as one process.
//!
//! Lifecycle: parse and check the configuration (exit 64 when it is wrong), open the store and
//! bind the listener (after which nothing is expected to fail), serve, and on SIGINT/SIGTERM
//! stop accepting, drain in-flight requests for a bounded time, and exit.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use skiff_apiserver::{
    ApiServer, Config,
    authn::Authenticator,
    authz::Authorizer,
    rbac::{self, RbacAuthorizer},
    router,
    satoken::TokenKeys,
    secure_router,
    serve::serve_tls,
    tls::{LeafSpec, Pki, ServingCert, server_config},
};
use skiff_store::{MemStore, Store, open_datastore};
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
    /// Extra names and addresses for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    /// Static bearer tokens, one `token,user,uid[,"group1,group2"]` per line.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Let requests without credentials in as system:anonymous (authorization decides what
    /// they may do); without it they get 401.
    #[arg(long)]
    pub anonymous_auth: bool,
    /// The Kubernetes minor version to report (the machine's kubectl dispatcher picks its
    /// kubectl by it); 27 to 33.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(27..=33))]
    pub kubernetes_minor: u32,
    /// Where objects live: `sqlite` (one file under the data dir), `etcd://HOST:PORT,...[/prefix]`
    /// (for clusters that outgrow one machine), or `memory` (lost on exit; for tests).
    #[arg(long, default_value = "sqlite")]
    pub datastore: String,
}

pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    if args.insecure_loopback && !args.listen.ip().is_loopback() {
        bail!(
            "--insecure-loopback serves without TLS or authentication, so it only listens on loopback addresses, not {}",
            args.listen.ip()
        );
    }
    if args.insecure_loopback {
        warn!(
            "serving the Kubernetes API WITHOUT TLS OR AUTHENTICATION on {} (--insecure-loopback): anyone on this machine has full control",
            args.listen
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if args.datastore == "memory" {
            return serve(args, Arc::new(MemStore::new())).await;
        }
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("creating {}", args.data_dir.display()))?;
        let store = open_datastore(&args.datastore, &args.data_dir)
            .await
            .with_context(|| format!("opening the datastore {:?}", args.datastore))?;
        serve(args, Arc::new(store)).await
    })
}

async fn serve<S: Store>(args: &ServerArgs, store: Arc<S>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let config = Config {
        minor: args.kubernetes_minor,
        ..Config::default()
    };
    let bootstrap =
        |e: skiff_apiserver::ApiError| anyhow::anyhow!("bootstrapping the cluster objects: {e}");
    let rbac = Arc::new(RbacAuthorizer::default());
    let api = if args.insecure_loopback {
        ApiServer::new(store, config).await.map_err(bootstrap)?
    } else {
        let tls_dir = args.data_dir.join("tls");
        std::fs::create_dir_all(&tls_dir)
            .with_context(|| format!("creating {}", tls_dir.display()))?;
        let tokens = Arc::new(TokenKeys::load_or_create(&tls_dir.join("sa.key"))?);
        let api = ApiServer::secure(
            store,
            config,
            Arc::clone(&rbac) as Arc<dyn Authorizer>,
            tokens,
        )
        .await
        .map_err(bootstrap)?;
        rbac::ensure_bootstrap(&api).await.map_err(bootstrap)?;
        tokio::spawn(rbac::refresh(Arc::clone(&api), rbac));
        api
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let kubeconfig = args.data_dir.join("kubeconfig.yaml");
    let background = api.spawn_background();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = if args.insecure_loopback {
        write_kubeconfig(&kubeconfig, &format!("http://{addr}"), None)?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(api))
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await;
        })
    } else {
        let mut authn = Authenticator::default();
        authn.anonymous = args.anonymous_auth;
        if let Some(path) = &args.token_auth_file {
            authn = authn.with_token_file(path)?;
        }
        let pki = Arc::new(Pki::load_or_create(&args.data_dir.join("tls"))?);
        let server_spec = serving_spec(addr, &args.tls_sans);
        let (leaf, _) = pki.ensure("server", &server_spec)?;
        let serving = Arc::new(ServingCert::new(&leaf)?);
        let admin = ensure_admin(&pki, &kubeconfig, addr)?;
        info!(expires = %admin, "admin credentials in the kubeconfig");
        tokio::spawn(renew(
            Arc::clone(&pki),
            Arc::clone(&serving),
            server_spec,
            kubeconfig.clone(),
            addr,
        ));
        let tls = server_config(pki.ca_pem(), serving)?;
        let app = secure_router(api, Arc::new(authn));
        tokio::spawn(serve_tls(listener, tls, app, async {
            let _ = stop_rx.await;
        }))
    };
    info!(%addr, kubeconfig = %kubeconfig.display(), "API server ready");

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
    let _ = stop_tx.send(());
    background.abort();
    if tokio::time::timeout(DRAIN, server).await.is_err() {
        warn!("requests still open after {DRAIN:?}; exiting anyway");
    }
    Ok(())
}

/// How often certificates are checked for renewal while the server runs.
const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);

/// The names and addresses clients reach the API server by.
fn serving_spec(addr: SocketAddr, extra: &[String]) -> LeafSpec {
    let mut sans: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "10.96.0.1",
    ]
    .map(str::to_owned)
    .to_vec();
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        sans.push(addr.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        && !host.trim().is_empty()
    {
        sans.push(host.trim().to_owned());
    }
    sans.extend(extra.iter().cloned());
    sans.dedup();
    LeafSpec {
        common_name: "kube-apiserver".into(),
        organizations: Vec::new(),
        sans,
        server: true,
        client: false,
    }
}

/// The admin's client certificate (CN admin, O system:masters), written into the kubeconfig
/// whenever it is (re)issued. Returns its expiry.
fn ensure_admin(
    pki: &Pki,
    kubeconfig: &std::path::Path,
    addr: SocketAddr,
) -> anyhow::Result<String> {
    let spec = LeafSpec {
        common_name: "admin".into(),
        organizations: vec!["system:masters".into()],
        sans: Vec::new(),
        server: false,
        client: true,
    };
    let (leaf, issued) = pki.ensure("admin", &spec)?;
    if issued || !kubeconfig.exists() {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        write_kubeconfig(
            kubeconfig,
            &format!("https://{host}:{}", addr.port()),
            Some((pki.ca_pem(), &leaf.cert_pem, &leaf.key_pem)),
        )?;
    }
    Ok(leaf.not_after.to_string())
}

/// Renews leaf certificates well before they expire, without a restart.
async fn renew(
    pki: Arc<Pki>,
    serving: Arc<ServingCert>,
    spec: LeafSpec,
    kubeconfig: PathBuf,
    addr: SocketAddr,
) {
    loop {
        tokio::time::sleep(RENEW_CHECK).await;
        match pki.ensure("server", &spec) {
            Ok((leaf, true)) => match serving.replace(&leaf) {
                Ok(()) => info!(expires = %leaf.not_after, "renewed the serving certificate"),
                Err(e) => warn!(error = %e, "loading the renewed serving certificate"),
            },
            Ok((_, false)) => {}
            Err(e) => warn!(error = %e, "renewing the serving certificate; retrying later"),
        }
        if let Err(e) = ensure_admin(&pki, &kubeconfig, addr) {
            warn!(error = %e, "renewing the admin certificate; retrying later");
        }
    }
}

/// A kubeconfig for the admin: kubectl uses it as is (`--kubeconfig` or `KUBECONFIG`).
/// `tls` is (CA, client certificate, client key), all PEM.
fn write_kubeconfig(
    path: &std::path::Path,
    server: &str,
    tls: Option<(&str, &str, &str)>,
) -> anyhow::Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (cluster_extra, user) = match tls {
        Some((ca, cert, key)) => (
            format!("\n    certificate-authority-data: {}", b64(ca)),
            format!(
                "\n    client-certificate-data: {}\n    client-key-data: {}",
                b64(cert),
                b64(key)
            ),
        ),
        None => (String::new(), " {}".to_owned()),
    };
    let content = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}{cluster_extra}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:{user}\n"
    );
    skiff_apiserver::tls::write_private(path, content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
