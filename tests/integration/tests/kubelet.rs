//! The kubelet against a real containerd (CRI) of the test's own: a node namespace and cgroup,
//! containerd started inside them with its own root, state, socket and CNI config (Debian's
//! bridge + host-local, all inside the node namespace), images built from busybox-static and
//! imported with ctr. The API server and the kubelet run in process, on a thread inside the
//! node namespace (the API on that namespace's loopback).
//!
//! Network safety: the pod network (10.244.1.0/24) exists only inside the node namespace and
//! the pods' own namespaces; this test sends no packet at all.

mod common;

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::RemoveOnDrop;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
};
use skiff_apiserver::testing::LocalServer;
use skiff_kubelet::{CriRuntime, KubeletConfig, Runtime as _, cri};
use skiff_test_support::{Cgroup, ChildGuard, NetNs, require_root, run, unique_name};

const BUSYBOX: &str = "docker.io/library/busybox:1.35";
const PAUSE: &str = "registry.local/pause:1";
const POD_SUBNET: &str = "10.244.1.0/24";

/// An OCI archive of a busybox-static image (see skiff-kubelet's image module).
fn build_image(work: &Path, name: &str, reference: &str, entrypoint: &[&str]) -> PathBuf {
    skiff_kubelet::image::build_busybox(work, name, reference, entrypoint)
        .unwrap_or_else(|e| panic!("building the {name} image: {e}"))
}

/// Unmounts whatever is still mounted under `dir` (sandbox shm, rootfs, netns files), deepest
/// first, so the directory can be removed after a failed run.
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        skiff_kubelet::cleanup::unmount_under(&self.0);
    }
}

/// Kills what is left in a test cgroup subtree in every hierarchy (v1 controllers and the
/// unified one) and removes the directories, deepest first.
struct PodCgroups(String);

impl Drop for PodCgroups {
    fn drop(&mut self) {
        skiff_kubelet::cleanup::remove_cgroup_trees(&self.0);
    }
}

fn containerd_config(work: &Path) -> PathBuf {
    let config = skiff_kubelet::containerd::config(&skiff_kubelet::containerd::ContainerdPaths {
        dir: &work.join("containerd"),
        socket: &work.join("containerd.sock"),
        cni_bin_dir: Path::new("/usr/lib/cni"),
        cni_conf_dir: &work.join("cni-conf"),
        sandbox_image: PAUSE,
        registry_hosts: None,
    });
    let path = work.join("containerd.toml");
    fs::write(&path, config).unwrap();
    fs::create_dir_all(work.join("cni-conf")).unwrap();
    path
}

/// The pod network: a bridge inside the node namespace, addresses from host-local.
fn write_cni_config(work: &Path) {
    let w = work.display();
    let cni = format!(
        r#"{{"cniVersion":"1.0.0","name":"sktpods","plugins":[
 {{"type":"bridge","bridge":"sktbr0","isGateway":true,"ipMasq":false,
  "ipam":{{"type":"host-local","dataDir":"{w}/cni-state","ranges":[[{{"subnet":"{POD_SUBNET}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}},
 {{"type":"loopback"}}]}}"#
    );
    // Written in place: containerd 1.6 reloads on write events and ignores creations (a file
    // renamed into the directory would go unnoticed).
    fs::create_dir_all(work.join("cni-conf")).unwrap();
    fs::write(work.join("cni-conf/10-pods.conflist"), cni).unwrap();
}

fn pod(name: &str, command: &[&str], policy: &str) -> Pod {
    pod_with(name, command, policy, serde_json::json!({}))
}

/// A busybox pod; `extra` adds fields to its container (probes).
fn pod_with(name: &str, command: &[&str], policy: &str, extra: serde_json::Value) -> Pod {
    let mut value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "nodeName": "n1",
            "restartPolicy": policy,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "env": [{ "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }],
                "resources": { "limits": { "memory": "64Mi", "cpu": "500m" } }
            }]
        }
    });
    let container = value["spec"]["containers"][0].as_object_mut().unwrap();
    for (k, v) in extra.as_object().unwrap() {
        container.insert(k.clone(), v.clone());
    }
    serde_json::from_value(value).unwrap()
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn container_status(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .clone()
}

async fn sandboxes_of(rt: &CriRuntime, uid: &str) -> Vec<cri::PodSandbox> {
    rt.list_pod_sandboxes(cri::PodSandboxFilter {
        label_selector: HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid.to_owned())]),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn kubelet_runs_restarts_and_removes_pods_through_containerd() {
    require_root();
    let work = std::env::temp_dir().join(unique_name("kubelet"));
    fs::create_dir_all(&work).unwrap();
    // Drop order (reverse of declaration): containerd dies, pods' cgroups are emptied,
    // mounts go, then the directory, the cgroup and the namespace.
    let _dir = RemoveOnDrop(work.clone());
    let node = NetNs::new("kub");
    let cgroup = Cgroup::new("kub");
    let _mounts = UnmountUnder(work.clone());
    // Pods' cgroups live inside the node's cgroup2 subtree (and at the same path in every v1
    // hierarchy on these hybrid machines).
    let pod_cgroup_root = format!(
        "/{}/pods",
        cgroup.path().file_name().unwrap().to_string_lossy()
    );
    // Removes the node's directories in the v1 hierarchies too (runc made them there).
    let _pod_cgroups = PodCgroups(
        cgroup
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    );

    let (containerd, socket) = start_containerd(&node, &cgroup, &work);

    let kubelet_config = KubeletConfig {
        node_name: "n1".into(),
        runtime_endpoint: socket.clone(),
        cgroup_root: pod_cgroup_root.clone(),
        pod_log_dir: work.join("pods"),
        root_dir: work.join("kubelet"),
        // The in-process API server issues no tokens (the volumes test below uses a real one).
        service_account_volume: false,
        ..KubeletConfig::default()
    };
    let _log = LogOnPanic(work.join("containerd.log"));
    let work_dir = work.clone();
    node.run(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario(kubelet_config, socket, work_dir));
    });
    drop(containerd);
}

/// Prints containerd's log when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "containerd log:\n{}",
                fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

/// The API server and kubelet run here, inside the node namespace.
async fn scenario(config: KubeletConfig, socket: PathBuf, work: PathBuf) {
    let server = LocalServer::start().await.expect("starting the API server");
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let cgroup_root = config.cgroup_root.clone();
    let kubelet = tokio::spawn(skiff_kubelet::run(client.clone(), config));
    steps(client, socket, &work, &cgroup_root).await;
    kubelet.abort();
}

async fn steps(client: Client, socket: PathBuf, work: &Path, cgroup_root: &str) {
    let rt = CriRuntime::new(socket);
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // No CNI config yet: the node registers NotReady and says why.
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| {
                (
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
    };
    let (status, reason, message) =
        wait_for("node n1 registered", Duration::from_secs(30), async || {
            ready(&nodes.get_opt("n1").await.unwrap()?)
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "KubeletNotReady")
    );
    assert!(
        message.contains("network not ready") && message.contains("NetworkReady=false"),
        "{message}"
    );
    // With the CNI config in place it turns Ready.
    write_cni_config(work);
    let became = Instant::now();
    let node = wait_for("node n1 Ready", Duration::from_secs(30), async || {
        let n = nodes.get_opt("n1").await.unwrap()?;
        (ready(&n)?.0 == "True").then_some(n)
    })
    .await;
    eprintln!(
        "node Ready {:?} after the CNI config appeared",
        became.elapsed()
    );
    let status = node.status.unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "110");
    let info = status.node_info.unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{info:?}"
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let lease = wait_for("the node lease", Duration::from_secs(15), async || {
        leases.get_opt("n1").await.unwrap()
    })
    .await;
    assert_eq!(lease.spec.unwrap().lease_duration_seconds, Some(40));

    // A pod starts: Running with an IP from the CNI range and a containerd container id.
    let created = Instant::now();
    let p = pods
        .create(
            &PostParams::default(),
            &pod("sleeper", &["sleep", "3600"], "Always"),
        )
        .await
        .unwrap();
    let uid = p.metadata.uid.clone().unwrap();
    let running = wait_for("sleeper Running", Duration::from_secs(30), async || {
        let p = pods.get("sleeper").await.unwrap();
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let latency = created.elapsed();
    eprintln!("pod start latency (create -> Running): {latency:?}");
    let s = running.status.unwrap();
    let ip = s.pod_ip.clone().expect("a pod IP");
    assert!(
        ip.starts_with("10.244.1."),
        "pod IP {ip} outside {POD_SUBNET}"
    );
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert!(
        cs.container_id
            .as_deref()
            .unwrap()
            .starts_with("containerd://"),
        "{cs:?}"
    );
    assert!(!cs.image_id.is_empty(), "{cs:?}");
    assert!(cs.state.as_ref().unwrap().running.is_some(), "{cs:?}");
    assert_eq!(cs.restart_count, 0);
    assert!(
        s.conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    assert_eq!(sandboxes_of(&rt, &uid).await.len(), 1);
    // The env var from a fieldRef, seen from inside the container through ExecSync.
    let id = cs
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("containerd://");
    let out = rt
        .exec_sync(
            id,
            vec!["sh".into(), "-c".into(), "echo $POD".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sleeper");
    let out = rt
        .exec_sync(
            id,
            vec!["cat".into(), "/proc/self/cgroup".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    // runc (cgroupfs driver) also places the container in the cgroup2 hierarchy at the same
    // path: under the node's subtree, where the socket LB is attached.
    let unified = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .expect("a cgroup2 line");
    assert_eq!(unified, format!("{cgroup_root}/pod{uid}/{id}"));
    // Limits reach the cgroup under the configured root.
    let limit = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup_root.trim_start_matches('/'))
        .join(format!("pod{uid}"))
        .join(id)
        .join("memory.limit_in_bytes");
    assert_eq!(
        fs::read_to_string(&limit)
            .unwrap_or_else(|e| panic!("{}: {e}", limit.display()))
            .trim(),
        (64 * 1024 * 1024).to_string()
    );

    // Probes over the pod network, from the kubelet in the node namespace to the pod IP:
    // readiness through httpGet, liveness through tcpSocket.
    let created = Instant::now();
    let web = pods
        .create(
            &PostParams::default(),
            &pod_with(
                "web",
                &["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"],
                "Always",
                serde_json::json!({
                    "readinessProbe": { "httpGet": { "path": "/healthz", "port": 8080 }, "periodSeconds": 1 },
                    "livenessProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 3 },
                }),
            ),
        )
        .await
        .unwrap();
    let web_uid = web.metadata.uid.clone().unwrap();
    wait_for("web Ready", Duration::from_secs(30), async || {
        let p = pods.get("web").await.unwrap();
        let ready = p
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
    eprintln!(
        "web pod (httpGet readiness) create -> Ready: {:?}",
        created.elapsed()
    );
    // Readiness follows the check: without the file, httpd answers 404 and the pod turns
    // unready; the liveness check (the port) keeps passing, so nothing restarts.
    let web_cs = container_status(&pods.get("web").await.unwrap());
    let web_id = web_cs
        .container_id
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    rt.exec_sync(
        &web_id,
        vec!["rm".into(), "/www/healthz".into()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    wait_for("web unready", Duration::from_secs(10), async || {
        let cs = container_status(&pods.get("web").await.unwrap());
        (!cs.ready).then_some(())
    })
    .await;
    assert_eq!(
        container_status(&pods.get("web").await.unwrap()).restart_count,
        0
    );

    // A container that keeps failing: restarts, then CrashLoopBackOff.
    let crash = pods
        .create(
            &PostParams::default(),
            &pod("crasher", &["sh", "-c", "echo boom; exit 1"], "Always"),
        )
        .await
        .unwrap();
    let crash_uid = crash.metadata.uid.clone().unwrap();
    let mut saw_backoff = false;
    wait_for(
        "crasher restarted twice in CrashLoopBackOff",
        Duration::from_secs(60),
        async || {
            let p = pods.get("crasher").await.unwrap();
            let cs = p.status?.container_statuses?.into_iter().next()?;
            let waiting = cs
                .state
                .as_ref()?
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone());
            if waiting.as_deref() == Some("CrashLoopBackOff") {
                saw_backoff = true;
                let last = cs.last_state.as_ref()?.terminated.as_ref()?;
                assert_eq!(last.exit_code, 1);
            }
            (saw_backoff && cs.restart_count >= 2).then_some(())
        },
    )
    .await;

    // Each run's output is in its CRI log file under the pod's log directory.
    let log = work
        .join("pods")
        .join(format!("default_crasher_{crash_uid}"))
        .join("main/0.log");
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(text.contains(" stdout F boom"), "{text}");

    // Deletion: containers stopped, sandbox removed, then the API object goes.
    for (name, uid) in [
        ("sleeper", &uid),
        ("web", &web_uid),
        ("crasher", &crash_uid),
    ] {
        let deleted = Instant::now();
        pods.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for(
            &format!("{name} gone from the API"),
            Duration::from_secs(30),
            async || pods.get_opt(name).await.unwrap().is_none().then_some(()),
        )
        .await;
        eprintln!("{name}: delete -> gone in {:?}", deleted.elapsed());
        assert!(
            sandboxes_of(&rt, uid).await.is_empty(),
            "{name}'s sandbox is left"
        );
        let containers = rt
            .list_containers(cri::ContainerFilter {
                label_selector: HashMap::from([("io.kubernetes.pod.uid".to_owned(), uid.clone())]),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            containers.is_empty(),
            "{name}'s containers are left: {containers:?}"
        );
    }
}

/// The claims of a JWT (unverified: the API server's own tests check signatures).
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Volumes through a real containerd: a ConfigMap (updated while the pod runs), the service
/// account volume the kubelet adds (a token bound to the pod), a projected token with an
/// audience, a Memory emptyDir (tmpfs with its size limit); all removed with the pod.
///
/// The control plane is a real `skiff server` (TLS, TokenRequest) on the root namespace's
/// loopback; the kubelet runs on this thread in the root namespace too (it talks only to that
/// loopback address and to containerd's socket), containerd and the pods in the node
/// namespace. No packet goes anywhere else.
#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn kubelet_mounts_configmaps_and_projected_tokens_through_containerd() {
    require_root();
    let work = std::env::temp_dir().join(unique_name("kubvol"));
    fs::create_dir_all(&work).unwrap();
    let _dir = RemoveOnDrop(work.clone());
    let node = NetNs::new("kvl");
    let cgroup = Cgroup::new("kvl");
    let _mounts = UnmountUnder(work.clone());
    let cgroup_name = cgroup
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let pod_cgroup_root = format!("/{cgroup_name}/pods");
    let _pod_cgroups = PodCgroups(cgroup_name);
    let cp = common::ControlPlane::start_secure();

    write_cni_config(&work);
    let (containerd, socket) = start_containerd(&node, &cgroup, &work);
    let kubelet_config = KubeletConfig {
        node_name: "n1".into(),
        node_ip: Some("127.0.0.1".parse().unwrap()),
        runtime_endpoint: socket.clone(),
        cgroup_root: pod_cgroup_root,
        pod_log_dir: work.join("pods"),
        root_dir: work.join("kubelet"),
        resync_interval: Duration::from_secs(2),
        cluster_ca: Some(fs::read_to_string(cp.dir.join("tls/ca.crt")).unwrap()),
        ..KubeletConfig::default()
    };
    let ca = kubelet_config.cluster_ca.clone().unwrap();
    let _log = LogOnPanic(work.join("containerd.log"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&cp.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        let root = kubelet_config.root_dir.clone();
        let kubelet = tokio::spawn(skiff_kubelet::run(client.clone(), kubelet_config));
        volume_steps(client, socket, &work, &root, &ca).await;
        kubelet.abort();
    });
    drop(rt);
    drop(containerd);
}

async fn volume_steps(client: Client, socket: PathBuf, work: &Path, root: &Path, ca: &str) {
    use k8s_openapi::api::core::v1::ConfigMap;

    let rt = CriRuntime::new(socket);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cm = |greeting: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "settings" },
            "data": { "greeting": greeting },
        }))
        .unwrap()
    };
    cms.create(&PostParams::default(), &cm("hello"))
        .await
        .unwrap();
    let spec: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "vols", "namespace": "default" },
        "spec": {
            "nodeName": "n1",
            "terminationGracePeriodSeconds": 2,
            "volumes": [
                { "name": "cfg", "configMap": { "name": "settings" } },
                { "name": "vault", "projected": { "sources": [
                    { "serviceAccountToken": { "audience": "vault", "expirationSeconds": 3600, "path": "token" } },
                ] } },
                { "name": "mem", "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } },
            ],
            "containers": [{
                "name": "main",
                "image": BUSYBOX,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "cat /etc/cfg/greeting; echo; exec sleep 3600"],
                "volumeMounts": [
                    { "name": "cfg", "mountPath": "/etc/cfg" },
                    { "name": "vault", "mountPath": "/var/run/secrets/vault" },
                    { "name": "mem", "mountPath": "/scratch" },
                ],
            }],
        },
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &spec).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let running = wait_for("vols Running", Duration::from_secs(60), async || {
        let p = pods.get("vols").await.unwrap();
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let id = container_status(&running)
        .container_id
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    let exec = async |script: &str| {
        let out = rt
            .exec_sync(
                &id,
                vec!["sh".into(), "-c".into(), script.into()],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        (
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    assert_eq!(exec("cat /etc/cfg/greeting").await, (0, "hello".into()));
    // What the container printed at start, in its log.
    let log = work
        .join("pods")
        .join(format!("default_vols_{uid}"))
        .join("main/0.log");
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(text.contains(" stdout F hello"), "{text}");
    // The service account volume: a token bound to this pod, and the namespace.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        exec(&format!("cat {sa}/namespace")).await,
        (0, "default".into())
    );
    // No kube-root-ca.crt ConfigMap in this cluster: the CA the kubelet was given.
    assert_eq!(
        exec(&format!("cat {sa}/ca.crt")).await,
        (0, ca.trim().to_owned())
    );
    let (code, token) = exec(&format!("cat {sa}/token")).await;
    assert_eq!(code, 0);
    let claims = jwt_claims(&token);
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "vols", "{claims}");
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        uid.as_str(),
        "{claims}"
    );
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["name"], "default",
        "{claims}"
    );
    let (code, vault) = exec("cat /var/run/secrets/vault/token").await;
    assert_eq!(code, 0);
    let claims = jwt_claims(&vault);
    assert!(
        claims["aud"] == "vault" || claims["aud"] == serde_json::json!(["vault"]),
        "{claims}"
    );
    // API volumes are read-only in the container; the Memory emptyDir is a tmpfs of 1 MiB.
    assert_ne!(exec("echo x > /etc/cfg/new").await.0, 0);
    let (_, mounts) = exec("grep ' /scratch ' /proc/mounts").await;
    assert!(
        mounts.contains("tmpfs") && mounts.contains("size=1024k"),
        "{mounts}"
    );
    assert_eq!(exec("echo x > /scratch/f && cat /scratch/f").await.1, "x");

    // The ConfigMap changes: the running container sees the new content (atomically
    // swapped on the kubelet's resync), without a restart.
    let updated = Instant::now();
    cms.replace("settings", &PostParams::default(), &cm("bye"))
        .await
        .unwrap();
    wait_for(
        "the new greeting inside the container",
        Duration::from_secs(30),
        async || (exec("cat /etc/cfg/greeting").await.1 == "bye").then_some(()),
    )
    .await;
    eprintln!(
        "ConfigMap update -> seen in the container: {:?}",
        updated.elapsed()
    );
    assert_eq!(
        container_status(&pods.get("vols").await.unwrap()).restart_count,
        0
    );

    // Deletion: the pod's volume directory and its tmpfs mounts go.
    pods.delete("vols", &DeleteParams::default()).await.unwrap();
    wait_for("vols gone", Duration::from_secs(30), async || {
        pods.get_opt("vols").await.unwrap().is_none().then_some(())
    })
    .await;
    let pod_dir = root.join("pods").join(&uid);
    assert!(!pod_dir.exists(), "{} is left", pod_dir.display());
    let prefix = pod_dir.display().to_string();
    let left: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&prefix))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

/// Builds the busybox and pause images, starts containerd inside `node` and `cgroup` with the
/// configuration under `work`, waits for its socket and imports the images; returns containerd
/// (stopped on drop) and its socket.
fn start_containerd(node: &NetNs, cgroup: &Cgroup, work: &Path) -> (ChildGuard, PathBuf) {
    let busybox = build_image(work, "busybox", BUSYBOX, &[]);
    let pause = build_image(work, "pause", PAUSE, &["/bin/sleep", "2147483647"]);
    let config = containerd_config(work);
    let log = fs::File::create(work.join("containerd.log")).unwrap();
    let mut cmd = node.command_in_cgroup(cgroup, "containerd");
    cmd.arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log);
    let containerd = ChildGuard::spawn(cmd, "containerd");
    let socket = work.join("containerd.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "containerd did not start: {}",
            fs::read_to_string(work.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sock = socket.display().to_string();
    for archive in [&busybox, &pause] {
        run(
            "ctr",
            &[
                "--address",
                &sock,
                "-n",
                "k8s.io",
                "images",
                "import",
                &archive.display().to_string(),
            ],
        );
    }
    (containerd, socket)
}
