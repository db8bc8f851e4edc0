//! An in-memory [`Runtime`] for tests: sandboxes and containers with CRI semantics, a log of
//! the calls made, and knobs to make containers exit and the runtime report problems.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::runtime::{ExecOutput, Runtime, RuntimeError, RuntimeHealth, cri};

/// What a container does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Runs until stopped.
    Run,
    /// Exits at once with this code.
    Exit(i32),
    /// `StartContainer` fails (a bad entrypoint, say).
    FailStart,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    sandbox_id: String,
    config: cri::ContainerConfig,
    state: i32,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<String, (cri::PodSandboxConfig, i32, i64)>,
    containers: BTreeMap<String, FakeContainer>,
    images: HashMap<String, String>,
    behaviors: HashMap<String, Behavior>,
    exec_results: HashMap<String, i32>,
    command_results: HashMap<String, i32>,
    calls: Vec<String>,
    health: Option<RuntimeHealth>,
    pull_error: Option<String>,
    down: bool,
    stream_url: Option<String>,
    stats: Vec<cri::ContainerStats>,
}

/// The fake. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn not_found(call: &'static str, what: &str) -> RuntimeError {
    RuntimeError::Call {
        call,
        status: tonic::Status::not_found(format!("{what} not found")),
    }
}

impl FakeRuntime {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep the state usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the image present, as a preloaded one.
    pub fn add_image(&self, image: &str) {
        let mut s = self.lock();
        let id = format!("sha256:{:064x}", s.images.len() + 1);
        s.images.insert(image.to_owned(), id);
    }

    /// Sets what containers named `name` do when started (default: run).
    pub fn set_behavior(&self, name: &str, behavior: Behavior) {
        self.lock().behaviors.insert(name.to_owned(), behavior);
    }

    /// The exit code of exec'd commands in containers named `name` (default 0).
    pub fn set_exec_result(&self, name: &str, code: i32) {
        self.lock().exec_results.insert(name.to_owned(), code);
    }

    /// The exit code of exec'd commands whose words join to `cmd` (takes precedence).
    pub fn set_command_result(&self, cmd: &str, code: i32) {
        self.lock().command_results.insert(cmd.to_owned(), code);
    }

    /// Makes a running container exit with `code`.
    pub fn exit(&self, container_id: &str, code: i32) {
        let mut s = self.lock();
        if let Some(c) = s.containers.get_mut(container_id) {
            c.state = cri::ContainerState::ContainerExited as i32;
            c.exit_code = code;
            c.finished_at = now_nanos();
        }
    }

    /// The URL Exec, Attach and PortForward hand out (a test's fake streaming server); without
    /// one those calls fail as a runtime without streaming would.
    pub fn set_stream_url(&self, url: &str) {
        self.lock().stream_url = Some(url.to_owned());
    }

    /// What ListContainerStats returns.
    pub fn set_stats(&self, stats: Vec<cri::ContainerStats>) {
        self.lock().stats = stats;
    }

    /// Makes image pulls fail with this message (or work again with `None`).
    pub fn set_pull_error(&self, message: Option<&str>) {
        self.lock().pull_error = message.map(str::to_owned);
    }

    /// Overrides what `Status` reports.
    pub fn set_health(&self, health: RuntimeHealth) {
        self.lock().health = Some(health);
    }

    /// Makes every call fail as if the socket were gone (or work again).
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// The calls made so far, e.g. `"StartContainer app"`.
    #[must_use]
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Ids of containers named `name`, oldest first.
    #[must_use]
    pub fn containers_named(&self, name: &str) -> Vec<String> {
        let s = self.lock();
        let mut all: Vec<_> = s
            .containers
            .iter()
            .filter(|(_, c)| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|(id, c)| (c.created_at, id.clone()))
            .collect();
        all.sort();
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// The config container `id` was created with (its CRI mounts, say).
    #[must_use]
    pub fn container_config(&self, id: &str) -> Option<cri::ContainerConfig> {
        self.lock().containers.get(id).map(|c| c.config.clone())
    }

    /// How many sandboxes exist.
    #[must_use]
    pub fn sandbox_count(&self) -> usize {
        self.lock().sandboxes.len()
    }

    fn enter(&self, call: String) -> Result<MutexGuard<'_, State>, RuntimeError> {
        let mut s = self.lock();
        if s.down {
            return Err(RuntimeError::Call {
                call: "any",
                status: tonic::Status::unavailable("connection refused"),
            });
        }
        s.calls.push(call);
        Ok(s)
    }

    fn container_name(s: &State, id: &str) -> String {
        s.containers
            .get(id)
            .and_then(|c| c.config.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default()
    }
}

fn labels_match(labels: &HashMap<String, String>, want: &HashMap<String, String>) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<(String, String), RuntimeError> {
        let _s = self.enter("Version".into())?;
        Ok(("fake".into(), "0.1.0".into()))
    }

    async fn status(&self) -> Result<RuntimeHealth, RuntimeError> {
        let s = self.enter("Status".into())?;
        Ok(s.health.clone().unwrap_or(RuntimeHealth {
            runtime_ready: true,
            network_ready: true,
            problems: Vec::new(),
        }))
    }

    async fn update_pod_cidr(&self, cidr: &str) -> Result<(), RuntimeError> {
        let _s = self.enter(format!("UpdateRuntimeConfig {cidr}"))?;
        Ok(())
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, RuntimeError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut s = self.enter(format!("RunPodSandbox {name}"))?;
        s.next_id += 1;
        let id = format!("sb{}", s.next_id);
        s.sandboxes.insert(
            id.clone(),
            (
                config,
                cri::PodSandboxState::SandboxReady as i32,
                now_nanos(),
            ),
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(format!("StopPodSandbox {id}"))?;
        let now = now_nanos();
        for c in s.containers.values_mut().filter(|c| c.sandbox_id == id) {
            if c.state == cri::ContainerState::ContainerRunning as i32 {
                c.state = cri::ContainerState::ContainerExited as i32;
                c.exit_code = 137;
                c.finished_at = now;
            }
        }
        if let Some(sb) = s.sandboxes.get_mut(id) {
            sb.1 = cri::PodSandboxState::SandboxNotready as i32;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.enter(format!("RemovePodSandbox {id}"))?;
        s.sandboxes.remove(id);
        s.containers.retain(|_, c| c.sandbox_id != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, RuntimeError> {
        let s = self.enter(format!("PodSandboxStatus {id}"))?;
        let (config, state, created_at) = s
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("PodSandboxStatus", id))?;
        Ok(cri::PodSandboxStatus {
            id: id.to_owned(),
            metadata: config.metadata.clone(),
            state: *state,
            created_at: *created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                // Loopback: a network probe a test forgets to point elsewhere stays on this
                // machine (tests never send to pod-range addresses from the root namespace).
                ip: "127.244.0.5".into(),
                additional_ips: Vec::new(),
            }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            ..Default::default()
        })
    }

    async fn list_pod_sandboxes(
        &self,
        filter: cri::PodSandboxFilter,
    ) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let s = self.enter("ListPodSandbox".into())?;
        Ok(s.sandboxes
            .iter()
            .filter(|(_, (c, _, _))| labels_match(&c.labels, &filter.label_selector))
            .map(|(id, (c, state, created_at))| cri::PodSandbox {
                id: id.clone(),
                metadata: c.metadata.clone(),
                state: *state,
                created_at: *created_at,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        _sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut s = self.enter(format!("CreateContainer {name}"))?;
        if !s.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        s.next_id += 1;
        let id = format!("c{}", s.next_id);
        // Creation times must order the attempts even within one clock tick.
        let created_at = now_nanos().max(
            s.containers
                .values()
                .map(|c| c.created_at + 1)
                .max()
                .unwrap_or(0),
        );
        s.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox_id: sandbox_id.to_owned(),
                config,
                state: cri::ContainerState::ContainerCreated as i32,
                created_at,
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        let name = Self::container_name(&s, id);
        drop(s);
        s = self.enter(format!("StartContainer {name}"))?;
        let behavior = s.behaviors.get(&name).copied().unwrap_or(Behavior::Run);
        if behavior == Behavior::FailStart {
            return Err(RuntimeError::Call {
                call: "StartContainer",
                status: tonic::Status::unknown("exec: \"nope\": executable file not found"),
            });
        }
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StartContainer", id))?;
        let now = now_nanos();
        c.started_at = now;
        match behavior {
            Behavior::Run | Behavior::FailStart => {
                c.state = cri::ContainerState::ContainerRunning as i32;
            }
            Behavior::Exit(code) => {
                c.state = cri::ContainerState::ContainerExited as i32;
                c.exit_code = code;
                c.finished_at = now;
            }
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let s = self.lock();
        let name = Self::container_name(&s, id);
        drop(s);
        let mut s = self.enter(format!("StopContainer {name} {}s", timeout.as_secs()))?;
        if let Some(c) = s.containers.get_mut(id)
            && c.state == cri::ContainerState::ContainerRunning as i32
        {
            c.state = cri::ContainerState::ContainerExited as i32;
            c.exit_code = 143;
            c.finished_at = now_nanos();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let s = self.lock();
        let name = Self::container_name(&s, id);
        drop(s);
        let mut s = self.enter(format!("RemoveContainer {name}"))?;
        s.containers.remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: cri::ContainerFilter,
    ) -> Result<Vec<cri::Container>, RuntimeError> {
        let s = self.enter("ListContainers".into())?;
        Ok(s.containers
            .iter()
            .filter(|(_, c)| {
                labels_match(&c.config.labels, &filter.label_selector)
                    && (filter.pod_sandbox_id.is_empty() || c.sandbox_id == filter.pod_sandbox_id)
            })
            .map(|(id, c)| cri::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: String::new(),
                state: c.state,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: String::new(),
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, RuntimeError> {
        let s = self.enter(format!("ContainerStatus {id}"))?;
        let c = s
            .containers
            .get(id)
            .ok_or_else(|| not_found("ContainerStatus", id))?;
        let image = c
            .config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        Ok(cri::ContainerStatus {
            id: id.to_owned(),
            metadata: c.config.metadata.clone(),
            state: c.state,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: s.images.get(&image).cloned().unwrap_or_default(),
            reason: match (c.state, c.exit_code) {
                (2, 0) => "Completed".into(),
                (2, _) => "Error".into(),
                _ => String::new(),
            },
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            log_path: c.config.log_path.clone(),
            ..Default::default()
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let s = self.lock();
        let name = Self::container_name(&s, id);
        drop(s);
        let joined = cmd.join(" ");
        let s = self.enter(format!("ExecSync {name} {joined}"))?;
        Ok(ExecOutput {
            exit_code: s
                .command_results
                .get(&joined)
                .or_else(|| s.exec_results.get(&name))
                .copied()
                .unwrap_or(0),
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }

    async fn exec(&self, req: cri::ExecRequest) -> Result<String, RuntimeError> {
        let s = self.enter(format!("Exec {} {}", req.container_id, req.cmd.join(" ")))?;
        s.stream_url
            .clone()
            .ok_or_else(|| not_found("Exec", "streaming server"))
    }

    async fn attach(&self, req: cri::AttachRequest) -> Result<String, RuntimeError> {
        let s = self.enter(format!("Attach {}", req.container_id))?;
        s.stream_url
            .clone()
            .ok_or_else(|| not_found("Attach", "streaming server"))
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        ports: Vec<i32>,
    ) -> Result<String, RuntimeError> {
        let s = self.enter(format!("PortForward {sandbox_id} {ports:?}"))?;
        s.stream_url
            .clone()
            .ok_or_else(|| not_found("PortForward", "streaming server"))
    }

    async fn list_container_stats(&self) -> Result<Vec<cri::ContainerStats>, RuntimeError> {
        Ok(self.enter("ListContainerStats".to_owned())?.stats.clone())
    }

    async fn image_status(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let s = self.enter(format!("ImageStatus {image}"))?;
        Ok(s.images.get(image).cloned())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        _sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let mut s = self.enter(match &auth {
            Some(a) => format!("PullImage {image} as {}", a.username),
            None => format!("PullImage {image}"),
        })?;
        if let Some(message) = &s.pull_error {
            return Err(RuntimeError::Call {
                call: "PullImage",
                status: tonic::Status::unknown(message.clone()),
            });
        }
        let id = format!("sha256:{:064x}", s.images.len() + 100);
        Ok(s.images.entry(image.to_owned()).or_insert(id).clone())
    }
}
