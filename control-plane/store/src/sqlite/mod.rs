//! The embedded backend: one SQLite file in WAL mode.
//!
//! - Writes go through one group-commit writer thread ([`writer`]); every write gets the next
//!   revision and is acknowledged only after its batch's commit has been fsynced.
//! - Reads run on pooled read connections ([`read`]) against WAL snapshots, concurrently with
//!   the writer; the latest state comes from the `current` table, older revisions from the log.
//! - Watches replay the log and then follow the writer's in-process broadcast ([`watch`]).
//! - Compaction raises the compacted revision, then prunes the log in small transactions queued
//!   behind writes, returns freed pages to the file system (incremental vacuum) and checkpoints
//!   the WAL, so neither the file nor the WAL grows without bound (the k3s/kine complaints).

mod read;
mod schema;
mod watch;
mod writer;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use rusqlite::Connection;
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};
use tracing::{debug, info, warn};

use self::{
    read::ReadPool,
    schema::sql_err,
    writer::{Maintenance, Request, Shared, WriteOp, Writer, WriterConfig, Written},
};
use crate::{KeyValue, ListPage, Revision, Store, StoreError, WatchReceiver, keys::check_key};

/// When the background compactor runs and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Keep at least this many of the newest revisions.
    pub keep_revisions: Option<u64>,
    /// Keep at least the revisions written within this long.
    pub keep_for: Option<Duration>,
    /// How often to look. A revision is compacted once it falls outside every `keep_*` limit
    /// that is set (with neither set, nothing is compacted).
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    /// Five minutes of history, as Kubernetes' apiserver keeps in etcd, and at least 1000
    /// revisions so a quiet cluster still lets watchers resume.
    fn default() -> Self {
        CompactionPolicy {
            keep_revisions: Some(1000),
            keep_for: Some(Duration::from_secs(300)),
            interval: Duration::from_secs(60),
        }
    }
}

/// Tuning for [`SqliteStore`]. The defaults suit a single-node cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// Most writes committed in one transaction (one fsync).
    pub max_batch: usize,
    /// Writes waiting for the writer before callers wait to enqueue.
    pub write_queue: usize,
    /// Idle read connections kept open.
    pub max_idle_readers: usize,
    /// Events buffered per watcher between its task and its consumer.
    pub watch_buffer: usize,
    /// Live events the broadcast ring holds; a watcher further behind re-reads the log.
    pub broadcast_capacity: usize,
    /// Background compaction; `None` compacts only on [`Store::compact`].
    pub compaction: Option<CompactionPolicy>,
    /// Revisions pruned per compaction transaction: bounds how long one step delays writes.
    pub compaction_batch: i64,
    /// Pages returned to the file system per vacuum transaction.
    pub vacuum_batch: i64,
    /// Vacuum after compaction only when at least this many pages (4 KiB each) are free;
    /// fewer are simply reused by later writes.
    pub vacuum_min_free_pages: i64,
    /// How often the WAL is checkpointed (PASSIVE, beside the writer) into the database file.
    pub checkpoint_interval: Duration,
    /// Once the WAL holds this many frames (pages), the writer finishes a checkpoint between
    /// two batches so the WAL starts over instead of growing.
    pub wal_reset_frames: i64,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            max_batch: 1024,
            write_queue: 8192,
            max_idle_readers: 8,
            watch_buffer: 1024,
            // Each slot pins its event until every live watcher has seen it or it is overwritten:
            // a small ring bounds that memory; watchers further behind re-read the log.
            broadcast_capacity: 4096,
            compaction: Some(CompactionPolicy::default()),
            compaction_batch: 1000,
            vacuum_batch: 1024,
            vacuum_min_free_pages: 2048,
            checkpoint_interval: Duration::from_millis(500),
            // 16 MiB of 4 KiB pages.
            wal_reset_frames: 4096,
        }
    }
}

/// The embedded store. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    config: SqliteConfig,
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<crate::Event>>,
    reads: Arc<ReadPool>,
    checkpointer: Arc<Mutex<Connection>>,
    /// One compaction at a time (the background one or an explicit `compact`).
    compacting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("revision", &self.inner.shared.revision())
            .field("compacted", &self.inner.shared.compacted())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and starts its writer thread and
    /// background tasks, which run on the current tokio runtime.
    pub async fn open(
        path: impl AsRef<Path>,
        config: SqliteConfig,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shared = Arc::new(Shared::default());
        let (events, _) = broadcast::channel(config.broadcast_capacity.max(1));
        let (writer, checkpointer) = {
            let path = path.clone();
            let shared = Arc::clone(&shared);
            let events = events.clone();
            let writer_config = WriterConfig {
                max_batch: config.max_batch.max(1),
                compaction_batch: config.compaction_batch.max(1),
                vacuum_batch: config.vacuum_batch.max(1),
                wal_reset_frames: config.wal_reset_frames.max(1),
            };
            tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        StoreError::backend(format!("creating {}", parent.display()), e)
                    })?;
                }
                let lock = lock_exclusively(&path)?;
                let conn = schema::open_writer(&path)
                    .map_err(sql_err("opening the database for writing"))?;
                let writer = Writer::new(conn, lock, writer_config, shared, events)?;
                let checkpointer = schema::open_checkpointer(&path)
                    .map_err(sql_err("opening the checkpoint connection"))?;
                Ok((writer, checkpointer))
            })
            .await
            .map_err(|e| StoreError::backend("opening the database", e))??
        };
        let resume_compaction = writer.compaction_pending();
        let (requests, queue) = mpsc::channel(config.write_queue.max(1));
        writer
            .spawn(queue)
            .map_err(|e| StoreError::backend("starting the writer thread", e))?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                reads: Arc::new(ReadPool::new(path.clone(), config.max_idle_readers)),
                path,
                config,
                requests,
                shared,
                events,
                checkpointer: Arc::new(Mutex::new(checkpointer)),
                compacting: tokio::sync::Mutex::new(()),
            }),
        };
        info!(
            path = %store.inner.path.display(),
            revision = store.inner.shared.revision(),
            compacted = store.inner.shared.compacted(),
            "sqlite store open"
        );
        if resume_compaction {
            // A crash interrupted pruning: finish it in the background.
            let store = store.clone();
            tokio::spawn(async move {
                let _running = store.inner.compacting.lock().await;
                if let Err(error) = store.finish_compaction().await {
                    warn!(%error, "resuming an interrupted compaction failed");
                }
            });
        }
        tokio::spawn(checkpoint_loop(Arc::downgrade(&store.inner)));
        if let Some(policy) = store.inner.config.compaction.clone() {
            tokio::spawn(compaction_loop(Arc::downgrade(&store.inner), policy));
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Checks that the log and the current-state table agree and that SQLite finds the file
    /// sound. Returns the problems found (empty when consistent).
    pub async fn verify(&self) -> Result<Vec<String>, StoreError> {
        self.inner.reads.run(read::verify).await
    }

    async fn write(&self, op: WriteOp) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Write { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn maintain(&self, task: Maintenance) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Maintenance { task, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Prunes, vacuums and checkpoints after the compacted revision was raised. The caller
    /// holds `compacting`.
    async fn finish_compaction(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut steps = 0_u64;
        while self.maintain(Maintenance::CompactChunk).await? > 0 {
            steps += 1;
        }
        let mut min_free = self.inner.config.vacuum_min_free_pages;
        let mut vacuumed = 0_u64;
        let mut left = i64::MAX;
        loop {
            let now_left = self.maintain(Maintenance::Vacuum { min_free }).await?;
            // Stop when done, or when deletes free pages as fast as we return them.
            if now_left == 0 || now_left >= left {
                break;
            }
            left = now_left;
            min_free = 1;
            vacuumed += 1;
        }
        // Copy the WAL in beside the writer first, so the TRUNCATE that follows (which writes
        // wait behind) has little left to copy.
        self.checkpoint().await?;
        let truncated = self.maintain(Maintenance::TruncateWal).await? > 0;
        debug!(
            steps,
            vacuum_steps = vacuumed,
            truncated,
            elapsed_ms = started.elapsed().as_millis(),
            "compaction finished"
        );
        Ok(())
    }

    /// Copies the WAL into the database file (PASSIVE: it never takes the write lock nor waits
    /// for readers, so it runs beside the writer) and tells the writer how big the WAL is.
    async fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = Arc::clone(&self.inner.checkpointer);
        let done = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            schema::checkpoint(&conn, "PASSIVE").map_err(sql_err("checkpointing the WAL"))
        })
        .await
        .map_err(|e| StoreError::backend("checkpointing the WAL", e))??;
        debug!(
            wal_frames = done.wal_frames,
            copied = done.copied,
            busy = done.busy,
            "checkpoint"
        );
        self.inner
            .shared
            .wal_frames
            .store(done.wal_frames, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// Takes `PATH.lock` exclusively, so a second store (in this or another process) cannot open
/// the same file: two writers would hand out the same revisions. The writer thread holds the
/// lock until it exits; a store just dropped may take a moment to let go, hence the wait.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::backend(format!("opening {}", lock_path.display()), e))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::backend(
                    format!("locking {}", lock_path.display()),
                    "the database is in use by another store",
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::backend(
                    format!("locking {}", lock_path.display()),
                    e,
                ));
            }
        }
    }
}

/// Checkpoints PASSIVE-ly whenever writes happened since the last pass; the writer uses the
/// WAL size it reports to decide when to let the WAL start over.
async fn checkpoint_loop(inner: Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|i| i.config.checkpoint_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut checkpointed = 0;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let revision = inner.shared.revision();
        if revision == checkpointed {
            continue;
        }
        let store = SqliteStore { inner };
        match store.checkpoint().await {
            Ok(()) => checkpointed = revision,
            Err(error) => warn!(%error, "WAL checkpoint failed"),
        }
    }
}

/// The revision to compact to under `policy`, given samples of (time, current revision).
fn compaction_target(
    policy: &CompactionPolicy,
    now: Instant,
    current: Revision,
    samples: &mut VecDeque<(Instant, Revision)>,
) -> Option<Revision> {
    if policy.keep_revisions.is_none() && policy.keep_for.is_none() {
        return None;
    }
    let by_count = policy
        .keep_revisions
        .map(|n| current.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX)));
    let by_age = policy.keep_for.map(|keep| {
        // The newest sample at least `keep` old: every revision up to it is older than `keep`.
        let mut target = 0;
        while let Some(&(at, revision)) = samples.front() {
            if now.saturating_duration_since(at) < keep {
                break;
            }
            target = revision;
            // Keep the last qualifying sample for the next round.
            if samples
                .get(1)
                .is_some_and(|&(next, _)| now.saturating_duration_since(next) >= keep)
            {
                samples.pop_front();
            } else {
                break;
            }
        }
        target
    });
    let target = match (by_count, by_age) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    (target > 0).then_some(target)
}

/// Compacts by `policy` every `interval`. Revision samples live in memory: after a restart the
/// age window starts over, which only keeps more history, never less.
async fn compaction_loop(inner: Weak<Inner>, policy: CompactionPolicy) {
    let mut tick = tokio::time::interval(policy.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut samples = VecDeque::new();
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let current = inner.shared.revision();
        samples.push_back((now, current));
        let Some(target) = compaction_target(&policy, now, current, &mut samples) else {
            continue;
        };
        if target <= inner.shared.compacted() {
            continue;
        }
        let store = SqliteStore { inner };
        match store.compact(target).await {
            Ok(()) => debug!(revision = target, "background compaction done"),
            // Someone compacted further meanwhile.
            Err(StoreError::Compacted { .. }) => {}
            Err(error) => warn!(%error, revision = target, "background compaction failed"),
        }
    }
}

impl Store for SqliteStore {
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.inner
            .reads
            .run(move |conn| read::get(conn, &key, revision))
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        revision: Option<Revision>,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.inner
            .reads
            .run(move |conn| read::list(conn, &prefix, revision, start_after.as_deref(), limit))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        check_key(key)?;
        let op = WriteOp::Create {
            key: key.to_owned(),
            value,
        };
        match self.write(op).await? {
            Written::Put(kv) => Ok(kv),
            Written::Deleted(..) => Err(unexpected_answer()),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        check_key(key)?;
        let op = WriteOp::Update {
            key: key.to_owned(),
            value,
            expected,
        };
        match self.write(op).await? {
            Written::Put(kv) => Ok(kv),
            Written::Deleted(..) => Err(unexpected_answer()),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        check_key(key)?;
        let op = WriteOp::Delete {
            key: key.to_owned(),
            expected,
        };
        match self.write(op).await? {
            Written::Deleted(prev, revision) => Ok((prev, revision)),
            Written::Put(_) => Err(unexpected_answer()),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        // Subscribe first: every event committed from here on reaches this receiver.
        let live = self.inner.events.subscribe();
        let compacted = self.inner.shared.compacted();
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let current = self.inner.shared.revision();
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        Ok(watch::spawn(
            Arc::clone(&self.inner.reads),
            live,
            prefix.to_owned(),
            after,
            self.inner.config.watch_buffer,
        ))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.shared.revision())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.shared.compacted())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let _running = self.inner.compacting.lock().await;
        self.maintain(Maintenance::SetCompacted(revision)).await?;
        info!(revision, "compacting");
        self.finish_compaction().await
    }
}

fn unexpected_answer() -> StoreError {
    StoreError::backend(
        "writing",
        "the writer answered with the wrong kind of result",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_target_keeps_the_union_of_both_windows() {
        let policy = CompactionPolicy {
            keep_revisions: Some(10),
            keep_for: Some(Duration::from_secs(60)),
            interval: Duration::from_secs(1),
        };
        let start = Instant::now();
        let mut samples = VecDeque::from([
            (start, 100),
            (start + Duration::from_secs(30), 200),
            (start + Duration::from_secs(90), 300),
        ]);
        // At +100s: the newest sample at least 60 s old is the one at +30s (revision 200);
        // count alone would allow 290. The smaller one wins.
        let now = start + Duration::from_secs(100);
        assert_eq!(
            compaction_target(&policy, now, 300, &mut samples),
            Some(200)
        );
        // The sample at +0s is no longer needed.
        assert_eq!(samples.len(), 2);

        let count_only = CompactionPolicy {
            keep_for: None,
            ..policy.clone()
        };
        assert_eq!(
            compaction_target(&count_only, now, 300, &mut samples),
            Some(290)
        );
        assert_eq!(compaction_target(&count_only, now, 5, &mut samples), None);

        let neither = CompactionPolicy {
            keep_revisions: None,
            keep_for: None,
            ..policy
        };
        assert_eq!(compaction_target(&neither, now, 300, &mut samples), None);
    }
}
