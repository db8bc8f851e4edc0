//! The in-process part of `bench api`: what authentication plus authorization adds to a
//! request, measured on the router itself so TLS and the network stay out of the number.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::body::Body;
use http_body_util::BodyExt as _;
use skiff_apiserver::{
    ApiServer, Config, authn::Authenticator, authz::Authorizer, rbac::RbacAuthorizer, router,
    satoken::TokenKeys, secure_router,
};
use skiff_store::MemStore;
use tower::ServiceExt as _;

/// (added cost, plain request cost), medians over many GETs of one ConfigMap.
pub async fn measure() -> anyhow::Result<(Duration, Duration)> {
    {
        let dir = std::env::temp_dir().join(format!("skiff-bench-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, "benchtoken,viewer,u1,\"team\"\n")?;
        let store = Arc::new(MemStore::new());
        let rbac = Arc::new(RbacAuthorizer::default());
        let keys = Arc::new(TokenKeys::load_or_create(&dir.join("sa.key"))?);
        let api = ApiServer::secure(
            Arc::clone(&store),
            Config::default(),
            Arc::clone(&rbac) as Arc<dyn Authorizer>,
            keys,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        skiff_apiserver::rbac::ensure_bootstrap(&api)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "team-view", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "team", "apiGroup": "rbac.authorization.k8s.io"}]});
        let plain = router(Arc::clone(&api));
        let create = |uri: &str, body: serde_json::Value| {
            axum::http::Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request")
        };
        plain
            .clone()
            .oneshot(create(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
                binding,
            ))
            .await?;
        plain.clone().oneshot(create("/api/v1/namespaces/default/configmaps", serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))).await?;
        tokio::spawn(skiff_apiserver::rbac::refresh(Arc::clone(&api), rbac));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let secure = secure_router(
            Arc::clone(&api),
            Arc::new(Authenticator::default().with_token_file(&tokens)?),
        );
        let get = |token: bool| {
            let mut b = axum::http::Request::get("/api/v1/namespaces/default/configmaps/x");
            if token {
                b = b.header("authorization", "Bearer benchtoken");
            }
            b.body(Body::empty()).expect("request")
        };
        let check = secure.clone().oneshot(get(true)).await?;
        anyhow::ensure!(
            check.status() == 200,
            "the bench user may read configmaps ({})",
            check.status()
        );
        let time = async |app: &axum::Router, token: bool| -> anyhow::Result<Duration> {
            let mut samples = Vec::with_capacity(2000);
            for _ in 0..2000 {
                let started = Instant::now();
                let resp = app.clone().oneshot(get(token)).await?;
                resp.into_body().collect().await?;
                samples.push(started.elapsed());
            }
            samples.sort();
            Ok(samples[samples.len() / 2])
        };
        let base = time(&plain, false).await?;
        let with = time(&secure, true).await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((with.saturating_sub(base), base))
    }
}
