//! An in-process API server for other crates' tests: the real handlers over an in-memory store,
//! served without TLS or authentication on a loopback port of its own.

use std::{net::SocketAddr, sync::Arc};

use skiff_store::MemStore;
use tokio::task::JoinHandle;

use crate::{ApiError, ApiServer, Config, router};

/// A running test server; stops (its tasks are aborted) when dropped.
pub struct LocalServer {
    pub addr: SocketAddr,
    pub api: Arc<ApiServer<MemStore>>,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port, with namespace finalization and
    /// allocator repair running as in `skiff server`. Needs a tokio runtime.
    pub async fn start() -> Result<Self, ApiError> {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Result<Self, ApiError> {
        let api = ApiServer::new(Arc::new(MemStore::new()), config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ApiError::internal(format!("binding a loopback port: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ApiError::internal(format!("reading the bound address: {e}")))?;
        let app = router(Arc::clone(&api));
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let background = api.spawn_background();
        Ok(Self {
            addr,
            api,
            tasks: vec![serve, background],
        })
    }

    /// The URL clients use (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
