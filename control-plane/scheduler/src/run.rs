//! The IO around [`Core`]: watches feeding it, bindings and events carried out concurrently.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::{
    api::core::v1::{Node, ObjectReference, Pod},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use serde_json::json;
use skiff_controllers::events::{EventType, Recorder};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    Options,
    core::{BindOutcome, Core, Decision},
    model::{NodeSpec, PodInfo},
    queue::Queue,
};

const COMPONENT: &str = "default-scheduler";

/// Events and status patches written at once (beyond it they wait their turn).
const SIDE_EFFECTS: usize = 16;

enum Msg {
    NodeInit,
    Node(NodeSpec, bool),
    NodeDeleted(String),
    NodeInitDone,
    PodInit,
    Pod(Box<PodInfo>, bool),
    PodDeleted(String),
    PodInitDone,
    Bound(String, BindOutcome),
}

/// Aborts the spawned tasks when `run` is dropped.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn forward<K, F>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    tx: mpsc::Sender<Msg>,
    map: F,
) -> JoinHandle<()>
where
    K: Send + 'static,
    F: Fn(watcher::Event<K>) -> Msg + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(map(ev)).await.is_err() {
                        return;
                    }
                }
                // The watcher re-lists by itself (with backoff); nothing is lost but time.
                Err(e) => warn!(error = %e, "scheduler watch failed; retrying"),
            }
        }
    })
}

/// Runs the scheduler until the returned future is dropped.
pub async fn run(client: Client, options: Options) {
    let (tx, mut rx) = mpsc::channel::<Msg>(16_384);
    let nodes =
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
    let pods =
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
    let _tasks = Tasks(vec![
        forward(nodes, tx.clone(), |ev| match ev {
            watcher::Event::Init => Msg::NodeInit,
            watcher::Event::InitApply(n) => Msg::Node(NodeSpec::from_node(&n), true),
            watcher::Event::Apply(n) => Msg::Node(NodeSpec::from_node(&n), false),
            watcher::Event::Delete(n) => Msg::NodeDeleted(n.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => Msg::NodeInitDone,
        }),
        forward(pods, tx.clone(), |ev| match ev {
            watcher::Event::Init => Msg::PodInit,
            watcher::Event::InitApply(p) => Msg::Pod(Box::new(PodInfo::from_pod(&p)), true),
            watcher::Event::Apply(p) => Msg::Pod(Box::new(PodInfo::from_pod(&p)), false),
            watcher::Event::Delete(p) => Msg::PodDeleted(p.metadata.uid.unwrap_or_default()),
            watcher::Event::InitDone => Msg::PodInitDone,
        }),
    ]);
    let seed = Timestamp::now().as_nanosecond().unsigned_abs() as u64;
    let queue = Queue::new(
        options.initial_backoff,
        options.max_backoff,
        options.unschedulable_flush,
    );
    let mut core = Core::new(options.scheduler_name.clone(), queue, seed);
    let io = Io {
        client: client.clone(),
        recorder: Arc::new(Recorder::new(client)),
        binds: Arc::new(Semaphore::new(options.bind_concurrency.max(1))),
        side_effects: Arc::new(Semaphore::new(SIDE_EFFECTS)),
        tx,
        scheduled_events: options.scheduled_events,
    };
    let mut sync = Sync::default();
    info!(scheduler = %options.scheduler_name, "scheduler started");
    loop {
        while let Ok(msg) = rx.try_recv() {
            sync.handle(&mut core, msg);
        }
        let now = Instant::now();
        core.queue.flush(now);
        let mut scheduled = 0;
        if sync.ready() {
            while scheduled < 256 {
                let Ok(permit) = Arc::clone(&io.binds).try_acquire_owned() else {
                    break;
                };
                let Some(decision) = core.schedule_next() else {
                    break;
                };
                scheduled += 1;
                io.carry_out(decision, permit);
            }
        }
        if scheduled > 0 {
            // Let the bindings and watches run before the next batch.
            tokio::task::yield_now().await;
            continue;
        }
        let wake = core
            .queue
            .next_wakeup()
            .map_or(now + Duration::from_secs(1), |t| {
                t.min(now + Duration::from_secs(1))
            });
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => sync.handle(&mut core, msg),
                None => return,
            },
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Applies watch events, tracking re-lists so that objects gone meanwhile are forgotten.
#[derive(Default)]
struct Sync {
    nodes_synced: bool,
    pods_synced: bool,
    listing_nodes: Option<HashSet<String>>,
    listing_pods: Option<HashSet<String>>,
}

impl Sync {
    /// Scheduling waits for the first full view, or every pod would look unschedulable.
    fn ready(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    fn handle(&mut self, core: &mut Core, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::NodeInit => self.listing_nodes = Some(HashSet::new()),
            Msg::Node(spec, init) => {
                if init && let Some(seen) = self.listing_nodes.as_mut() {
                    seen.insert(spec.name.clone());
                }
                core.apply_node(spec, now);
            }
            Msg::NodeDeleted(name) => core.delete_node(&name),
            Msg::NodeInitDone => {
                if let Some(seen) = self.listing_nodes.take() {
                    core.retain_nodes(&seen);
                }
                self.nodes_synced = true;
            }
            Msg::PodInit => self.listing_pods = Some(HashSet::new()),
            Msg::Pod(pod, init) => {
                if init && let Some(seen) = self.listing_pods.as_mut() {
                    seen.insert(pod.uid.clone());
                }
                core.apply_pod(*pod, now);
            }
            Msg::PodDeleted(uid) => core.delete_pod(&uid, now),
            Msg::PodInitDone => {
                if let Some(seen) = self.listing_pods.take() {
                    core.retain_pods(&seen, now);
                }
                self.pods_synced = true;
            }
            Msg::Bound(uid, outcome) => core.bind_done(&uid, outcome, now),
        }
    }
}

struct Io {
    client: Client,
    recorder: Arc<Recorder>,
    binds: Arc<Semaphore>,
    side_effects: Arc<Semaphore>,
    tx: mpsc::Sender<Msg>,
    scheduled_events: bool,
}

fn object_ref(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(pod.namespace.clone()),
        name: Some(pod.name.clone()),
        uid: Some(pod.uid.clone()),
        ..ObjectReference::default()
    }
}

impl Io {
    fn carry_out(&self, decision: Decision, bind_permit: tokio::sync::OwnedSemaphorePermit) {
        let client = self.client.clone();
        let recorder = Arc::clone(&self.recorder);
        let side_effects = Arc::clone(&self.side_effects);
        match decision {
            Decision::Bind { pod, node } => {
                let tx = self.tx.clone();
                let events = self.scheduled_events;
                tokio::spawn(async move {
                    let outcome = bind(&client, &pod, &node).await;
                    drop(bind_permit);
                    let _ = tx.send(Msg::Bound(pod.uid.clone(), outcome)).await;
                    if outcome == BindOutcome::Bound && events {
                        let Ok(_permit) = side_effects.acquire_owned().await else {
                            return;
                        };
                        let message = format!(
                            "Successfully assigned {}/{} to {node}",
                            pod.namespace, pod.name
                        );
                        recorder
                            .publish_ref(
                                COMPONENT,
                                &object_ref(&pod),
                                EventType::Normal,
                                "Scheduled",
                                &message,
                            )
                            .await;
                    }
                });
            }
            Decision::Unschedulable {
                pod,
                message,
                changed,
            } => {
                drop(bind_permit);
                debug!(pod = %pod.name, namespace = %pod.namespace, %message, "unschedulable");
                tokio::spawn(async move {
                    let Ok(_permit) = side_effects.acquire_owned().await else {
                        return;
                    };
                    recorder
                        .publish_ref(
                            COMPONENT,
                            &object_ref(&pod),
                            EventType::Warning,
                            "FailedScheduling",
                            &message,
                        )
                        .await;
                    if changed {
                        set_unschedulable(&client, &pod, &message).await;
                    }
                });
            }
        }
    }
}

async fn bind(client: &Client, pod: &PodInfo, node: &str) -> BindOutcome {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => BindOutcome::Bound,
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
            debug!(pod = %pod.name, node, message = %status.message, "binding refused");
            BindOutcome::Gone
        }
        Err(e) => {
            warn!(pod = %pod.name, node, error = %e, "binding failed; will retry");
            BindOutcome::Failed
        }
    }
}

/// PodScheduled=False, reason Unschedulable, as `kubectl describe pod` shows under Conditions.
async fn set_unschedulable(client: &Client, pod: &PodInfo, message: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    if let Err(e) = api
        .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        debug!(pod = %pod.name, error = %e, "setting the PodScheduled condition");
    }
}
