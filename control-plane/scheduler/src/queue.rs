//! The scheduling queue, as upstream's: an active heap (higher priority first, then FIFO), a
//! backoff heap for pods that failed recently (1 s doubling to 10 s), and an unschedulable set
//! whose pods wait for a cluster event that might help them (a node added or changed, a pod
//! removed), then go back through backoff; a periodic flush catches whatever no event announced.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use crate::model::PodInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff(Instant),
    Unschedulable {
        since: Instant,
        until: Instant,
    },
    /// Popped: being scheduled or bound.
    InFlight,
}

#[derive(Debug)]
pub struct Entry {
    pub pod: Arc<PodInfo>,
    pub attempts: u32,
    /// The last FailedScheduling message written for the pod (its PodScheduled condition is
    /// only patched when this changes).
    pub last_message: Option<String>,
    /// Whether the last failure involved pod affinity (a new pod elsewhere may then help).
    pub affinity_failure: bool,
    state: State,
    /// Orders FIFO within a priority; a stale heap item carries an older seq and is skipped.
    seq: u64,
}

#[derive(Debug)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    /// The unschedulable pods whose last failure involved pod affinity (a subset of the above,
    /// kept apart so that every new pod need not scan all unschedulable pods).
    affinity_waiting: HashSet<String>,
    seq: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// How long a pod waits in the unschedulable set without an event before it is retried.
    flush_after: Duration,
}

impl Queue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration, flush_after: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            affinity_waiting: HashSet::new(),
            seq: 0,
            initial_backoff,
            max_backoff,
            flush_after,
        }
    }

    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1 << shift)
            .min(self.max_backoff)
    }

    #[cfg(test)]
    pub fn get(&self, uid: &str) -> Option<&Entry> {
        self.entries.get(uid)
    }

    pub fn get_mut(&mut self, uid: &str) -> Option<&mut Entry> {
        self.entries.get_mut(uid)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn set_state(&mut self, uid: &str, state: State) {
        self.seq += 1;
        let seq = self.seq;
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        if matches!(e.state, State::Unschedulable { .. }) {
            self.unschedulable.remove(uid);
            self.affinity_waiting.remove(uid);
        }
        e.state = state;
        e.seq = seq;
        match state {
            State::Active => self
                .active
                .push((e.pod.priority, Reverse(seq), uid.to_owned())),
            State::Backoff(at) => self.backoff.push(Reverse((at, seq, uid.to_owned()))),
            State::Unschedulable { .. } => {
                self.unschedulable.insert(uid.to_owned());
                if e.affinity_failure {
                    self.affinity_waiting.insert(uid.to_owned());
                }
            }
            State::InFlight => {}
        }
    }

    /// A pending pod appeared or changed.
    pub fn upsert(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let uid = pod.uid.clone();
        let Some(e) = self.entries.get_mut(&uid) else {
            self.entries.insert(
                uid.clone(),
                Entry {
                    pod,
                    attempts: 0,
                    last_message: None,
                    affinity_failure: false,
                    state: State::InFlight,
                    seq: 0,
                },
            );
            self.set_state(&uid, State::Active);
            return;
        };
        let changed = !e.pod.same_scheduling_inputs(&pod);
        e.pod = pod;
        if changed && let State::Unschedulable { until, .. } = e.state {
            // The pod itself changed (e.g. a toleration added): it may fit now.
            self.wake(&uid, until, now);
        }
    }

    fn wake(&mut self, uid: &str, until: Instant, now: Instant) {
        let state = if until > now {
            State::Backoff(until)
        } else {
            State::Active
        };
        self.set_state(uid, state);
    }

    pub fn remove(&mut self, uid: &str) -> Option<Entry> {
        self.unschedulable.remove(uid);
        self.affinity_waiting.remove(uid);
        self.entries.remove(uid)
    }

    /// The next pod to schedule, marked in flight.
    pub fn pop(&mut self) -> Option<Arc<PodInfo>> {
        while let Some((_, Reverse(seq), uid)) = self.active.pop() {
            if let Some(e) = self.entries.get(&uid)
                && e.seq == seq
                && e.state == State::Active
            {
                let pod = Arc::clone(&e.pod);
                self.set_state(&uid, State::InFlight);
                return Some(pod);
            }
        }
        None
    }

    /// No node fits: wait for an event (not before the backoff ends).
    pub fn unschedulable(&mut self, uid: &str, affinity: bool, now: Instant) {
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        e.attempts += 1;
        e.affinity_failure = affinity;
        let attempts = e.attempts;
        let until = now + self.backoff_for(attempts);
        self.set_state(uid, State::Unschedulable { since: now, until });
    }

    /// A binding failed for another reason than the pod being gone or taken: retry after backoff.
    pub fn error(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        e.attempts += 1;
        let attempts = e.attempts;
        let until = now + self.backoff_for(attempts);
        self.set_state(uid, State::Backoff(until));
    }

    /// A new pod was placed: pods that failed on pod affinity may fit now.
    pub fn move_affinity_failures(&mut self, now: Instant) {
        if self.affinity_waiting.is_empty() {
            return;
        }
        let uids: Vec<String> = self.affinity_waiting.iter().cloned().collect();
        for uid in uids {
            if let Some(State::Unschedulable { until, .. }) =
                self.entries.get(&uid).map(|e| e.state)
            {
                self.wake(&uid, until, now);
            }
        }
    }

    /// A cluster event that may make room: unschedulable pods (those `which` selects) go back,
    /// through backoff if theirs has not ended ("move on cluster event").
    pub fn move_unschedulable(&mut self, now: Instant, which: impl Fn(&Entry) -> bool) {
        let uids: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|u| self.entries.get(*u).is_some_and(&which))
            .cloned()
            .collect();
        for uid in uids {
            if let Some(State::Unschedulable { until, .. }) =
                self.entries.get(&uid).map(|e| e.state)
            {
                self.wake(&uid, until, now);
            }
        }
    }

    /// Moves pods whose backoff ended to the active heap, and long-waiting unschedulable pods
    /// back into rotation.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((at, seq, uid))) = self.backoff.peek().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&uid)
                .is_some_and(|e| e.seq == seq && matches!(e.state, State::Backoff(_)))
            {
                self.set_state(&uid, State::Active);
            }
        }
        if self.unschedulable.is_empty() {
            return;
        }
        let flush_after = self.flush_after;
        self.move_unschedulable(now, |e| {
            matches!(e.state, State::Unschedulable { since, .. } if now.duration_since(since) >= flush_after)
        });
    }

    /// When the earliest backoff ends.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Keeps only the pods in `uids` (after a re-list).
    pub fn retain(&mut self, uids: &HashSet<String>) {
        self.entries.retain(|uid, _| uids.contains(uid));
        self.unschedulable.retain(|uid| uids.contains(uid));
        self.affinity_waiting.retain(|uid| uids.contains(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            uid: uid.to_owned(),
            priority,
            ..PodInfo::default()
        })
    }

    fn queue() -> Queue {
        Queue::new(
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = queue();
        q.upsert(pod("a", 0), now);
        q.upsert(pod("b", 10), now);
        q.upsert(pod("c", 0), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|p| p.uid.clone())
            .collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let q = queue();
        let secs: Vec<u64> = (1..=6).map(|a| q.backoff_for(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn unschedulable_pods_wait_for_an_event_and_their_backoff() {
        let t0 = Instant::now();
        let mut q = queue();
        q.upsert(pod("a", 0), t0);
        assert!(q.pop().is_some());
        q.unschedulable("a", false, t0);
        q.flush(t0 + Duration::from_secs(5));
        assert!(q.pop().is_none(), "no event yet: the pod stays parked");
        // An event during the backoff: it goes to the backoff heap, out at t0+1s.
        q.move_unschedulable(t0 + Duration::from_millis(500), |_| true);
        q.flush(t0 + Duration::from_millis(900));
        assert!(q.pop().is_none());
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().unwrap().uid, "a");
        // Second failure: 2 s of backoff; an event after it re-activates at once.
        q.unschedulable("a", false, t0);
        q.move_unschedulable(t0 + Duration::from_secs(3), |_| true);
        assert_eq!(q.pop().unwrap().uid, "a");
    }

    #[test]
    fn a_new_pod_wakes_only_pods_that_failed_on_affinity() {
        let t0 = Instant::now();
        let mut q = queue();
        q.upsert(pod("affine", 0), t0);
        q.upsert(pod("big", 0), t0);
        q.pop();
        q.pop();
        q.unschedulable("affine", true, t0);
        q.unschedulable("big", false, t0);
        q.move_affinity_failures(t0 + Duration::from_secs(2));
        assert_eq!(q.pop().unwrap().uid, "affine");
        assert!(q.pop().is_none());
        q.unschedulable("affine", false, t0);
        q.move_affinity_failures(t0 + Duration::from_secs(9));
        assert!(q.pop().is_none(), "its last failure was not about affinity");
    }

    #[test]
    fn long_parked_pods_are_flushed_and_updates_wake_them() {
        let t0 = Instant::now();
        let mut q = queue();
        q.upsert(pod("a", 0), t0);
        q.pop();
        q.unschedulable("a", false, t0);
        q.flush(t0 + Duration::from_secs(61));
        assert_eq!(q.pop().unwrap().uid, "a");
        q.unschedulable("a", false, t0);
        // A status-only update changes nothing the scheduler reads: still parked.
        q.upsert(pod("a", 0), t0 + Duration::from_secs(20));
        assert!(q.pop().is_none());
        q.upsert(pod("a", 5), t0 + Duration::from_secs(20));
        assert_eq!(q.pop().unwrap().uid, "a");
    }
}
