//! One node-wide relist of the runtime (the kubelet's PLEG): every period, list this kubelet's
//! sandboxes and containers once, and wake only the workers of pods whose runtime state
//! changed. Workers need not poll the runtime themselves.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Notify;
use tracing::warn;

use super::spec::{LABEL_MANAGED, LABEL_POD_UID};
use crate::runtime::{Runtime, cri};

/// Workers' wake-up handles by pod uid. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct Subscribers(Arc<Mutex<HashMap<String, Arc<Notify>>>>);

impl Subscribers {
    /// The handle for `uid` (made on first use); a change before the worker waits is kept.
    pub fn subscribe(&self, uid: &str) -> Arc<Notify> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(uid.to_owned()).or_default())
    }

    pub fn unsubscribe(&self, uid: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }

    fn notify(&self, uid: &str) {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get(uid) {
            n.notify_one();
        }
    }
}

/// What a relist shows of one pod: its sandboxes' and containers' ids and states.
type Snapshot = Vec<(String, i32)>;

/// Groups a listing by pod uid.
pub fn snapshots(
    sandboxes: &[cri::PodSandbox],
    containers: &[cri::Container],
) -> HashMap<String, Snapshot> {
    let mut out: HashMap<String, Snapshot> = HashMap::new();
    let items = sandboxes
        .iter()
        .map(|s| (&s.labels, &s.id, s.state))
        // Container states are offset so a sandbox and a container state never compare equal.
        .chain(containers.iter().map(|c| (&c.labels, &c.id, 100 + c.state)));
    for (labels, id, state) in items {
        if let Some(uid) = labels.get(LABEL_POD_UID) {
            out.entry(uid.clone())
                .or_default()
                .push((id.clone(), state));
        }
    }
    for snap in out.values_mut() {
        snap.sort();
    }
    out
}

/// The pods whose snapshot differs between two relists (appeared, changed or gone).
pub fn changed(before: &HashMap<String, Snapshot>, now: &HashMap<String, Snapshot>) -> Vec<String> {
    let mut uids: Vec<String> = now
        .iter()
        .filter(|(uid, snap)| before.get(*uid) != Some(snap))
        .map(|(uid, _)| uid.clone())
        .chain(before.keys().filter(|uid| !now.contains_key(*uid)).cloned())
        .collect();
    uids.sort();
    uids
}

/// Relists every `period` and wakes the workers of changed pods.
pub async fn run<R: Runtime>(runtime: Arc<R>, subscribers: Subscribers, period: Duration) {
    let managed = HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())]);
    let mut before: HashMap<String, Snapshot> = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        let sandboxes = runtime
            .list_pod_sandboxes(cri::PodSandboxFilter {
                label_selector: managed.clone(),
                ..Default::default()
            })
            .await;
        let containers = runtime
            .list_containers(cri::ContainerFilter {
                label_selector: managed.clone(),
                ..Default::default()
            })
            .await;
        let (sandboxes, containers) = match (sandboxes, containers) {
            (Ok(s), Ok(c)) => (s, c),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "relisting the runtime");
                continue;
            }
        };
        let now = snapshots(&sandboxes, &containers);
        for uid in changed(&before, &now) {
            subscribers.notify(&uid);
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(uid: &str, id: &str, state: cri::ContainerState) -> cri::Container {
        cri::Container {
            id: id.into(),
            state: state as i32,
            labels: HashMap::from([(LABEL_POD_UID.to_owned(), uid.to_owned())]),
            ..Default::default()
        }
    }

    #[test]
    fn only_pods_whose_runtime_state_changed_are_woken() {
        use cri::ContainerState::{ContainerExited, ContainerRunning};
        let sandbox = cri::PodSandbox {
            id: "sb-a".into(),
            labels: HashMap::from([(LABEL_POD_UID.to_owned(), "a".to_owned())]),
            ..Default::default()
        };
        let first = snapshots(
            std::slice::from_ref(&sandbox),
            &[
                container("a", "c1", ContainerRunning),
                container("b", "c2", ContainerRunning),
            ],
        );
        assert_eq!(changed(&HashMap::new(), &first), ["a", "b"]);
        assert!(changed(&first, &first).is_empty());
        // b's container exits; c appears; nothing about a changes.
        let second = snapshots(
            std::slice::from_ref(&sandbox),
            &[
                container("a", "c1", ContainerRunning),
                container("b", "c2", ContainerExited),
                container("c", "c3", ContainerRunning),
            ],
        );
        assert_eq!(changed(&first, &second), ["b", "c"]);
        // a's sandbox and container are gone.
        let third = snapshots(&[], &[container("b", "c2", ContainerExited)]);
        assert_eq!(changed(&second, &third), ["a", "c"]);
    }

    #[tokio::test]
    async fn a_change_before_the_worker_waits_is_not_lost() {
        let subs = Subscribers::default();
        let n = subs.subscribe("a");
        subs.notify("a");
        tokio::time::timeout(Duration::from_secs(1), n.notified())
            .await
            .expect("the stored wake-up");
        subs.unsubscribe("a");
        subs.notify("a");
    }
}
