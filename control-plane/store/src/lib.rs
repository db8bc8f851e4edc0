//! skiff-store: the API server's MVCC store (every write a cluster-wide revision, reads at a
//! revision, compare-and-swap, watch from any retained revision, compaction).
#![forbid(unsafe_code)]

mod memory;

use std::future::Future;

pub use memory::MemStore;

/// A cluster-wide revision: every write gets the next one (it is the resourceVersion).
pub type Revision = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A create or update; `kv.mod_revision` is the event's revision.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A deletion of `prev` at `revision`.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    #[must_use]
    pub const fn revision(&self) -> Revision {
        match self {
            Self::Put { kv, .. } => kv.mod_revision,
            Self::Delete { revision, .. } => *revision,
        }
    }

    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::Put { kv, .. } => &kv.key,
            Self::Delete { prev, .. } => &prev.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at: continue the same snapshot with it.
    pub revision: Revision,
    /// More keys follow the last item.
    pub more: bool,
    /// How many keys follow the last item.
    pub remaining: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} is at revision {actual}, not {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (oldest retained: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current: {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("watch fell too far behind and was closed")]
    WatchLagged,
    #[error("store backend failed: {message}")]
    Backend { message: String },
}

pub type WatchReceiver = tokio::sync::mpsc::Receiver<Result<Event, StoreError>>;

/// The operations the API server needs from a store. Implemented by the SQLite and etcd
/// backends and, for tests, by [`MemStore`].
pub trait Store: Send + Sync + 'static {
    /// The latest value, or the value as of `revision`.
    fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;
    /// Keys starting with `prefix`, in key order, after `start_after`, at most `limit`, at
    /// `revision` (`None`: latest).
    fn list(
        &self,
        prefix: &str,
        revision: Option<Revision>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;
    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;
    /// Compare-and-swap on `mod_revision`.
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;
    /// Deletes (optionally CAS); returns the deleted value and the deletion's revision.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> impl Future<Output = Result<(KeyValue, Revision), StoreError>> + Send;
    /// Every event under `prefix` with a revision above `after`, in order, then live ones.
    fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> impl Future<Output = Result<WatchReceiver, StoreError>> + Send;
    fn current_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;
    fn compacted_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), StoreError>> + Send;
}
