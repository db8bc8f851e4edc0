//! skiff-store: the API server's MVCC object store. Every write gets the next cluster-wide
//! revision; reads can be made at any retained revision; watches replay history from a
//! revision and then follow live writes; compaction drops history without blocking writers.
//!
//! Two backends implement one [`Store`] trait and pass one conformance suite:
//!
//! - [`SqliteStore`]: the embedded default, one SQLite file in WAL mode with a revision log
//!   beside a current-state table, a group-commit writer thread and background compaction.
//! - [`EtcdStore`]: etcd v3 for clusters that outgrow one machine; revisions are etcd's.
//!
//! [`AnyStore`] is the enum the API server holds, built from a `--datastore` spec by
//! [`open_datastore`].
#![forbid(unsafe_code)]

mod any;
mod etcd;
mod keys;
mod memory;
mod sqlite;

use std::future::Future;

pub use any::{AnyStore, DatastoreSpec, open_datastore};
pub use etcd::EtcdStore;
pub use memory::MemStore;
pub use sqlite::{CompactionPolicy, SqliteConfig, SqliteStore};

/// A cluster-wide, strictly increasing write sequence number (etcd's "revision", Kubernetes'
/// `resourceVersion`). The first write gets revision 1; 0 means "nothing written yet".
pub type Revision = i64;

/// One key's value as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of the write that produced this value.
    pub mod_revision: Revision,
}

/// One write, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A create (`prev` is `None`) or an update; `kv.mod_revision` is the event's revision.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A deletion at `revision`; `prev` is the value that was deleted.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    /// The revision of the write this event describes.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at: pass it back as `revision` (with `start_after` = the
    /// last item's key) to continue the same snapshot.
    pub revision: Revision,
    /// Whether keys remain after this page.
    pub more: bool,
    /// How many keys remain after this page (Kubernetes' `remainingItemCount`).
    pub remaining: u64,
}

/// What went wrong. Variants carry enough context to render a Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    /// The revision asked for is older than the compacted revision (HTTP 410 Gone).
    #[error("revision {requested} has been compacted (compacted revision is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// A watcher fell so far behind that the events it still needed were compacted away; the
    /// channel closes after this. The client must list again.
    #[error(
        "watch fell behind: last delivered revision {last_delivered}, history compacted to {compacted}"
    )]
    WatchLagged {
        last_delivered: Revision,
        compacted: Revision,
    },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("invalid datastore spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    /// The backend could not be reached or has no leader; the request may be retried.
    #[error("datastore unavailable while {context}")]
    Unavailable {
        context: String,
        #[source]
        source: BoxError,
    },
    /// The store has been shut down (its writer is gone).
    #[error("store is closed")]
    Closed,
    #[error("datastore error while {context}")]
    Backend {
        context: String,
        #[source]
        source: BoxError,
    },
}

/// The boxed source of a backend error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StoreError {
    pub(crate) fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> StoreError {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Whether retrying the same request later may succeed (the backend was unreachable).
    /// Writes that failed this way may or may not have been applied.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The receiving end of a watch: events in revision order, then at most one error, after which
/// the channel closes.
pub type WatchReceiver = tokio::sync::mpsc::Receiver<Result<Event, StoreError>>;

/// The API server's view of its datastore: a key-value map with a revision per write.
///
/// Keys are non-empty strings; a prefix selects a subtree in key (byte) order.
pub trait Store: Send + Sync + 'static {
    /// Latest value, or the value as of `revision` (must be >= compacted revision).
    fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;

    /// Keys starting with `prefix`, in key order, after `start_after` (exclusive), at most
    /// `limit`, at `revision` (None = latest; the page's `revision` says which one was read, so
    /// a client can continue the same snapshot).
    fn list(
        &self,
        prefix: &str,
        revision: Option<Revision>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

    /// Creates `key`; `AlreadyExists` if it exists.
    fn create(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;

    /// Compare-and-swap on mod_revision: `NotFound`, or `Conflict` if `expected` is stale.
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> impl Future<Output = Result<KeyValue, StoreError>> + Send;

    /// Optional CAS; returns the deleted value and the deletion's revision.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> impl Future<Output = Result<(KeyValue, Revision), StoreError>> + Send;

    /// Every event under `prefix` with revision > `after`, in revision order, then live ones.
    /// Err(Compacted) at once if `after` < the compacted revision. A consumer that falls too far
    /// behind gets Err(WatchLagged) and the channel closes (never block writers on a slow
    /// watcher).
    fn watch(
        &self,
        prefix: &str,
        after: Revision,
    ) -> impl Future<Output = Result<WatchReceiver, StoreError>> + Send;

    /// The revision of the latest write.
    fn current_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// The oldest revision reads and watches may still ask for.
    fn compacted_revision(&self) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Drops history older than `revision`: afterwards reads at revisions below it fail with
    /// `Compacted`. `Compacted` if `revision` is not above the compacted revision,
    /// `FutureRevision` if it is above the current one.
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), StoreError>> + Send;
}
