//! Pod sync: a watch on the pods bound to this node feeds one worker per pod.

pub mod auth;
pub mod env;
pub mod plan;
pub mod probe;
pub mod relist;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{Instrument as _, info, info_span, warn};

use self::{
    spec::{LABEL_MANAGED, LABEL_POD_UID},
    worker::{Shared, Worker},
};
use crate::runtime::{Runtime, cri};

struct Handle {
    pod: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
}

/// Watches this node's pods and runs their workers; returns only if the watch ends.
pub async fn run<R: Runtime>(shared: Arc<Shared<R>>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let mut events = watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let relister = tokio::spawn(
        relist::run(
            Arc::clone(&shared.runtime),
            shared.relist.clone(),
            shared.config.sync_interval,
        )
        .in_current_span(),
    );
    // The relister stops with the watch (this function's end).
    struct AbortOnDrop(JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _relister = AbortOnDrop(relister);
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        workers.retain(|_, h| !h.task.is_finished());
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "pod watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.insert(uid);
                }
                deliver(&shared, &mut workers, pod);
            }
            watcher::Event::Apply(pod) => deliver(&shared, &mut workers, pod),
            watcher::Event::Delete(pod) => {
                if let Some(h) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    h.pod.send_replace(None);
                }
            }
            watcher::Event::InitDone => {
                for (uid, h) in &workers {
                    if !listed.contains(uid) {
                        h.pod.send_replace(None);
                    }
                }
                remove_orphans(&shared, &workers).await;
            }
        }
    }
}

fn deliver<R: Runtime>(shared: &Arc<Shared<R>>, workers: &mut HashMap<String, Handle>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let pod = Arc::new(pod);
    if let Some(h) = workers.get(&uid) {
        h.pod.send_replace(Some(pod));
        return;
    }
    let span = info_span!(
        "pod",
        namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
        name = pod.metadata.name.as_deref().unwrap_or_default(),
    );
    let (tx, rx) = watch::channel(Some(pod));
    let task = tokio::spawn(Worker::new(Arc::clone(shared)).run(rx).instrument(span));
    workers.insert(uid, Handle { pod: tx, task });
}

/// Sandboxes this kubelet made for pods that no longer exist (deleted while it was down).
async fn remove_orphans<R: Runtime>(shared: &Arc<Shared<R>>, workers: &HashMap<String, Handle>) {
    let rt = &shared.runtime;
    let sandboxes = match rt
        .list_pod_sandboxes(cri::PodSandboxFilter {
            label_selector: HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())]),
            ..Default::default()
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "listing sandboxes for orphans");
            return;
        }
    };
    for s in sandboxes {
        let Some(uid) = s.labels.get(LABEL_POD_UID) else {
            continue;
        };
        if workers.contains_key(uid) {
            continue;
        }
        info!(sandbox = %s.id, pod_uid = %uid, "removing the sandbox of a pod that is gone");
        let _ = rt.stop_pod_sandbox(&s.id).await;
        if let Err(e) = rt.remove_pod_sandbox(&s.id).await {
            warn!(sandbox = %s.id, error = %e, "removing an orphaned sandbox");
        }
    }
    // Volume directories of pods deleted while the kubelet was down (their containers went
    // with the sandboxes above).
    let keep: HashSet<String> = workers.keys().cloned().collect();
    volumes::remove_orphaned_dirs(&shared.config.root_dir, &keep);
}
