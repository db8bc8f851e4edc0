//! One task per pod: observe the runtime, carry out the plan, write the status back; on
//! deletion, stop the containers gracefully, remove the sandbox and let the API object go.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{
    Container, Event, EventSource, ObjectReference, Pod, PodStatus, Secret, ServiceAccount,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    auth,
    env::{self, Placement},
    plan::{self, Action, Backoff, Observed, SandboxView, Waiting, running},
    probe::Probes,
    spec::{self, LABEL_POD_UID},
    status,
    volumes::{self, PodVolumes, VolumeError, Volumes, payload::Capacity},
};
use crate::{
    KubeletConfig,
    runtime::{Runtime, RuntimeError, cri},
};

/// What every worker shares.
pub struct Shared<R> {
    pub runtime: Arc<R>,
    pub client: kube::Client,
    pub config: Arc<KubeletConfig>,
    /// The node's address (status.hostIP); filled in by node registration.
    pub host_ip: watch::Receiver<String>,
    /// Container id prefix (`containerd`).
    pub runtime_name: String,
    /// The node's memory, in bytes (OOM scores).
    pub memory_capacity: u64,
    /// Wakes a pod's worker when the relist sees its containers change.
    pub relist: super::relist::Subscribers,
}

/// Errors of one sync; the worker logs them and tries again.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("writing the status of pod {pod}: {source}")]
    Status {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod}: {source}")]
    Delete {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing the volumes of pod {pod}: {source}")]
    Volumes {
        pod: String,
        #[source]
        source: VolumeError,
    },
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn uid_filter(uid: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_POD_UID.to_owned(), uid.to_owned())])
}

/// What `observe` need not ask the runtime again: container statuses (a status changes only
/// with the state `ListContainers` shows) and sandbox IPs (fixed for a sandbox's life).
#[derive(Debug, Default)]
pub struct RuntimeCache {
    statuses: HashMap<String, cri::ContainerStatus>,
    sandbox_ips: HashMap<String, String>,
}

/// Reads the runtime's view of the pod with `uid`.
pub async fn observe<R: Runtime>(
    rt: &R,
    uid: &str,
    cache: &mut RuntimeCache,
) -> Result<Observed, RuntimeError> {
    let sandboxes = rt
        .list_pod_sandboxes(cri::PodSandboxFilter {
            label_selector: uid_filter(uid),
            ..Default::default()
        })
        .await?;
    cache
        .sandbox_ips
        .retain(|id, _| sandboxes.iter().any(|s| &s.id == id));
    let newest = sandboxes
        .iter()
        .max_by_key(|s| (s.metadata.as_ref().map_or(0, |m| m.attempt), s.created_at));
    let sandbox = match newest {
        None => None,
        Some(s) => {
            let ready = s.state == cri::PodSandboxState::SandboxReady as i32;
            let ip = match cache.sandbox_ips.get(&s.id) {
                Some(ip) if ready => ip.clone(),
                _ if ready => {
                    let ip = rt
                        .pod_sandbox_status(&s.id)
                        .await?
                        .network
                        .map(|n| n.ip)
                        .unwrap_or_default();
                    cache.sandbox_ips.insert(s.id.clone(), ip.clone());
                    ip
                }
                _ => String::new(),
            };
            Some(SandboxView {
                id: s.id.clone(),
                ready,
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                ip,
            })
        }
    };
    let listed = rt
        .list_containers(cri::ContainerFilter {
            label_selector: uid_filter(uid),
            ..Default::default()
        })
        .await?;
    cache
        .statuses
        .retain(|id, _| listed.iter().any(|c| &c.id == id));
    let mut containers: HashMap<String, Vec<cri::ContainerStatus>> = HashMap::new();
    let mut current = HashSet::new();
    for c in listed {
        let status = match cache.statuses.get(&c.id) {
            Some(s) if s.state == c.state => s.clone(),
            _ => match rt.container_status(&c.id).await {
                Ok(s) => s,
                // Removed between the list and now.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            },
        };
        cache.statuses.insert(c.id.clone(), status.clone());
        if sandbox.as_ref().is_some_and(|s| s.id == c.pod_sandbox_id) {
            current.insert(c.id.clone());
        }
        let name = status
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        containers.entry(name).or_default().push(status);
    }
    for list in containers.values_mut() {
        list.sort_by_key(|s| {
            std::cmp::Reverse((s.metadata.as_ref().map_or(0, |m| m.attempt), s.created_at))
        });
    }
    Ok(Observed {
        sandbox,
        containers,
        current,
    })
}

pub struct Worker<R> {
    shared: Arc<Shared<R>>,
    backoff: Backoff,
    pull_backoff: Backoff,
    /// When each container's last image pull failed.
    pull_failed: HashMap<String, i64>,
    uid: Option<String>,
    /// Containers whose last start failed, with the waiting reason to show.
    failures: Waiting,
    readiness: HashMap<String, status::Probed>,
    cache: RuntimeCache,
    written: Option<PodStatus>,
    probes: Probes,
    volumes: Volumes,
    /// The volumes as last set up (what containers mount).
    prepared: PodVolumes,
    /// Whether the service account token is mounted (asked of the ServiceAccount once).
    automount: Option<bool>,
    /// The last FailedMount event's message (one event per distinct failure).
    mount_event: Option<String>,
    /// When the volumes were last set up without error, for which version of the pod.
    volumes_synced: Option<(Instant, Option<String>)>,
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl<R: Runtime> Worker<R> {
    pub fn new(shared: Arc<Shared<R>>) -> Self {
        let c = &shared.config;
        Self {
            backoff: Backoff::new(c.backoff_initial, c.backoff_max),
            pull_backoff: Backoff::new(c.backoff_initial, c.backoff_max),
            shared,
            pull_failed: HashMap::new(),
            uid: None,
            failures: Waiting::new(),
            readiness: HashMap::new(),
            cache: RuntimeCache::default(),
            written: None,
            probes: Probes::default(),
            volumes: Volumes::default(),
            prepared: PodVolumes::new(),
            automount: None,
            mount_event: None,
            volumes_synced: None,
        }
    }

    /// Runs until the pod is gone: `pods` carries each new version, `None` once the API
    /// object is gone.
    pub async fn run(mut self, pods: watch::Receiver<Option<Arc<Pod>>>) {
        self.run_loop(pods).await;
        if let Some(uid) = &self.uid {
            self.shared.relist.unsubscribe(uid);
        }
    }

    async fn run_loop(&mut self, mut pods: watch::Receiver<Option<Arc<Pod>>>) {
        loop {
            let pod = pods.borrow_and_update().clone();
            if let Some(p) = &pod {
                self.uid.clone_from(&p.metadata.uid);
            }
            let Some(pod) = pod else {
                // Deleted behind our back (force delete): nothing to wait for.
                loop {
                    let removed = match self.remove_everything(None, Duration::ZERO).await {
                        Ok(()) => self.remove_volumes().map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match removed {
                        Ok(()) => return,
                        Err(e) => warn!(error = %e, "cleaning up a deleted pod; retrying"),
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            let next = if pod.metadata.deletion_timestamp.is_some() {
                match self.terminate(&pod).await {
                    Ok(()) => return,
                    Err(e) => {
                        warn!(pod = key(&pod), error = %e, "terminating; retrying");
                        Duration::from_secs(1)
                    }
                }
            } else {
                match self.sync(&pod).await {
                    Ok(next) => next,
                    Err(e) => {
                        warn!(pod = key(&pod), error = %e, "sync failed; retrying");
                        Duration::from_secs(2)
                    }
                }
            };
            let probes = Arc::clone(&self.probes.changed);
            let relisted = self
                .shared
                .relist
                .subscribe(self.uid.as_deref().unwrap_or_default());
            tokio::select! {
                changed = pods.changed() => if changed.is_err() { return },
                () = probes.notified() => {}
                () = relisted.notified() => {}
                () = tokio::time::sleep(next) => {}
            }
        }
    }

    /// One reconcile pass; returns when to look again.
    pub async fn sync(&mut self, pod: &Pod) -> Result<Duration, SyncError> {
        let with_account = self.with_service_account(pod).await;
        let pod = with_account.as_ref().unwrap_or(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let rt = Arc::clone(&self.shared.runtime);
        let mut requeue = self.shared.config.resync_interval;
        // Volumes first: new pods need them before anything starts, running ones get updated
        // ConfigMaps, Secrets and tokens.
        let volume_error = self.setup_volumes(pod).await;
        if volume_error.is_some() {
            requeue = requeue.min(
                self.shared
                    .config
                    .sync_interval
                    .max(Duration::from_millis(500)),
            );
        }
        if let Some(s) = self
            .volumes
            .next_refresh(jiff::Timestamp::now().as_second())
        {
            requeue = requeue.min(Duration::from_secs(u64::try_from(s).unwrap_or(0).max(1)));
        }
        let mut obs = observe(&*rt, &uid, &mut self.cache).await?;
        // Runs that failed their liveness (or startup) probe are stopped; the plan restarts
        // them per restartPolicy.
        let mut killed = false;
        for (name, id) in running_ids(pod, &obs) {
            if let Some(kind) = self.probes.must_restart(&id) {
                info!(pod = key(pod), container = %name, ?kind, "probe failed; stopping the container");
                rt.stop_container(&id, Duration::from_secs(grace_seconds(pod)))
                    .await
                    .or_else(ignore_not_found)?;
                killed = true;
            }
        }
        if killed {
            obs = observe(&*rt, &uid, &mut self.cache).await?;
        }
        let mut plan = plan::Plan::default();
        // A new pod goes sandbox -> init containers -> containers within one pass where no
        // container has to finish first.
        for _ in 0..4 {
            plan = plan::plan(pod, &obs, &mut self.backoff, now_nanos());
            if volume_error.is_some() {
                // Nothing starts without its volumes (upstream waits in the same way).
                plan.actions.retain(|a| *a == Action::StopPod);
            }
            if plan.actions.is_empty() {
                break;
            }
            let mut blocked = false;
            for action in std::mem::take(&mut plan.actions) {
                blocked |= !self.execute(pod, &obs, action).await?;
            }
            obs = observe(&*rt, &uid, &mut self.cache).await?;
            // A container that could not start waits for the next pass (no retry storm).
            if blocked {
                break;
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let runs: Vec<(&Container, String)> = running_ids(pod, &obs)
            .into_iter()
            .filter_map(|(name, id)| {
                spec.containers
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| (c, id))
            })
            .collect();
        let pod_ip = obs
            .sandbox
            .as_ref()
            .map(|s| s.ip.clone())
            .unwrap_or_default();
        self.probes.reconcile(&rt, &pod_ip, &runs);
        self.readiness = runs
            .iter()
            .map(|(c, id)| {
                (
                    c.name.clone(),
                    status::Probed {
                        started: self.probes.started(c, id),
                        ready: self.probes.ready(c, id),
                    },
                )
            })
            .collect();
        if let Some(r) = plan.requeue {
            requeue = requeue.min(r);
        }
        // Containers that could not start are retried: after their pull back-off, or on the
        // next relist period (a missing ConfigMap may appear any time).
        for name in self.failures.keys() {
            let retry = match self.pull_failed.get(name) {
                Some(&at) => self
                    .pull_backoff
                    .remaining(name, at, now_nanos())
                    .unwrap_or_default(),
                None => self.shared.config.sync_interval,
            };
            requeue = requeue.min(retry.max(self.shared.config.sync_interval));
        }
        let mut waiting = plan.waiting;
        for (name, reason) in &self.failures {
            waiting
                .entry(name.clone())
                .or_insert_with(|| reason.clone());
        }
        if let Some(message) = &volume_error {
            let spec = pod.spec.clone().unwrap_or_default();
            let inits = spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c, "PodInitializing"));
            let mains = spec.containers.iter().map(|c| (c, "ContainerCreating"));
            for (c, reason) in inits.chain(mains) {
                // Only what never ran: a finished or restarting container keeps its state.
                if obs.latest(&c.name).is_none() {
                    waiting
                        .entry(c.name.clone())
                        .or_insert_with(|| (reason.to_owned(), message.clone()));
                }
            }
        }
        self.write_status(pod, &obs, &waiting).await?;
        Ok(requeue)
    }

    async fn write_status(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        waiting: &Waiting,
    ) -> Result<(), SyncError> {
        let mut current = pod.clone();
        if self.written.is_some() {
            current.status.clone_from(&self.written);
        }
        let host_ip = self.shared.host_ip.borrow().clone();
        let ctx = status::Context {
            host_ip,
            runtime_name: &self.shared.runtime_name,
            readiness: &self.readiness,
            now: jiff::Timestamp::now(),
        };
        let new = status::compute(&current, obs, waiting, &ctx);
        if self.written.as_ref() == Some(&new) || pod.status.as_ref() == Some(&new) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let patch = serde_json::json!({ "status": new });
        api.patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| SyncError::Status {
            pod: key(pod),
            source,
        })?;
        debug!(pod = key(pod), phase = ?new.phase, "status written");
        self.written = Some(new);
        Ok(())
    }

    /// Carries out one action; `false` when a container could not start (it waits with a
    /// reason in status).
    async fn execute(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        action: Action,
    ) -> Result<bool, SyncError> {
        let rt = &self.shared.runtime;
        match action {
            Action::StopPod => {
                self.stop_containers(pod, obs, Duration::from_secs(grace_seconds(pod)))
                    .await?;
                if let Some(s) = &obs.sandbox {
                    rt.stop_pod_sandbox(&s.id).await?;
                }
            }
            Action::CreateSandbox { attempt } => {
                let config = spec::sandbox_config(&self.shared.config, pod, attempt);
                let started = Instant::now();
                let id = rt.run_pod_sandbox(config).await?;
                info!(pod = key(pod), sandbox = %id, attempt, took = ?started.elapsed(), "sandbox running");
            }
            Action::Start {
                name,
                init,
                attempt,
            } => {
                let spec = pod.spec.clone().unwrap_or_default();
                let container = if init {
                    spec.init_containers
                        .iter()
                        .flatten()
                        .find(|c| c.name == name)
                } else {
                    spec.containers.iter().find(|c| c.name == name)
                };
                let Some(container) = container else {
                    return Ok(true);
                };
                match self.start(pod, obs, container, attempt).await {
                    Ok(()) => {
                        self.failures.remove(&name);
                    }
                    Err(Start::Waiting(reason, message)) => {
                        warn!(pod = key(pod), container = %name, %reason, %message, "container not started");
                        self.failures.insert(name, (reason, message));
                        return Ok(false);
                    }
                    Err(Start::Runtime(e)) => return Err(e.into()),
                }
            }
        }
        Ok(true)
    }

    async fn start(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        container: &Container,
        attempt: u32,
    ) -> Result<(), Start> {
        let rt = Arc::clone(&self.shared.runtime);
        let Some(sandbox) = &obs.sandbox else {
            return Ok(());
        };
        let sandbox_config = spec::sandbox_config(&self.shared.config, pod, sandbox.attempt);
        let image = container.image.clone().unwrap_or_default();
        self.ensure_image(pod, container, &image, &sandbox_config)
            .await?;
        let placement = Placement {
            node_name: self.shared.config.node_name.clone(),
            host_ip: self.shared.host_ip.borrow().clone(),
            pod_ip: if sandbox.ip.is_empty()
                && pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
            {
                // A host-network pod has the node's address.
                self.shared.host_ip.borrow().clone()
            } else {
                sandbox.ip.clone()
            },
        };
        let envs = env::resolve(&self.shared.client, pod, container, &placement)
            .await
            .map_err(|e| Start::Waiting("CreateContainerConfigError".into(), e.to_string()))?;
        let privileged = container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        let mounts = volumes::container_mounts(container, &self.prepared, &envs, privileged)
            .map_err(|e| Start::Waiting("CreateContainerConfigError".into(), e.to_string()))?;
        let mut config =
            spec::container_config(pod, container, attempt, &envs, self.shared.memory_capacity);
        config.mounts = mounts;
        let id = rt
            .create_container(&sandbox.id, config, sandbox_config)
            .await
            .map_err(|e| Start::Waiting("CreateContainerError".into(), e.to_string()))?;
        // Only the newest run and the one before it (lastState) are kept.
        for old in obs
            .containers
            .get(&container.name)
            .into_iter()
            .flatten()
            .skip(1)
        {
            if let Err(e) = rt.remove_container(&old.id).await
                && !e.is_not_found()
            {
                warn!(container = %old.id, error = %e, "removing an old container");
            }
        }
        if let Err(e) = rt.start_container(&id).await {
            // A container left in Created would look in progress forever: remove it so the
            // next pass tries again.
            if let Err(e) = rt.remove_container(&id).await {
                warn!(container = %id, error = %e, "removing a container that failed to start");
            }
            return Err(Start::Waiting("RunContainerError".into(), e.to_string()));
        }
        info!(pod = key(pod), container = %container.name, attempt, "container started");
        Ok(())
    }

    async fn ensure_image(
        &mut self,
        pod: &Pod,
        container: &Container,
        image: &str,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<(), Start> {
        let rt = Arc::clone(&self.shared.runtime);
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(image).to_owned());
        let present = match policy.as_str() {
            "Always" => false,
            _ => rt
                .image_status(image)
                .await
                .map_err(Start::Runtime)?
                .is_some(),
        };
        if present {
            return Ok(());
        }
        if policy == "Never" {
            return Err(Start::Waiting(
                "ErrImageNeverPull".into(),
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ));
        }
        let key = container.name.clone();
        if let Some(&failed_at) = self.pull_failed.get(&key)
            && self
                .pull_backoff
                .remaining(&key, failed_at, now_nanos())
                .is_some()
        {
            return Err(Start::Waiting(
                "ImagePullBackOff".into(),
                format!("Back-off pulling image \"{image}\""),
            ));
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let secrets_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), namespace);
        let mut secrets = Vec::new();
        for r in pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
        {
            // A missing secret is skipped, as the kubelet does: the pull may not need it.
            match secrets_api.get_opt(&r.name).await {
                Ok(Some(s)) => secrets.push(s),
                Ok(None) => warn!(secret = %r.name, "imagePullSecret not found"),
                Err(e) => warn!(secret = %r.name, error = %e, "reading an imagePullSecret"),
            }
        }
        let credentials = auth::credentials_for(image, &secrets);
        // Each matching credential in turn, else anonymously.
        let attempts: Vec<Option<cri::AuthConfig>> = if credentials.is_empty() {
            vec![None]
        } else {
            credentials.into_iter().map(Some).collect()
        };
        let mut result = Ok(String::new());
        for auth in attempts {
            result = rt.pull_image(image, auth, sandbox_config.clone()).await;
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(_) => {
                self.pull_failed.remove(&key);
                Ok(())
            }
            Err(e) => {
                let now = now_nanos();
                self.pull_backoff.record(&key, now);
                self.pull_failed.insert(key, now);
                Err(Start::Waiting("ErrImagePull".into(), e.to_string()))
            }
        }
    }

    /// Stops the running containers: preStop hooks first, then SIGTERM with what is left of
    /// the grace period (at least 2 s, as the kubelet gives), SIGKILL after it. In parallel.
    async fn stop_containers(
        &self,
        pod: &Pod,
        obs: &Observed,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let rt = &self.shared.runtime;
        let stops = obs
            .containers
            .values()
            .filter_map(|list| list.first())
            .filter(|c| running(c) || c.state == cri::ContainerState::ContainerCreated as i32)
            .map(|c| {
                let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                let pre_stop = spec
                    .containers
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.lifecycle.as_ref())
                    .and_then(|l| l.pre_stop.as_ref())
                    .and_then(|h| h.exec.as_ref())
                    .and_then(|e| e.command.clone());
                async move {
                    let started = Instant::now();
                    if let Some(cmd) = pre_stop
                        && !grace.is_zero()
                        && running(c)
                    {
                        match rt.exec_sync(&c.id, cmd, grace).await {
                            Ok(out) if out.exit_code != 0 => {
                                warn!(container = %name, code = out.exit_code, "preStop hook failed");
                            }
                            Ok(_) => {}
                            Err(e) => warn!(container = %name, error = %e, "preStop hook failed"),
                        }
                    }
                    let left = grace.saturating_sub(started.elapsed());
                    let left = if grace.is_zero() { left } else { left.max(Duration::from_secs(2)) };
                    match rt.stop_container(&c.id, left).await {
                        Err(e) if !e.is_not_found() => Err(e),
                        _ => Ok(()),
                    }
                }
            });
        join_all(stops).await.into_iter().collect()
    }

    /// Stops and removes every container and sandbox of the pod.
    async fn remove_everything(
        &mut self,
        pod: Option<&Pod>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let rt = Arc::clone(&self.shared.runtime);
        let Some(uid) = pod
            .and_then(|p| p.metadata.uid.clone())
            .or_else(|| self.uid.clone())
        else {
            return Ok(());
        };
        let obs = observe(&*rt, &uid, &mut self.cache).await?;
        let empty = Pod::default();
        self.stop_containers(pod.unwrap_or(&empty), &obs, grace)
            .await?;
        let sandboxes = rt
            .list_pod_sandboxes(cri::PodSandboxFilter {
                label_selector: uid_filter(&uid),
                ..Default::default()
            })
            .await?;
        for s in &sandboxes {
            rt.stop_pod_sandbox(&s.id).await.or_else(ignore_not_found)?;
        }
        for c in obs.containers.values().flatten() {
            rt.remove_container(&c.id).await.or_else(ignore_not_found)?;
        }
        for s in &sandboxes {
            rt.remove_pod_sandbox(&s.id)
                .await
                .or_else(ignore_not_found)?;
        }
        Ok(())
    }

    /// Graceful termination, then the API object is deleted for good.
    pub async fn terminate(&mut self, pod: &Pod) -> Result<(), SyncError> {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or_else(|| grace_seconds(pod));
        info!(pod = key(pod), grace, "terminating");
        self.remove_everything(Some(pod), Duration::from_secs(grace))
            .await?;
        // The API object goes only once the volumes are cleaned up (upstream's order).
        self.remove_volumes().map_err(|source| SyncError::Volumes {
            pod: key(pod),
            source,
        })?;
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a new pod of the same name (uid precondition).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(SyncError::Delete {
                pod: key(pod),
                source,
            }),
        }
    }
}

impl<R: Runtime> Worker<R> {
    /// The pod with the kubelet's service account volume when it needs one (see
    /// [`volumes::with_service_account`]); `None` when the pod is mounted as it is.
    async fn with_service_account(&mut self, pod: &Pod) -> Option<Pod> {
        if !self.shared.config.service_account_volume {
            return None;
        }
        let automount = match (
            self.automount,
            pod.spec.as_ref()?.automount_service_account_token,
        ) {
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                let api: Api<ServiceAccount> = Api::namespaced(
                    self.shared.client.clone(),
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                match api.get_opt(volumes::service_account(pod)).await {
                    Ok(sa) => {
                        let a = sa
                            .and_then(|sa| sa.automount_service_account_token)
                            .unwrap_or(true);
                        self.automount = Some(a);
                        a
                    }
                    Err(e) => {
                        debug!(error = %e, "reading the pod's service account");
                        // Asked again next pass, unless this kubelet may not read it.
                        if matches!(&e, kube::Error::Api(s) if s.code == 403) {
                            self.automount = Some(true);
                        }
                        true
                    }
                }
            }
        };
        volumes::with_service_account(pod, automount)
    }

    /// Sets up or refreshes the pod's volumes; the error message (also sent as a FailedMount
    /// event) when one could not be.
    async fn setup_volumes(&mut self, pod: &Pod) -> Option<String> {
        // A finished pod runs nothing again: its volumes stay as they are until deletion.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return None;
        }
        let config = &self.shared.config;
        // Probe results and relists sync a pod often: the API is asked again only for a new
        // pod version, a due token, or twice per resync period.
        let now = jiff::Timestamp::now().as_second();
        let fresh = self.volumes_synced.as_ref().is_some_and(|(at, version)| {
            *version == pod.metadata.resource_version && at.elapsed() < config.resync_interval / 2
        });
        if fresh && self.volumes.next_refresh(now) != Some(0) {
            return None;
        }
        let ctx = volumes::Context {
            root_dir: &config.root_dir,
            pod,
            capacity: Capacity {
                cpus: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
                memory_bytes: self.shared.memory_capacity,
            },
            tmpfs: config.volume_tmpfs,
            cluster_ca: config.cluster_ca.as_deref(),
            now,
        };
        match self.volumes.setup(&self.shared.client, &ctx).await {
            Ok(prepared) => {
                self.prepared = prepared;
                self.mount_event = None;
                self.volumes_synced = Some((Instant::now(), pod.metadata.resource_version.clone()));
                None
            }
            Err(e) => {
                self.volumes_synced = None;
                let message = e.to_string();
                if self.mount_event.as_ref() != Some(&message) {
                    warn!(pod = key(pod), error = %message, "volume setup failed");
                    self.record_event(pod, "FailedMount", &message).await;
                    self.mount_event = Some(message.clone());
                }
                Some(message)
            }
        }
    }

    /// Removes the pod's volume directory (once its containers are gone).
    fn remove_volumes(&self) -> Result<(), VolumeError> {
        match &self.uid {
            Some(uid) => volumes::remove_pod_dir(&self.shared.config.root_dir, uid),
            None => Ok(()),
        }
    }

    /// A Warning event about the pod (best effort: a failure is only logged).
    async fn record_event(&self, pod: &Pod, reason: &str, message: &str) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
        let event = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name),
                namespace: Some(namespace.to_owned()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some("Warning".into()),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.shared.config.node_name.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.shared.config.node_name.clone()),
            first_timestamp: Some(time.clone()),
            last_timestamp: Some(time),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.shared.client.clone(), namespace);
        if let Err(e) = api.create(&kube::api::PostParams::default(), &event).await {
            warn!(error = %e, "recording an event");
        }
    }
}

/// (name, id) of each container's running instance.
fn running_ids(pod: &Pod, obs: &Observed) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| {
            obs.latest(&c.name)
                .filter(|s| running(s))
                .map(|s| (c.name.clone(), s.id.clone()))
        })
        .collect()
}

fn ignore_not_found(e: RuntimeError) -> Result<(), RuntimeError> {
    if e.is_not_found() { Ok(()) } else { Err(e) }
}

fn grace_seconds(pod: &Pod) -> u64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(30)
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent` (the API's defaulting).
fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match name.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

enum Start {
    /// The container cannot start for now; status shows this waiting reason.
    Waiting(String, String),
    Runtime(RuntimeError),
}
