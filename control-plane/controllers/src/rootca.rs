//! The root CA publisher (upstream's root-ca-cert-publisher): a `kube-root-ca.crt` ConfigMap in
//! every namespace holding the cluster CA under `ca.crt`, which pods' service account volumes
//! project so that in-cluster clients can verify the API server. Rewritten when someone changes
//! it, recreated when someone deletes it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, ResourceExt as _,
    api::{ObjectMeta, PostParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use tracing::{info, warn};

use crate::{ControllerError, Ctx};

pub const NAME: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
     when using internal endpoints such as the internal service IP or kubernetes.default.svc. No \
     other usage is guaranteed across distributions of Kubernetes clusters.";

pub(crate) async fn run(ctx: Arc<Ctx>) {
    if ctx.options.root_ca.is_none() {
        // Nothing to publish (tests of the API alone); stay up like every controller.
        std::future::pending::<()>().await;
    }
    let namespaces = Api::<Namespace>::all(ctx.client.clone());
    let maps = Api::<ConfigMap>::all(ctx.client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            maps,
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            |cm| cm.namespace().map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures_util::future::ready(()))
        .await;
}

fn error_policy(ns: Arc<Namespace>, err: &ControllerError, _: Arc<Ctx>) -> Action {
    warn!(namespace = %ns.name_any(), error = %err, "publishing the root CA; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let Some(ca) = ctx.options.root_ca.clone() else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let data = BTreeMap::from([("ca.crt".to_owned(), ca)]);
    match api.get_opt(NAME).await? {
        Some(cm) if cm.data.as_ref() == Some(&data) => {}
        Some(mut cm) => {
            cm.data = Some(data);
            api.replace(NAME, &PostParams::default(), &cm).await?;
            info!(namespace = %name, "restored {NAME}");
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.to_owned()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/description".to_owned(),
                        DESCRIPTION.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => info!(namespace = %name, "published {NAME}"),
                // Created meanwhile, or the namespace is going away and refuses new objects.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::await_change())
}
