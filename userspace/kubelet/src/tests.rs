//! The whole kubelet against the real API server (in process) and the fake runtime: node
//! registration and conditions, the lease, pod start order, restarts, termination order.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
};
use skiff_apiserver::testing::LocalServer;
use tokio::task::JoinHandle;

use crate::{
    KubeletConfig,
    fake::{Behavior, FakeRuntime},
    runtime::RuntimeHealth,
};

pub(crate) struct Harness {
    _server: LocalServer,
    pub(crate) client: Client,
    pub(crate) fake: FakeRuntime,
    kubelet: JoinHandle<Result<(), crate::KubeletError>>,
    pub(crate) config: KubeletConfig,
    _dir: TempDir,
}

impl Harness {
    /// Stops the kubelet (as a crash would: its tasks just end).
    async fn stop_kubelet(&mut self) {
        self.kubelet.abort();
        let _ = (&mut self.kubelet).await;
    }

    /// Starts a new kubelet on the same runtime and API.
    fn start_kubelet(&mut self) {
        self.kubelet = tokio::spawn(crate::run_with(
            self.client.clone(),
            self.config.clone(),
            Arc::new(self.fake.clone()),
        ));
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

async fn start(fake: FakeRuntime) -> Harness {
    start_with(fake, |_| {}).await
}

/// [`start`] with the kubelet's configuration adjusted by `adjust`.
pub(crate) async fn start_with(
    fake: FakeRuntime,
    adjust: impl FnOnce(&mut KubeletConfig),
) -> Harness {
    let server = LocalServer::start().await.expect("API server");
    let client = Client::try_from(Config::new(server.url().parse().unwrap())).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "skiff-kubelet-test-{}-{}",
        std::process::id(),
        uuid_ish()
    ));
    let config = KubeletConfig {
        node_name: "n1".into(),
        node_ip: Some("192.0.2.10".parse().unwrap()),
        pod_log_dir: dir.join("pods"),
        root_dir: dir.join("root"),
        runtime_check_interval: Duration::from_millis(50),
        status_update_interval: Duration::from_millis(200),
        sync_interval: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
        // No tmpfs mounts: pods a test leaves behind must not leave mounts behind.
        volume_tmpfs: false,
        // This API server issues no tokens.
        service_account_volume: false,
        ..KubeletConfig::default()
    };
    let mut config = config;
    adjust(&mut config);
    let kubelet = tokio::spawn(crate::run_with(
        client.clone(),
        config.clone(),
        Arc::new(fake.clone()),
    ));
    Harness {
        _server: server,
        client,
        fake,
        kubelet,
        config,
        _dir: TempDir(dir),
    }
}

fn uuid_ish() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub(crate) async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "p", "namespace": "default" },
        "spec": spec,
    }))
    .unwrap()
}

fn ready(n: &Node) -> Option<(String, String, String)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn node_registers_with_capacity_lease_and_truthful_readiness() {
    let h = start(FakeRuntime::new()).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    let node = eventually("node Ready", async || {
        let n = nodes.get_opt("n1").await.unwrap()?;
        (ready(&n)?.0 == "True").then_some(n)
    })
    .await;
    assert_eq!(ready(&node).unwrap().1, "KubeletReady");
    let status = node.status.unwrap();
    let capacity = status.capacity.unwrap();
    assert_eq!(capacity["pods"].0, "110");
    assert!(capacity["cpu"].0.parse::<u32>().unwrap() >= 1);
    assert!(capacity["memory"].0.ends_with("Ki"));
    let addresses = status.addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "192.0.2.10")
    );
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "Hostname" && a.address == "n1")
    );
    let info = status.node_info.unwrap();
    assert_eq!(info.container_runtime_version, "fake://0.1.0");
    assert_eq!(info.kubelet_version, crate::node::KUBELET_VERSION);
    assert_eq!(
        node.metadata.labels.unwrap()["kubernetes.io/hostname"],
        "n1"
    );

    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "kube-node-lease");
    let lease = eventually("lease", async || leases.get_opt("n1").await.unwrap()).await;
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    assert!(spec.renew_time.is_some());
    assert_eq!(
        lease.metadata.owner_references.unwrap()[0].kind,
        "Node",
        "the lease is owned by its Node"
    );

    // The pod CIDR the server assigns reaches the runtime.
    nodes
        .patch(
            "n1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "spec": { "podCIDR": "10.244.3.0/24" } })),
        )
        .await
        .unwrap();
    eventually("UpdateRuntimeConfig", async || {
        h.fake
            .calls()
            .iter()
            .any(|c| c == "UpdateRuntimeConfig 10.244.3.0/24")
            .then_some(())
    })
    .await;

    // The CNI goes away: NotReady, saying so.
    h.fake.set_health(RuntimeHealth {
        runtime_ready: true,
        network_ready: false,
        problems: vec![
            "NetworkReady=false reason:NetworkPluginNotReady message:cni config uninitialized"
                .into(),
        ],
    });
    let (_, reason, message) = eventually("NotReady for the network", async || {
        let r = ready(&nodes.get("n1").await.unwrap())?;
        (r.0 == "False").then_some(r)
    })
    .await;
    assert_eq!(reason, "KubeletNotReady");
    assert!(
        message.starts_with("container runtime network not ready: NetworkReady=false"),
        "{message}"
    );
    // The runtime goes away entirely.
    h.fake.set_down(true);
    let (_, _, message) = eventually("NotReady for the runtime", async || {
        let r = ready(&nodes.get("n1").await.unwrap())?;
        r.2.contains("container runtime is down").then_some(r)
    })
    .await;
    assert!(message.contains("connection refused"), "{message}");
    h.fake.set_down(false);
    h.fake.set_health(RuntimeHealth {
        runtime_ready: true,
        network_ready: true,
        problems: vec![],
    });
    eventually("Ready again", async || {
        (ready(&nodes.get("n1").await.unwrap())?.0 == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn init_containers_run_in_order_then_the_pod_runs_and_reports_status() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    fake.set_behavior("init1", Behavior::Exit(0));
    fake.set_behavior("init2", Behavior::Exit(0));
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let image = "busybox:1.35";
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "initContainers": [
                { "name": "init1", "image": image },
                { "name": "init2", "image": image },
            ],
            "containers": [{ "name": "app", "image": image, "imagePullPolicy": "IfNotPresent" }],
        })),
    )
    .await
    .unwrap();
    let p = eventually("Running", async || {
        let p = pods.get("p").await.unwrap();
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let starts: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("RunPodSandbox") || c.starts_with("StartContainer"))
        .collect();
    assert_eq!(
        starts,
        [
            "RunPodSandbox p",
            "StartContainer init1",
            "StartContainer init2",
            "StartContainer app"
        ]
    );
    // The preloaded image was not pulled.
    assert!(!h.fake.calls().iter().any(|c| c.starts_with("PullImage")));
    let s = p.status.unwrap();
    assert_eq!(s.pod_ip.as_deref(), Some("127.244.0.5"));
    assert_eq!(s.host_ip.as_deref(), Some("192.0.2.10"));
    assert!(s.start_time.is_some());
    let inits = s.init_container_statuses.unwrap();
    assert_eq!(inits.len(), 2);
    for i in &inits {
        let t = i.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    }
    let app = &s.container_statuses.unwrap()[0];
    assert!(app.ready);
    assert!(app.state.as_ref().unwrap().running.is_some());
    assert!(app.container_id.as_deref().unwrap().starts_with("fake://"));
    let conditions = s.conditions.unwrap();
    for kind in ["Initialized", "ContainersReady", "Ready", "PodScheduled"] {
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == kind && c.status == "True"),
            "{kind} in {conditions:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_container_crash_loops_with_growing_restart_count() {
    let fake = FakeRuntime::new();
    fake.set_behavior("app", Behavior::Exit(1));
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "containers": [{ "name": "app", "image": "busybox:1.35", "imagePullPolicy": "Always" }],
        })),
    )
    .await
    .unwrap();
    let mut saw_backoff = false;
    eventually("restartCount 3 with CrashLoopBackOff", async || {
        let p = pods.get("p").await.unwrap();
        let cs = p.status?.container_statuses?.into_iter().next()?;
        if let Some(w) = cs.state.as_ref()?.waiting.as_ref()
            && w.reason.as_deref() == Some("CrashLoopBackOff")
        {
            saw_backoff = true;
            assert_eq!(cs.last_state.as_ref()?.terminated.as_ref()?.exit_code, 1);
        }
        (saw_backoff && cs.restart_count >= 3).then_some(())
    })
    .await;
    // Always pulls each start; the old runs beyond lastState are removed.
    assert!(
        h.fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("PullImage"))
            .count()
            >= 3
    );
    assert!(h.fake.containers_named("app").len() <= 3);
}

#[tokio::test]
async fn restart_policy_never_fails_the_pod_and_stops_its_sandbox() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    fake.set_behavior("app", Behavior::Exit(3));
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "restartPolicy": "Never",
            "containers": [{ "name": "app", "image": "busybox:1.35" }],
        })),
    )
    .await
    .unwrap();
    let p = eventually("Failed", async || {
        let p = pods.get("p").await.unwrap();
        (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(p)
    })
    .await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        3
    );
    eventually("sandbox stopped", async || {
        h.fake
            .calls()
            .iter()
            .any(|c| c.starts_with("StopPodSandbox"))
            .then_some(())
    })
    .await;
    assert_eq!(h.fake.containers_named("app").len(), 1, "never restarted");
}

#[tokio::test]
async fn deletion_runs_pre_stop_then_stops_then_removes_then_deletes_the_object() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "terminationGracePeriodSeconds": 7,
            "containers": [{
                "name": "app",
                "image": "busybox:1.35",
                "lifecycle": { "preStop": { "exec": { "command": ["sh", "-c", "drain"] } } },
            }],
        })),
    )
    .await
    .unwrap();
    eventually("Running", async || {
        let p = pods.get("p").await.unwrap();
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let before = h.fake.calls().len();
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    eventually("the pod object gone", async || {
        pods.get_opt("p").await.unwrap().is_none().then_some(())
    })
    .await;
    let teardown: Vec<String> = h.fake.calls()[before..]
        .iter()
        .filter(|c| {
            ["ExecSync", "StopContainer", "StopPodSandbox", "Remove"]
                .iter()
                .any(|p| c.starts_with(p))
        })
        .cloned()
        .collect();
    assert_eq!(teardown.len(), 5, "{teardown:?}");
    assert_eq!(teardown[0], "ExecSync app sh -c drain");
    // The grace period left after the hook (7 s, less the instant hook).
    assert!(
        teardown[1] == "StopContainer app 7s" || teardown[1] == "StopContainer app 6s",
        "{teardown:?}"
    );
    assert!(teardown[2].starts_with("StopPodSandbox"));
    assert_eq!(teardown[3], "RemoveContainer app");
    assert!(teardown[4].starts_with("RemovePodSandbox"));
    assert_eq!(h.fake.sandbox_count(), 0);
}

fn container_status(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

#[tokio::test]
async fn readiness_probe_gates_ready_and_follows_the_check() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    fake.set_command_result("check-ready", 1);
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "containers": [{
                "name": "app",
                "image": "busybox:1.35",
                "readinessProbe": { "exec": { "command": ["check-ready"] }, "periodSeconds": 1, "failureThreshold": 1 },
            }],
        })),
    )
    .await
    .unwrap();
    eventually("Running, not ready", async || {
        let p = pods.get("p").await.unwrap();
        let cs = container_status(&p)?;
        (p.status?.phase.as_deref() == Some("Running") && !cs.ready).then_some(())
    })
    .await;
    assert!(
        h.fake
            .calls()
            .iter()
            .any(|c| c == "ExecSync app check-ready")
    );
    h.fake.set_command_result("check-ready", 0);
    let p = eventually("ready", async || {
        let p = pods.get("p").await.unwrap();
        container_status(&p)?.ready.then_some(p)
    })
    .await;
    let conditions = p.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    // Failing again takes it out.
    h.fake.set_command_result("check-ready", 1);
    eventually("not ready again", async || {
        (!container_status(&pods.get("p").await.unwrap())?.ready).then_some(())
    })
    .await;
}

#[tokio::test]
async fn startup_probe_holds_liveness_back_then_liveness_failure_restarts() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    fake.set_command_result("started", 1);
    fake.set_command_result("alive", 1);
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "containers": [{
                "name": "app",
                "image": "busybox:1.35",
                "startupProbe": { "exec": { "command": ["started"] }, "periodSeconds": 1, "failureThreshold": 100 },
                "livenessProbe": { "exec": { "command": ["alive"] }, "periodSeconds": 1, "failureThreshold": 1 },
            }],
        })),
    )
    .await
    .unwrap();
    eventually("two startup checks", async || {
        (h.fake
            .calls()
            .iter()
            .filter(|c| *c == "ExecSync app started")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    let calls = h.fake.calls();
    assert!(
        !calls.iter().any(|c| c == "ExecSync app alive"),
        "liveness ran before startup passed: {calls:?}"
    );
    let cs = container_status(&pods.get("p").await.unwrap()).unwrap();
    assert_eq!(cs.restart_count, 0);
    assert!(!cs.ready, "not ready before the startup probe passes");
    assert_eq!(cs.started, Some(false));
    // Started: liveness runs, fails, and the container is restarted.
    h.fake.set_command_result("started", 0);
    eventually("restarted by liveness", async || {
        (container_status(&pods.get("p").await.unwrap())?.restart_count >= 1).then_some(())
    })
    .await;
    let calls = h.fake.calls();
    assert!(calls.iter().any(|c| c == "ExecSync app alive"));
    assert!(calls.iter().any(|c| c.starts_with("StopContainer app")));
}

#[tokio::test]
async fn a_restarted_kubelet_adopts_running_pods_and_removes_those_deleted_meanwhile() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    let mut h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    for name in ["keep", "gone"] {
        let mut p = pod(serde_json::json!({
            "nodeName": "n1",
            "containers": [{ "name": name, "image": "busybox:1.35" }],
        }));
        p.metadata.name = Some(name.into());
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    for name in ["keep", "gone"] {
        eventually("Running", async || {
            let p = pods.get(name).await.unwrap();
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        })
        .await;
    }
    h.stop_kubelet().await;
    // While the kubelet is down, "gone" is force-deleted from the API.
    pods.delete(
        "gone",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = h.fake.calls().len();
    h.start_kubelet();
    eventually("the orphaned sandbox removed", async || {
        (h.fake.sandbox_count() == 1).then_some(())
    })
    .await;
    // Give the new kubelet a few sync rounds: the running pod is adopted as it is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<String> = h.fake.calls()[before..].to_vec();
    assert!(
        !after
            .iter()
            .any(|c| c.starts_with("RunPodSandbox") || c.starts_with("CreateContainer")),
        "{after:?}"
    );
    assert_eq!(h.fake.containers_named("keep").len(), 1);
    assert!(h.fake.containers_named("gone").is_empty());
    let keep = pods.get("keep").await.unwrap();
    assert_eq!(keep.status.unwrap().phase.as_deref(), Some("Running"));
}

fn waiting_reason(p: &Pod) -> Option<String> {
    container_status(p)?.state?.waiting?.reason
}

#[tokio::test]
async fn containers_wait_with_the_kubelet_reasons_and_recover() {
    let fake = FakeRuntime::new();
    fake.set_pull_error(Some("registry unreachable"));
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let named = |name: &str, container: serde_json::Value| {
        let mut p = pod(serde_json::json!({ "nodeName": "n1", "containers": [container] }));
        p.metadata.name = Some(name.into());
        p
    };
    let create = async |p: Pod| {
        pods.create(&PostParams::default(), &p).await.unwrap();
    };
    create(named(
        "never",
        serde_json::json!({ "name": "c", "image": "absent:1", "imagePullPolicy": "Never" }),
    ))
    .await;
    create(named(
        "pull",
        serde_json::json!({ "name": "c", "image": "remote:1" }),
    ))
    .await;
    create(named(
        "config",
        serde_json::json!({
            "name": "c",
            "image": "remote:1",
            "envFrom": [{ "configMapRef": { "name": "settings" } }],
        }),
    ))
    .await;
    let reason_of = async |name: &str| waiting_reason(&pods.get(name).await.unwrap());
    eventually("ErrImageNeverPull", async || {
        (reason_of("never").await.as_deref() == Some("ErrImageNeverPull")).then_some(())
    })
    .await;
    assert!(
        !h.fake.calls().iter().any(|c| c == "PullImage absent:1"),
        "Never must not pull"
    );
    eventually("ImagePullBackOff after ErrImagePull", async || {
        (reason_of("pull").await.as_deref() == Some("ImagePullBackOff")).then_some(())
    })
    .await;
    // The registry comes back: the pull succeeds after the back-off and the pod runs.
    h.fake.set_pull_error(None);
    eventually("pull Running", async || {
        let p = pods.get("pull").await.unwrap();
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    eventually("CreateContainerConfigError", async || {
        (reason_of("config").await.as_deref() == Some("CreateContainerConfigError")).then_some(())
    })
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(h.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": { "name": "settings" },
            "data": { "MODE": "fast" },
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    eventually("config Running", async || {
        let p = pods.get("config").await.unwrap();
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn image_pull_secrets_are_passed_to_the_runtime() {
    let h = start(FakeRuntime::new()).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(h.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "regcred" },
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {
                    ".dockerconfigjson": r#"{"auths":{"127.0.0.1:5000":{"username":"robot","password":"s3cret"}}}"#
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "imagePullSecrets": [{ "name": "regcred" }, { "name": "missing" }],
            "containers": [{ "name": "c", "image": "127.0.0.1:5000/app:v1" }],
        })),
    )
    .await
    .unwrap();
    eventually("Running", async || {
        let p = pods.get("p").await.unwrap();
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let pulls: Vec<String> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("PullImage"))
        .collect();
    assert_eq!(pulls, ["PullImage 127.0.0.1:5000/app:v1 as robot"]);
}

#[tokio::test]
async fn a_container_that_fails_to_start_is_retried_not_left_created() {
    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    fake.set_behavior("app", Behavior::FailStart);
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(serde_json::json!({
            "nodeName": "n1",
            "containers": [{ "name": "app", "image": "busybox:1.35" }],
        })),
    )
    .await
    .unwrap();
    eventually("RunContainerError", async || {
        (waiting_reason(&pods.get("p").await.unwrap()).as_deref() == Some("RunContainerError"))
            .then_some(())
    })
    .await;
    // The failed container was removed, not left in Created.
    assert!(h.fake.calls().iter().any(|c| c == "RemoveContainer app"));
    assert!(h.fake.containers_named("app").len() <= 1);
    h.fake.set_behavior("app", Behavior::Run);
    eventually("Running", async || {
        let p = pods.get("p").await.unwrap();
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test]
async fn volumes_reach_the_runtime_as_mounts_and_configmap_updates_propagate() {
    use std::collections::HashMap;

    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    let h = start_with(fake, |c| c.resync_interval = Duration::from_millis(200)).await;
    let host = h.config.root_dir.parent().unwrap().join("host-data");
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "default");
    let cm = |greeting: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "settings" },
            "data": { "greeting": greeting, "other": "x" },
        }))
        .unwrap()
    };
    cms.create(&PostParams::default(), &cm("hello"))
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": { "name": "creds" },
                "stringData": { "password": "hunter2" },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let created = pods
        .create(
            &PostParams::default(),
            &pod(serde_json::json!({
                "nodeName": "n1",
                "volumes": [
                    { "name": "cfg", "configMap": { "name": "settings" } },
                    { "name": "sec", "secret": { "secretName": "creds", "defaultMode": 0o400 } },
                    { "name": "info", "downwardAPI": { "items": [{ "path": "name", "fieldRef": { "fieldPath": "metadata.name" } }] } },
                    { "name": "scratch", "emptyDir": {} },
                    { "name": "host", "hostPath": { "path": host.display().to_string(), "type": "DirectoryOrCreate" } },
                ],
                "containers": [{
                    "name": "app",
                    "image": "busybox:1.35",
                    "volumeMounts": [
                        { "name": "cfg", "mountPath": "/etc/cfg" },
                        { "name": "cfg", "mountPath": "/etc/greeting", "subPath": "greeting" },
                        { "name": "sec", "mountPath": "/secret" },
                        { "name": "info", "mountPath": "/info" },
                        { "name": "scratch", "mountPath": "/scratch" },
                        { "name": "host", "mountPath": "/host", "readOnly": true },
                    ],
                }],
            })),
        )
        .await
        .unwrap();
    let uid = created.metadata.uid.unwrap();
    eventually("Running", async || {
        running(&pods.get("p").await.unwrap()).then_some(())
    })
    .await;
    let id = h.fake.containers_named("app").pop().unwrap();
    let mounts: HashMap<String, crate::cri::Mount> = h
        .fake
        .container_config(&id)
        .unwrap()
        .mounts
        .into_iter()
        .map(|m| (m.container_path.clone(), m))
        .collect();
    let volumes = h.config.root_dir.join("pods").join(&uid).join("volumes");
    let host_of = |path: &str| std::path::PathBuf::from(&mounts[path].host_path);
    assert_eq!(
        host_of("/etc/cfg"),
        volumes.join("kubernetes.io~configmap/cfg")
    );
    assert!(mounts["/etc/cfg"].readonly);
    assert_eq!(
        std::fs::read_to_string(host_of("/etc/cfg").join("greeting")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(host_of("/etc/greeting")).unwrap(),
        "hello"
    );
    let password = host_of("/secret").join("password");
    assert_eq!(std::fs::read_to_string(&password).unwrap(), "hunter2");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&password).unwrap().permissions().mode() & 0o777,
        0o400
    );
    assert_eq!(
        std::fs::read_to_string(host_of("/info").join("name")).unwrap(),
        "p"
    );
    assert_eq!(
        host_of("/scratch"),
        volumes.join("kubernetes.io~empty-dir/scratch")
    );
    assert!(!mounts["/scratch"].readonly);
    assert_eq!(host_of("/host"), host);
    assert!(mounts["/host"].readonly);
    // No service account volume: this API server issues no tokens (see the containerd test).
    assert!(!mounts.contains_key(crate::pod::volumes::SERVICE_ACCOUNT_MOUNT));

    // An update reaches the running pod's files on its resync, without a restart.
    cms.replace("settings", &PostParams::default(), &cm("bye"))
        .await
        .unwrap();
    let greeting = host_of("/etc/cfg").join("greeting");
    eventually("the new ConfigMap content", async || {
        (std::fs::read_to_string(&greeting).ok()? == "bye").then_some(())
    })
    .await;
    assert_eq!(h.fake.containers_named("app").len(), 1, "not restarted");

    // Deletion removes the pod's volume directory, never the hostPath.
    std::fs::write(host.join("keep"), "x").unwrap();
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    eventually("the pod gone", async || {
        pods.get_opt("p").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!h.config.root_dir.join("pods").join(&uid).exists());
    assert_eq!(std::fs::read_to_string(host.join("keep")).unwrap(), "x");
}

#[tokio::test]
async fn volume_failures_hold_the_pod_with_clear_reasons_and_events() {
    use k8s_openapi::api::core::v1::{ConfigMap, Event};

    let fake = FakeRuntime::new();
    fake.add_image("busybox:1.35");
    let h = start(fake).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let named = |name: &str, spec: serde_json::Value| {
        let mut p = pod(spec);
        p.metadata.name = Some(name.into());
        p
    };
    pods.create(
        &PostParams::default(),
        &named(
            "late",
            serde_json::json!({
                "nodeName": "n1",
                "volumes": [{ "name": "cfg", "configMap": { "name": "later" } }],
                "containers": [{ "name": "c", "image": "busybox:1.35",
                    "volumeMounts": [{ "name": "cfg", "mountPath": "/cfg" }] }],
            }),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &named(
            "hostfile",
            serde_json::json!({
                "nodeName": "n1",
                "volumes": [{ "name": "h", "hostPath": { "path": "/dev/null", "type": "Directory" } }],
                "containers": [{ "name": "c", "image": "busybox:1.35" }],
            }),
        ),
    )
    .await
    .unwrap();
    let waiting = async |name: &str| {
        let cs = container_status(&pods.get(name).await.unwrap())?;
        let w = cs.state?.waiting?;
        Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
    };
    let (reason, message) = eventually("late waits for its ConfigMap", async || {
        waiting("late").await.filter(|(_, m)| !m.is_empty())
    })
    .await;
    assert_eq!(reason, "ContainerCreating");
    assert_eq!(
        message,
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"later\" not found"
    );
    let (_, message) = eventually("hostfile fails its type check", async || {
        waiting("hostfile").await.filter(|(_, m)| !m.is_empty())
    })
    .await;
    assert!(
        message.contains("hostPath type check failed: /dev/null is not a directory"),
        "{message}"
    );
    // (A volumeMount naming no volume is refused by the API server; the kubelet's own check is
    // in pod::volumes.)
    // The failure is an event on the pod.
    let events: Api<Event> = Api::namespaced(h.client.clone(), "default");
    let event = eventually("a FailedMount event", async || {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("FailedMount")
                    && e.involved_object.name.as_deref() == Some("late")
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // Nothing of "late" ran before its volume could be set up.
    let calls = h.fake.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "RunPodSandbox late").count(),
        0,
        "{calls:?}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": { "name": "later" }, "data": { "k": "v" },
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    eventually("late Running", async || {
        running(&pods.get("late").await.unwrap()).then_some(())
    })
    .await;
}
