//! The container runtime as the kubelet sees it: a small [`Runtime`] trait over the CRI v1
//! RuntimeService and ImageService, the real gRPC client ([`CriRuntime`]), and the CRI types it
//! speaks (re-exported from k8s-cri).

use std::{future::Future, path::PathBuf, time::Duration};

use hyper_util::rt::TokioIo;
pub use k8s_cri::v1 as cri;
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// A failed runtime call.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime answered a call with an error.
    #[error("CRI {call}: {status}")]
    Call {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// The runtime's answer lacked a field the call must return.
    #[error("CRI {call}: the response has no {field}")]
    Incomplete {
        call: &'static str,
        field: &'static str,
    },
}

impl RuntimeError {
    /// Whether the runtime says the object does not exist (already removed).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// What the runtime reports about itself (`Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHealth {
    pub runtime_ready: bool,
    pub network_ready: bool,
    /// `reason: message` of each condition that is not true, for the Node's Ready message.
    pub problems: Vec<String>,
}

/// The outcome of an exec'd command (`ExecSync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The CRI calls the kubelet makes. Implemented over gRPC by [`CriRuntime`] and in memory by
/// `FakeRuntime` for tests.
pub trait Runtime: Send + Sync + 'static {
    /// `(runtime name, runtime version)`, e.g. `("containerd", "1.6.20~ds1")`.
    fn version(&self) -> impl Future<Output = Result<(String, String), RuntimeError>> + Send;
    fn status(&self) -> impl Future<Output = Result<RuntimeHealth, RuntimeError>> + Send;
    fn update_pod_cidr(&self, cidr: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove_pod_sandbox(&self, id: &str)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<cri::PodSandboxStatus, RuntimeError>> + Send;
    fn list_pod_sandboxes(
        &self,
        filter: cri::PodSandboxFilter,
    ) -> impl Future<Output = Result<Vec<cri::PodSandbox>, RuntimeError>> + Send;

    fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `timeout`.
    fn stop_container(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;
    fn list_containers(
        &self,
        filter: cri::ContainerFilter,
    ) -> impl Future<Output = Result<Vec<cri::Container>, RuntimeError>> + Send;
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<cri::ContainerStatus, RuntimeError>> + Send;
    fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send;
    /// A URL on the runtime's streaming server for an interactive exec (the client speaks
    /// SPDY or WebSocket remotecommand to it).
    fn exec(
        &self,
        req: cri::ExecRequest,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// A streaming URL attached to a running container's stdio.
    fn attach(
        &self,
        req: cri::AttachRequest,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// A streaming URL forwarding to ports of a pod sandbox's network namespace.
    fn port_forward(
        &self,
        sandbox_id: &str,
        ports: Vec<i32>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
    /// CPU and memory statistics of every container.
    fn list_container_stats(
        &self,
    ) -> impl Future<Output = Result<Vec<cri::ContainerStats>, RuntimeError>> + Send;

    /// The image's id when the runtime has it.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<String>, RuntimeError>> + Send;
    /// Pulls an image, with registry credentials if given; returns its reference (id).
    fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: cri::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
}

/// The CRI over gRPC on a unix socket (containerd's `io.containerd.grpc.v1.cri` plugin).
#[derive(Clone)]
pub struct CriRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriRuntime {
    /// A client for the socket at `path`. The connection is made lazily and re-made after the
    /// runtime restarts, so a runtime that is down now is reported by the calls, not here.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        let socket = path.clone();
        // The URI is required by the builder but unused: every connection goes to the socket.
        let channel =
            Endpoint::from_static("http://localhost")
                .connect_timeout(Duration::from_secs(2))
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }));
        Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }
}

fn call<T>(
    call: &'static str,
    r: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, RuntimeError> {
    r.map(tonic::Response::into_inner)
        .map_err(|status| RuntimeError::Call { call, status })
}

fn timeout_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Runtime for CriRuntime {
    async fn version(&self) -> Result<(String, String), RuntimeError> {
        let v = call(
            "Version",
            self.runtime
                .clone()
                .version(cri::VersionRequest {
                    version: "v1".into(),
                })
                .await,
        )?;
        Ok((v.runtime_name, v.runtime_version))
    }

    async fn status(&self) -> Result<RuntimeHealth, RuntimeError> {
        let r = call(
            "Status",
            self.runtime
                .clone()
                .status(cri::StatusRequest { verbose: false })
                .await,
        )?;
        Ok(health(&r.status.unwrap_or_default()))
    }

    async fn update_pod_cidr(&self, cidr: &str) -> Result<(), RuntimeError> {
        call(
            "UpdateRuntimeConfig",
            self.runtime
                .clone()
                .update_runtime_config(cri::UpdateRuntimeConfigRequest {
                    runtime_config: Some(cri::RuntimeConfig {
                        network_config: Some(cri::NetworkConfig {
                            pod_cidr: cidr.to_owned(),
                        }),
                    }),
                })
                .await,
        )?;
        Ok(())
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, RuntimeError> {
        let r = call(
            "RunPodSandbox",
            self.runtime
                .clone()
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await,
        )?;
        Ok(r.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            "StopPodSandbox",
            self.runtime
                .clone()
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                })
                .await,
        )?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            "RemovePodSandbox",
            self.runtime
                .clone()
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.to_owned(),
                })
                .await,
        )?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, RuntimeError> {
        let r = call(
            "PodSandboxStatus",
            self.runtime
                .clone()
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_owned(),
                    verbose: false,
                })
                .await,
        )?;
        r.status.ok_or(RuntimeError::Incomplete {
            call: "PodSandboxStatus",
            field: "status",
        })
    }

    async fn list_pod_sandboxes(
        &self,
        filter: cri::PodSandboxFilter,
    ) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let r = call(
            "ListPodSandbox",
            self.runtime
                .clone()
                .list_pod_sandbox(cri::ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await,
        )?;
        Ok(r.items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let r = call(
            "CreateContainer",
            self.runtime
                .clone()
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id.to_owned(),
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                })
                .await,
        )?;
        Ok(r.container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            "StartContainer",
            self.runtime
                .clone()
                .start_container(cri::StartContainerRequest {
                    container_id: id.to_owned(),
                })
                .await,
        )?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let mut req = tonic::Request::new(cri::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: timeout_secs(timeout),
        });
        // The call itself lasts up to the grace period; leave the gRPC deadline above it.
        req.set_timeout(timeout + Duration::from_secs(30));
        call(
            "StopContainer",
            self.runtime.clone().stop_container(req).await,
        )?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        call(
            "RemoveContainer",
            self.runtime
                .clone()
                .remove_container(cri::RemoveContainerRequest {
                    container_id: id.to_owned(),
                })
                .await,
        )?;
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: cri::ContainerFilter,
    ) -> Result<Vec<cri::Container>, RuntimeError> {
        let r = call(
            "ListContainers",
            self.runtime
                .clone()
                .list_containers(cri::ListContainersRequest {
                    filter: Some(filter),
                })
                .await,
        )?;
        Ok(r.containers)
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, RuntimeError> {
        let r = call(
            "ContainerStatus",
            self.runtime
                .clone()
                .container_status(cri::ContainerStatusRequest {
                    container_id: id.to_owned(),
                    verbose: false,
                })
                .await,
        )?;
        r.status.ok_or(RuntimeError::Incomplete {
            call: "ContainerStatus",
            field: "status",
        })
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let mut req = tonic::Request::new(cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd,
            timeout: timeout_secs(timeout).max(1),
        });
        req.set_timeout(timeout + Duration::from_secs(10));
        let r = call("ExecSync", self.runtime.clone().exec_sync(req).await)?;
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    async fn exec(&self, req: cri::ExecRequest) -> Result<String, RuntimeError> {
        Ok(call("Exec", self.runtime.clone().exec(req).await)?.url)
    }

    async fn attach(&self, req: cri::AttachRequest) -> Result<String, RuntimeError> {
        Ok(call("Attach", self.runtime.clone().attach(req).await)?.url)
    }

    async fn port_forward(&self, sandbox_id: &str, port: Vec<i32>) -> Result<String, RuntimeError> {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            port,
        };
        Ok(call("PortForward", self.runtime.clone().port_forward(req).await)?.url)
    }

    async fn list_container_stats(&self) -> Result<Vec<cri::ContainerStats>, RuntimeError> {
        let req = cri::ListContainerStatsRequest { filter: None };
        Ok(call(
            "ListContainerStats",
            self.runtime.clone().list_container_stats(req).await,
        )?
        .stats)
    }

    async fn image_status(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        let r = call(
            "ImageStatus",
            self.images
                .clone()
                .image_status(cri::ImageStatusRequest {
                    image: Some(image_spec(image)),
                    verbose: false,
                })
                .await,
        )?;
        Ok(r.image.map(|i| i.id).filter(|id| !id.is_empty()))
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let r = call(
            "PullImage",
            self.images
                .clone()
                .pull_image(cri::PullImageRequest {
                    image: Some(image_spec(image)),
                    auth,
                    sandbox_config: Some(sandbox_config),
                })
                .await,
        )?;
        Ok(r.image_ref)
    }
}

pub(crate) fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        user_specified_image: image.to_owned(),
        ..Default::default()
    }
}

/// Reads the RuntimeReady and NetworkReady conditions of a CRI `Status` answer.
pub(crate) fn health(status: &cri::RuntimeStatus) -> RuntimeHealth {
    let ready = |kind: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.r#type == kind && c.status)
    };
    let problems = status
        .conditions
        .iter()
        .filter(|c| !c.status)
        .map(|c| {
            format!(
                "{}=false reason:{} message:{}",
                c.r#type, c.reason, c.message
            )
        })
        .collect();
    RuntimeHealth {
        runtime_ready: ready("RuntimeReady"),
        network_ready: ready("NetworkReady"),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_conditions_and_explains_the_false_ones() {
        let status = cri::RuntimeStatus {
            conditions: vec![
                cri::RuntimeCondition {
                    r#type: "RuntimeReady".into(),
                    status: true,
                    ..Default::default()
                },
                cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message: "cni config uninitialized".into(),
                },
            ],
        };
        let h = health(&status);
        assert!(h.runtime_ready);
        assert!(!h.network_ready);
        assert_eq!(
            h.problems,
            vec![
                "NetworkReady=false reason:NetworkPluginNotReady message:cni config uninitialized"
            ]
        );
        // A runtime that reports nothing is not ready.
        let none = health(&cri::RuntimeStatus::default());
        assert!(!none.runtime_ready && !none.network_ready);
    }
}
