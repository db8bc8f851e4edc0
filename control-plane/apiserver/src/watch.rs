//! Watch fan-out. One store watch per resource feeds every watcher of that resource: each
//! change is decoded once and its event line encoded once (per output format), whatever the
//! number of watchers. A short history lets a watcher start a little in the past without a
//! store round trip; one further back gets its own store watch (and 410 Gone once compacted).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::{Value, json};
use skiff_store::{Event, Revision, Store, StoreError, WatchReceiver};
use tokio::sync::broadcast;
use tracing::warn;

use crate::objects;

/// Changes kept per resource for watchers that start slightly in the past.
const HISTORY: usize = 8192;
/// Changes a watcher may fall behind before it is dropped (it re-watches, as clients do).
const FANOUT_BUFFER: usize = 4096;

/// One change to one object, decoded once for all watchers.
pub struct Change {
    pub revision: Revision,
    pub key: String,
    /// The object after the change (for a deletion: as it was, stamped with the deletion's
    /// revision, as kube-apiserver reports it).
    pub object: Arc<Value>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Value>>,
    pub deleted: bool,
    json: OnceLock<Vec<u8>>,
    /// The Table event line per Table version (meta.k8s.io v1, v1beta1), for watchers with
    /// the default includeObject.
    tables: [OnceLock<Vec<u8>>; 2],
}

impl Change {
    fn from_event(event: &Event) -> Option<Self> {
        let (object, prev, deleted) = match event {
            Event::Put { kv, prev } => (
                objects::decode(kv).ok()?,
                prev.as_ref().and_then(|p| objects::decode(p).ok()),
                false,
            ),
            Event::Delete { prev, revision } => {
                let mut obj = objects::decode(prev).ok()?;
                objects::set_resource_version(&mut obj, *revision);
                (obj, None, true)
            }
        };
        Some(Self {
            revision: event.revision(),
            key: event.key().to_owned(),
            object: Arc::new(object),
            prev: prev.map(Arc::new),
            deleted,
            json: OnceLock::new(),
            tables: [OnceLock::new(), OnceLock::new()],
        })
    }

    /// The event type a watcher without selectors sees.
    #[must_use]
    pub const fn natural_type(&self) -> &'static str {
        if self.deleted {
            "DELETED"
        } else if self.prev.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        }
    }

    /// The natural event as a JSON line, encoded on first use and shared after.
    pub fn json_line(&self) -> &[u8] {
        self.json
            .get_or_init(|| event_line(self.natural_type(), &self.object))
    }

    /// The natural event with the object as a one-row Table, encoded once.
    pub fn table_line(&self, version: &str, make: impl FnOnce(&Value) -> Value) -> &[u8] {
        let slot = usize::from(version == "v1beta1");
        self.tables[slot].get_or_init(|| event_line(self.natural_type(), &make(&self.object)))
    }
}

/// `{"type":T,"object":O}\n`.
#[must_use]
pub fn event_line(event_type: &str, object: &Value) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
    line.push(b'\n');
    line
}

struct FeedState {
    history: VecDeque<Arc<Change>>,
    /// History covers every change after this revision.
    covers_after: Revision,
    alive: bool,
}

struct Feed {
    state: Mutex<FeedState>,
    tx: broadcast::Sender<Arc<Change>>,
}

/// Where a watcher's changes come from.
pub enum Subscription {
    /// The shared feed: first `replay`, then `live`.
    Shared {
        replay: Vec<Arc<Change>>,
        live: broadcast::Receiver<Arc<Change>>,
    },
    /// A watcher from further back than the shared history: its own store watch.
    Own(WatchReceiver),
}

impl Subscription {
    /// The next change; `None` when the source ended (the client should re-watch).
    pub async fn next(&mut self) -> Option<Result<Arc<Change>, StoreError>> {
        match self {
            Self::Shared { replay, live } => {
                if !replay.is_empty() {
                    return Some(Ok(replay.remove(0)));
                }
                match live.recv().await {
                    Ok(c) => Some(Ok(c)),
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            }
            Self::Own(rx) => loop {
                match rx.recv().await? {
                    Ok(event) => {
                        if let Some(c) = Change::from_event(&event) {
                            return Some(Ok(Arc::new(c)));
                        }
                    }
                    Err(e) => return Some(Err(e)),
                }
            },
        }
    }
}

pub struct Hub<S> {
    store: Arc<S>,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
}

impl<S: Store> Hub<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self {
            store,
            feeds: Mutex::new(HashMap::new()),
        }
    }

    /// Changes under `prefix` (a resource's storage prefix) after revision `after`.
    pub async fn subscribe(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<Subscription, StoreError> {
        let feed = self.feed(prefix).await?;
        {
            let state = feed
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.alive && after >= state.covers_after {
                let replay = state
                    .history
                    .iter()
                    .filter(|c| c.revision > after)
                    .cloned()
                    .collect();
                return Ok(Subscription::Shared {
                    replay,
                    live: feed.tx.subscribe(),
                });
            }
        }
        Ok(Subscription::Own(self.store.watch(prefix, after).await?))
    }

    async fn feed(&self, prefix: &str) -> Result<Arc<Feed>, StoreError> {
        if let Some(feed) = self.live_feed(prefix) {
            return Ok(feed);
        }
        let start = self.store.current_revision().await?;
        let rx = self.store.watch(prefix, start).await?;
        let mut feeds = self
            .feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(feed) = feeds.get(prefix).filter(|f| f.is_alive()) {
            // Another request started it meanwhile; this store watch is dropped.
            return Ok(Arc::clone(feed));
        }
        let (tx, _) = broadcast::channel(FANOUT_BUFFER);
        let feed = Arc::new(Feed {
            state: Mutex::new(FeedState {
                history: VecDeque::new(),
                covers_after: start,
                alive: true,
            }),
            tx,
        });
        feeds.insert(prefix.to_owned(), Arc::clone(&feed));
        tokio::spawn(pump(Arc::clone(&feed), rx, prefix.to_owned()));
        Ok(feed)
    }

    fn live_feed(&self, prefix: &str) -> Option<Arc<Feed>> {
        let feeds = self
            .feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        feeds.get(prefix).filter(|f| f.is_alive()).cloned()
    }
}

impl Feed {
    fn is_alive(&self) -> bool {
        self.state.lock().map(|s| s.alive).unwrap_or(false)
    }
}

async fn pump(feed: Arc<Feed>, mut rx: WatchReceiver, prefix: String) {
    while let Some(event) = rx.recv().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(%prefix, error = %e, "store watch ended; watchers will re-watch");
                break;
            }
        };
        let Some(change) = Change::from_event(&event).map(Arc::new) else {
            warn!(%prefix, key = event.key(), "undecodable object in the store; skipped");
            continue;
        };
        let mut state = feed
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.history.push_back(Arc::clone(&change));
        if state.history.len() > HISTORY
            && let Some(old) = state.history.pop_front()
        {
            state.covers_after = old.revision;
        }
        // Sent under the lock, so a subscriber's replay and live stream neither overlap nor gap.
        let _ = feed.tx.send(change);
    }
    let mut state = feed
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    state.alive = false;
}

#[cfg(test)]
mod tests {
    use skiff_store::MemStore;

    use super::*;

    async fn put(store: &MemStore, key: &str, name: &str) -> Revision {
        store
            .create(
                key,
                serde_json::to_vec(&json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap()
            .mod_revision
    }

    #[tokio::test]
    async fn watchers_share_one_feed_and_see_every_change_in_order() {
        let store = Arc::new(MemStore::new());
        let hub = Hub::new(Arc::clone(&store));
        let r0 = store.current_revision().await.unwrap();
        let mut a = hub.subscribe("/registry/pods/", r0).await.unwrap();
        let r1 = put(&store, "/registry/pods/d/a", "a").await;
        let mut b = hub.subscribe("/registry/pods/", r0).await.unwrap();
        put(&store, "/registry/pods/d/b", "b").await;
        put(&store, "/registry/services/d/s", "s").await;
        for sub in [&mut a, &mut b] {
            let first = sub.next().await.unwrap().unwrap();
            let second = sub.next().await.unwrap().unwrap();
            assert_eq!((first.revision, second.revision), (r1, r1 + 1));
            assert_eq!(first.natural_type(), "ADDED");
        }
        // Both got the same decoded change, encoded once.
        let mut c = hub.subscribe("/registry/pods/", r0).await.unwrap();
        let x = c.next().await.unwrap().unwrap();
        assert!(std::ptr::eq(x.json_line(), x.json_line()), "encoded once");
        let event: Value = serde_json::from_slice(x.json_line()).unwrap();
        assert_eq!(event["type"], "ADDED");
        assert_eq!(hub.feeds.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn watchers_from_before_the_feed_get_their_own_store_watch() {
        let store = Arc::new(MemStore::new());
        let early = put(&store, "/registry/pods/d/a", "a").await;
        let hub = Hub::new(Arc::clone(&store));
        let mut sub = hub.subscribe("/registry/pods/", early - 1).await.unwrap();
        assert!(matches!(sub, Subscription::Own(_)));
        assert_eq!(sub.next().await.unwrap().unwrap().revision, early);
        store.compact(early).await.unwrap();
        assert!(matches!(
            hub.subscribe("/registry/pods/", early - 1).await,
            Err(StoreError::Compacted { .. })
        ));
    }
}
