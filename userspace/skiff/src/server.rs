//! `skiff server`: the control plane (API server and its store) as one process.
//!
//! Lifecycle: parse and check the configuration (exit 64 when it is wrong), open the store and
//! bind the listener (after which nothing is expected to fail), serve, and on SIGINT/SIGTERM
//! stop accepting, drain in-flight requests for a bounded time, and exit.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use skiff_apiserver::{
    ApiServer, Config, KubernetesEndpoint,
    authn::Authenticator,
    authz::Authorizer,
    kubelet::{self, KubeletClient},
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

#[derive(Args, Debug, Clone)]
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
    /// The address pods reach this API server by: published as the `kubernetes` Service's
    /// endpoint, with the port of --listen. Without it the endpoint is the Service's own address,
    /// which every node's agent answers by forwarding to the server it is joined to (so the API
    /// server may listen on loopback only, and each node uses its own server).
    #[arg(long)]
    pub advertise_address: Option<std::net::Ipv4Addr>,
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
    /// Run only the API server: no controllers (nothing reconciles Deployments, Services'
    /// endpoints, ...). For debugging the API itself.
    #[arg(long)]
    pub disable_controllers: bool,
    /// Run no scheduler: pods stay Pending unless another scheduler binds them.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// How long the controllers' leader Lease lasts without renewal: another server takes over
    /// this long after the leader dies.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// A node whose kubelet stopped renewing its Lease for this long becomes NotReady (Unknown).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// Pod addresses of the cluster: each node gets a subnet of it for its pods.
    #[arg(long, default_value = "10.244.0.0/16", value_parser = parse_cidr)]
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    /// The prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(8..=30))]
    pub node_cidr_mask_size: u8,
}

fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    skiff_controllers::nodeipam::parse_cidr(s)
        .ok_or_else(|| format!("{s:?} is not an IPv4 network like 10.244.0.0/16"))
}

/// `90s`, `2m`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s, 2m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("the duration must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
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
    // The API server's client certificate for kubelets (logs, exec, proxy, metrics), renewed
    // like the other leaves; none in the insecure loopback mode, where those answer 503.
    let kubelet = if args.insecure_loopback {
        None
    } else {
        let pki = Arc::new(Pki::load_or_create(&args.data_dir.join("tls"))?);
        let (leaf, _) = pki.ensure("kubelet-client", &kubelet::client_spec())?;
        let client = Arc::new(KubeletClient::new(pki.ca_pem(), &leaf)?);
        tokio::spawn(renew_kubelet_client(pki, Arc::clone(&client)));
        Some(client)
    };
    let config = Config {
        minor: args.kubernetes_minor,
        kubelet,
        kubernetes_endpoint: match args.advertise_address {
            Some(ip) => {
                KubernetesEndpoint::Advertised(std::net::SocketAddrV4::new(ip, args.listen.port()))
            }
            None => KubernetesEndpoint::NodeLocal,
        },
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
        let components = Arc::new(Components {
            pki: None,
            url: local_url("http", addr),
        });
        start_components(&components, args);
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
        let components = Arc::new(Components {
            pki: Some(Arc::clone(&pki)),
            url: local_url("https", addr),
        });
        start_components(&components, args);
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

/// How the server's own components (controllers, scheduler) reach its API: over loopback, with
/// client certificates from the cluster CA (none in the insecure loopback mode).
struct Components {
    pki: Option<Arc<Pki>>,
    url: String,
}

impl Components {
    /// A client authenticated as `user` (in `groups`), and how long its certificate may be used
    /// before it must be reissued (`None`: forever).
    async fn client(
        &self,
        name: &str,
        user: &str,
    ) -> anyhow::Result<(kube::Client, Option<Duration>)> {
        let Some(pki) = &self.pki else {
            let config = kube::Config::new(self.url.parse().context("the API server URL")?);
            return Ok((kube::Client::try_from(config)?, None));
        };
        let spec = LeafSpec {
            common_name: user.into(),
            organizations: Vec::new(),
            sans: Vec::new(),
            server: false,
            client: true,
        };
        let (leaf, _) = pki.ensure(name, &spec)?;
        let client =
            client_from_pem(&self.url, pki.ca_pem(), &leaf.cert_pem, &leaf.key_pem, user).await?;
        let renew_at = leaf.not_after - time::Duration::seconds(RENEW_BEFORE_SECS);
        let left = renew_at - time::OffsetDateTime::now_utc();
        let left = Duration::from_secs(u64::try_from(left.whole_seconds()).unwrap_or(0).max(60));
        Ok((client, Some(left)))
    }
}

/// A kube client for `url` trusting the CA `ca` and authenticating with a bearer token.
pub async fn client_from_token(url: &str, ca: &str, token: &str) -> anyhow::Result<kube::Client> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: bootstrap\ncurrent-context: skiff\nusers:\n- name: bootstrap\n  user:\n    token: {token}\n",
        b64(ca)
    );
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&yaml).context("reading the generated kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("building the client configuration")?;
    Ok(kube::Client::try_from(config)?)
}

/// A kube client for `url` trusting the CA `ca` and authenticating with a client certificate.
pub async fn client_from_pem(
    url: &str,
    ca: &str,
    cert: &str,
    key: &str,
    user: &str,
) -> anyhow::Result<kube::Client> {
    let yaml = kubeconfig_yaml(url, Some((ca, cert, key)), user);
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&yaml).context("reading the generated kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("building the client configuration")?;
    Ok(kube::Client::try_from(config)?)
}

/// Renew component certificates this long before they expire (as the serving certificate).
const RENEW_BEFORE_SECS: i64 = skiff_apiserver::tls::RENEW_BEFORE.as_secs() as i64;

fn local_url(scheme: &str, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{host}:{}", addr.port())
}

/// A unique name for this server among its peers: host name and a random suffix.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// The controllers and the scheduler, each leader-elected on its own Lease.
fn start_components(components: &Arc<Components>, args: &ServerArgs) {
    if !args.disable_controllers {
        tokio::spawn(controller_manager(Arc::clone(components), args.clone()));
    }
    if !args.disable_scheduler {
        let lease = args.leader_elect_lease_duration;
        tokio::spawn(elected(
            Arc::clone(components),
            Component {
                lease: "kube-scheduler",
                cert: "scheduler",
                user: "system:kube-scheduler",
            },
            lease,
            |client| skiff_scheduler::run(client, skiff_scheduler::Options::default()),
        ));
    }
}

/// A control-plane component: the Lease it is elected on and the identity it runs as.
#[derive(Clone, Copy)]
struct Component {
    lease: &'static str,
    cert: &'static str,
    user: &'static str,
}

/// Runs `work` while this server holds the component's Lease (several servers may run side by
/// side), with a client rebuilt whenever its certificate is due for renewal.
async fn elected<F, Fut>(
    components: Arc<Components>,
    component: Component,
    lease: Duration,
    work: F,
) where
    F: Fn(kube::Client) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let client = loop {
        match components.client(component.cert, component.user).await {
            Ok((client, _)) => break client,
            Err(e) => {
                warn!(component = component.lease, error = %format!("{e:#}"), "building the client; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let election = skiff_controllers::leader::Election::with_lease_duration(
        component.lease,
        &identity(),
        lease,
    );
    skiff_controllers::leader::run_elected(client, election, move || {
        let components = Arc::clone(&components);
        let work = work.clone();
        async move {
            loop {
                match components.client(component.cert, component.user).await {
                    Ok((client, valid)) => {
                        let valid = valid.unwrap_or(Duration::MAX);
                        tokio::select! {
                            () = work(client) => warn!(component = component.lease, "stopped; restarting"),
                            () = tokio::time::sleep(valid) => info!(component = component.lease, "certificate due for renewal; restarting"),
                        }
                    }
                    Err(e) => warn!(component = component.lease, error = %format!("{e:#}"), "building the client"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    })
    .await;
}

/// The controllers, with the cluster CA's signer for certificate requests.
async fn controller_manager(components: Arc<Components>, args: ServerArgs) {
    let signer = components.pki.clone().map(|pki| {
        skiff_controllers::certificates::Signer(Arc::new(
            move |pem: &str, usages: &[&str], lifetime| {
                pki.sign_request(pem, usages, lifetime)
                    .map_err(|e| e.to_string())
            },
        ))
    });
    let options = skiff_controllers::Options {
        node_monitor_grace: args.node_monitor_grace_period,
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask: args.node_cidr_mask_size,
        root_ca: components.pki.as_ref().map(|pki| pki.ca_pem().to_owned()),
        signer,
        ..skiff_controllers::Options::default()
    };
    let component = Component {
        lease: "kube-controller-manager",
        cert: "controller-manager",
        user: "system:kube-controller-manager",
    };
    elected(
        components,
        component,
        args.leader_elect_lease_duration,
        move |client| skiff_controllers::run(client, options.clone()),
    )
    .await;
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

/// Renews the kubelet client certificate well before it expires, without a restart.
async fn renew_kubelet_client(pki: Arc<Pki>, client: Arc<KubeletClient>) {
    loop {
        tokio::time::sleep(RENEW_CHECK).await;
        match pki.ensure("kubelet-client", &kubelet::client_spec()) {
            Ok((leaf, true)) => match client.replace(&leaf) {
                Ok(()) => {
                    info!(expires = %leaf.not_after, "renewed the kubelet client certificate");
                }
                Err(e) => warn!(error = %e, "loading the renewed kubelet client certificate"),
            },
            Ok((_, false)) => {}
            Err(e) => warn!(error = %e, "renewing the kubelet client certificate; retrying later"),
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
    let content = kubeconfig_yaml(server, tls, "admin");
    skiff_apiserver::tls::write_private(path, content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn kubeconfig_yaml(server: &str, tls: Option<(&str, &str, &str)>, user_name: &str) -> String {
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
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}{cluster_extra}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: {user_name}\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: {user_name}\n  user:{user}\n"
    )
}
