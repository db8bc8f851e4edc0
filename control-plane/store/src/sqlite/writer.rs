//! The group-commit writer: one thread owns the only writing connection. It takes every
//! request waiting in its queue (up to `max_batch`), applies them in order in one transaction,
//! commits once (one fsync), then publishes the events and answers each caller. While it
//! fsyncs, new requests queue up and form the next batch, so batches grow with load and no
//! timer adds latency when the store is idle.
//!
//! Compaction and vacuum steps go through the same queue, each in its own short transaction,
//! so they interleave with write batches instead of holding the database lock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    thread,
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use super::schema::{WRITER_BUSY_TIMEOUT, checkpoint, sql_err};
use crate::{Event, KeyValue, Revision, StoreError};

/// What readers outside the writer may know without a query.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// The revision of the last committed write.
    pub revision: AtomicI64,
    pub compacted: AtomicI64,
    /// Frames in the WAL at the background checkpointer's last pass.
    pub wal_frames: AtomicI64,
}

impl Shared {
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    pub fn compacted(&self) -> Revision {
        self.compacted.load(Ordering::Acquire)
    }
}

pub(super) enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

pub(super) enum Written {
    Put(KeyValue),
    Deleted(KeyValue, Revision),
}

pub(super) enum Maintenance {
    /// Raise the compacted revision: from then on reads below it fail. Validated here, where
    /// the current revision is exact.
    SetCompacted(Revision),
    /// Prune the log rows made obsolete by the compaction, `compaction_batch` revisions at a
    /// time. Answers whether more remain.
    CompactChunk,
    /// Return up to `vacuum_batch` free pages to the file system if at least `min_free` pages
    /// are free. Answers how many free pages remain.
    Vacuum { min_free: i64 },
    /// Checkpoint everything and cut the WAL file to zero bytes, waiting at most 100 ms for
    /// readers. Answers 1 when it was truncated.
    TruncateWal,
}

pub(super) enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    },
    Maintenance {
        task: Maintenance,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
}

pub(super) struct WriterConfig {
    pub max_batch: usize,
    pub compaction_batch: i64,
    pub vacuum_batch: i64,
    pub wal_reset_frames: i64,
}

pub(super) struct Writer {
    conn: Connection,
    /// Held (not read) for as long as this thread writes: see `lock_exclusively`.
    _lock: std::fs::File,
    revision: Revision,
    compacted: Revision,
    /// Log rows at or below this revision have been pruned for the current compaction.
    cursor: Revision,
    config: WriterConfig,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Event>>,
}

type Outcome = Result<(Written, Event), StoreError>;

impl Writer {
    pub fn new(
        conn: Connection,
        lock: std::fs::File,
        config: WriterConfig,
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<Event>>,
    ) -> Result<Writer, StoreError> {
        let meta = |name: &str| -> Result<i64, StoreError> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .map_err(sql_err("reading store metadata"))
        };
        let compacted = meta("compacted")?;
        let cursor = meta("compact_cursor")?;
        let last_logged: i64 = conn
            .query_row("SELECT IFNULL(MAX(revision), 0) FROM log", [], |r| r.get(0))
            .map_err(sql_err("reading the latest revision"))?;
        // Compaction may have pruned the newest row (a tombstone at the compacted revision), but
        // never a revision above it, so this is the last revision ever handed out.
        let revision = last_logged.max(compacted);
        shared.revision.store(revision, Ordering::Release);
        shared.compacted.store(compacted, Ordering::Release);
        Ok(Writer {
            conn,
            _lock: lock,
            revision,
            compacted,
            cursor,
            config,
            shared,
            events,
        })
    }

    /// Whether a compaction was interrupted (by a crash) and still has rows to prune.
    pub fn compaction_pending(&self) -> bool {
        self.cursor < self.compacted
    }

    pub fn spawn(
        self,
        requests: mpsc::Receiver<Request>,
    ) -> std::io::Result<thread::JoinHandle<()>> {
        thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || self.run(requests))
    }

    fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        // Ends when every sender (the store and its clones) is gone and the queue is drained.
        while let Some(first) = requests.blocking_recv() {
            batch.push(first);
            while batch.len() < self.config.max_batch {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
            self.maybe_reset_wal();
        }
    }

    /// Lets the WAL start over from its beginning once it has grown past `wal_reset_frames`.
    ///
    /// SQLite rewinds the WAL only when a write transaction begins while every frame in it is
    /// already in the database file. The background checkpointer copies the bulk concurrently,
    /// but with writes arriving all the time it never catches up at such a moment, and the WAL
    /// grows without bound (kine's failure mode). So between two batches, when nothing else
    /// can append, the writer itself copies what the background pass left (PASSIVE: no waiting
    /// on readers); the next batch then rewinds the WAL, and journal_size_limit trims the file.
    fn maybe_reset_wal(&mut self) {
        if self.shared.wal_frames.load(Ordering::Acquire) < self.config.wal_reset_frames {
            return;
        }
        self.shared.wal_frames.store(0, Ordering::Release);
        match checkpoint(&self.conn, "PASSIVE") {
            Ok(done) => debug!(?done, "writer checkpoint"),
            // The background pass holds the checkpoint lock; it reports again shortly.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                debug!("writer checkpoint skipped: a checkpoint is running");
            }
            Err(error) => warn!(%error, "writer checkpoint failed"),
        }
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        let mut writes = Vec::with_capacity(batch.len());
        for request in batch.drain(..) {
            match request {
                Request::Write { op, reply } => writes.push((op, reply)),
                Request::Maintenance { task, reply } => {
                    // Keep queue order: writes queued before the task commit first.
                    self.commit_writes(&mut writes);
                    let _ = reply.send(self.maintain(task));
                }
            }
        }
        self.commit_writes(&mut writes);
    }

    fn commit_writes(
        &mut self,
        writes: &mut Vec<(WriteOp, oneshot::Sender<Result<Written, StoreError>>)>,
    ) {
        if writes.is_empty() {
            return;
        }
        let (ops, replies): (Vec<_>, Vec<_>) = writes.drain(..).unzip();
        match self.apply_batch(ops) {
            Ok((outcomes, revision)) => {
                self.revision = revision;
                self.shared.revision.store(revision, Ordering::Release);
                // Publish before answering, in revision order: a caller that starts a watch
                // right after its write returns finds the event in the log or the live stream.
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let answer = outcome.map(|(written, event)| {
                        // No receivers is not an error: nobody is watching.
                        let _ = self.events.send(Arc::new(event));
                        written
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(source) => {
                warn!(error = %source, "write batch rolled back");
                let message = source.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::backend(
                        "committing a write batch",
                        message.clone(),
                    )));
                }
            }
        }
    }

    /// Applies every op in one transaction. Ops that fail their precondition get their error
    /// and consume no revision; any SQLite error rolls the whole batch back.
    fn apply_batch(&mut self, ops: Vec<WriteOp>) -> rusqlite::Result<(Vec<Outcome>, Revision)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut revision = self.revision;
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            let outcome = apply(&tx, op, revision + 1)?;
            if outcome.is_ok() {
                revision += 1;
            }
            outcomes.push(outcome);
        }
        tx.commit()?;
        Ok((outcomes, revision))
    }

    fn maintain(&mut self, task: Maintenance) -> Result<i64, StoreError> {
        match task {
            Maintenance::SetCompacted(revision) => {
                if revision <= self.compacted {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        compacted: self.compacted,
                    });
                }
                if revision > self.revision {
                    return Err(StoreError::FutureRevision {
                        requested: revision,
                        current: self.revision,
                    });
                }
                self.conn
                    .execute(
                        "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
                        [revision],
                    )
                    .map_err(sql_err("recording the compacted revision"))?;
                self.compacted = revision;
                self.shared.compacted.store(revision, Ordering::Release);
                Ok(revision)
            }
            Maintenance::CompactChunk => {
                if self.cursor >= self.compacted {
                    return Ok(0);
                }
                let upto = self
                    .compacted
                    .min(self.cursor.saturating_add(self.config.compaction_batch));
                prune(&mut self.conn, self.cursor, upto)
                    .map_err(sql_err("pruning compacted log rows"))?;
                self.cursor = upto;
                Ok(i64::from(self.cursor < self.compacted))
            }
            Maintenance::Vacuum { min_free } => {
                let free = |conn: &Connection| -> rusqlite::Result<i64> {
                    conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
                };
                let before = free(&self.conn).map_err(sql_err("counting free pages"))?;
                if before < min_free.max(1) {
                    return Ok(0);
                }
                // The pragma frees one page per step: run it to completion (execute_batch would
                // step it once).
                let sql = format!("PRAGMA incremental_vacuum({})", self.config.vacuum_batch);
                self.conn
                    .prepare(&sql)
                    .and_then(|mut stmt| {
                        let mut rows = stmt.query([])?;
                        while rows.next()?.is_some() {}
                        Ok(())
                    })
                    .map_err(sql_err("vacuuming free pages"))?;
                free(&self.conn).map_err(sql_err("counting free pages"))
            }
            Maintenance::TruncateWal => {
                // Readers are short; don't hold up the writes queued behind this for long.
                self.conn
                    .busy_timeout(Duration::from_millis(100))
                    .map_err(sql_err("truncating the WAL"))?;
                let result = checkpoint(&self.conn, "TRUNCATE");
                self.conn
                    .busy_timeout(WRITER_BUSY_TIMEOUT)
                    .map_err(sql_err("truncating the WAL"))?;
                match result {
                    Ok(done) => Ok(i64::from(!done.busy)),
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy =>
                    {
                        Ok(0)
                    }
                    Err(e) => Err(StoreError::backend("truncating the WAL", e)),
                }
            }
        }
    }
}

/// Deletes the log rows that no read at or above the compacted revision can see, for
/// revisions in `(from, to]`, in one transaction, and records the progress.
///
/// A row is obsolete once a newer row of its key exists at or below the compacted revision
/// (the newer row names it as `prev_revision`), and a tombstone at or below it is obsolete
/// itself. The newest row of a key at or below the compacted revision stays when it is a
/// value: reads at the compacted revision and the previous value of later events need it.
fn prune(conn: &mut Connection, from: Revision, to: Revision) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "DELETE FROM log WHERE revision IN (
             SELECT prev_revision FROM log
             WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0)",
        params![from, to],
    )?;
    tx.execute(
        "DELETE FROM log WHERE revision > ?1 AND revision <= ?2 AND deleted = 1",
        params![from, to],
    )?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'compact_cursor'",
        [to],
    )?;
    tx.commit()
}

/// The live row of `key`: (create_revision, mod_revision, value).
fn live(
    tx: &Transaction<'_>,
    key: &str,
) -> rusqlite::Result<Option<(Revision, Revision, Vec<u8>)>> {
    tx.prepare_cached(
        "SELECT c.create_revision, c.mod_revision, l.value
         FROM current c JOIN log l ON l.revision = c.mod_revision
         WHERE c.key = ?1",
    )?
    .query_row([key.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    .optional()
}

fn append(
    tx: &Transaction<'_>,
    revision: Revision,
    key: &str,
    create_revision: Revision,
    prev_revision: Revision,
    value: Option<&[u8]>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO log (revision, key, create_revision, prev_revision, deleted, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        revision,
        key.as_bytes(),
        create_revision,
        prev_revision,
        value.is_none(),
        value
    ])?;
    Ok(())
}

/// One write at `revision`, inside the batch transaction.
fn apply(tx: &Transaction<'_>, op: WriteOp, revision: Revision) -> rusqlite::Result<Outcome> {
    match op {
        WriteOp::Create { key, value } => {
            let exists = tx
                .prepare_cached("SELECT 1 FROM current WHERE key = ?1")?
                .exists([key.as_bytes()])?;
            if exists {
                return Ok(Err(StoreError::AlreadyExists { key }));
            }
            append(tx, revision, &key, revision, 0, Some(&value))?;
            tx.prepare_cached(
                "INSERT INTO current (key, create_revision, mod_revision) VALUES (?1, ?2, ?2)",
            )?
            .execute(params![key.as_bytes(), revision])?;
            let kv = KeyValue {
                key,
                value,
                create_revision: revision,
                mod_revision: revision,
            };
            let event = Event::Put {
                kv: kv.clone(),
                prev: None,
            };
            Ok(Ok((Written::Put(kv), event)))
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let Some((create_revision, mod_revision, old)) = live(tx, &key)? else {
                return Ok(Err(StoreError::NotFound { key }));
            };
            if mod_revision != expected {
                return Ok(Err(StoreError::Conflict {
                    key,
                    expected,
                    actual: mod_revision,
                }));
            }
            append(
                tx,
                revision,
                &key,
                create_revision,
                mod_revision,
                Some(&value),
            )?;
            tx.prepare_cached("UPDATE current SET mod_revision = ?2 WHERE key = ?1")?
                .execute(params![key.as_bytes(), revision])?;
            let prev = KeyValue {
                key: key.clone(),
                value: old,
                create_revision,
                mod_revision,
            };
            let kv = KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
            };
            let event = Event::Put {
                kv: kv.clone(),
                prev: Some(prev),
            };
            Ok(Ok((Written::Put(kv), event)))
        }
        WriteOp::Delete { key, expected } => {
            let Some((create_revision, mod_revision, old)) = live(tx, &key)? else {
                return Ok(Err(StoreError::NotFound { key }));
            };
            if let Some(expected) = expected
                && expected != mod_revision
            {
                return Ok(Err(StoreError::Conflict {
                    key,
                    expected,
                    actual: mod_revision,
                }));
            }
            append(tx, revision, &key, create_revision, mod_revision, None)?;
            tx.prepare_cached("DELETE FROM current WHERE key = ?1")?
                .execute([key.as_bytes()])?;
            let prev = KeyValue {
                key,
                value: old,
                create_revision,
                mod_revision,
            };
            let event = Event::Delete {
                prev: prev.clone(),
                revision,
            };
            Ok(Ok((Written::Deleted(prev, revision), event)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::schema::open_writer;

    fn write(conn: &mut Connection, op: WriteOp, revision: Revision) -> Outcome {
        let tx = conn.transaction().unwrap();
        let outcome = apply(&tx, op, revision).unwrap();
        tx.commit().unwrap();
        outcome
    }

    fn create(key: &str, value: &[u8]) -> WriteOp {
        WriteOp::Create {
            key: key.into(),
            value: value.to_vec(),
        }
    }

    fn revisions(conn: &Connection) -> Vec<Revision> {
        conn.prepare("SELECT revision FROM log ORDER BY revision")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn prune_keeps_exactly_what_reads_at_the_compacted_revision_need() {
        let dir = std::env::temp_dir().join(format!("skiff-store-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = open_writer(&dir.join("state.db")).unwrap();

        write(&mut conn, create("/a", b"1"), 1).unwrap();
        let update = |value: &[u8], expected| WriteOp::Update {
            key: "/a".into(),
            value: value.to_vec(),
            expected,
        };
        write(&mut conn, update(b"2", 1), 2).unwrap();
        write(&mut conn, create("/b", b"b"), 3).unwrap();
        let delete_b = WriteOp::Delete {
            key: "/b".into(),
            expected: Some(3),
        };
        write(&mut conn, delete_b, 4).unwrap();
        write(&mut conn, create("/c", b"c"), 5).unwrap();
        write(&mut conn, update(b"3", 2), 6).unwrap();
        // Preconditions are checked against the live row.
        assert!(matches!(
            write(&mut conn, update(b"x", 2), 7),
            Err(StoreError::Conflict { actual: 6, .. })
        ));
        assert!(matches!(
            write(&mut conn, create("/c", b"again"), 7),
            Err(StoreError::AlreadyExists { .. })
        ));

        // Compacted at 4: /a@1 is superseded by /a@2 (kept: it is /a as of 4 and the previous
        // value of /a@6), /b@3 and its tombstone @4 go, /c@5 and /a@6 are newer.
        prune(&mut conn, 0, 2).unwrap();
        assert_eq!(revisions(&conn), [2, 3, 4, 5, 6]);
        prune(&mut conn, 2, 4).unwrap();
        assert_eq!(revisions(&conn), [2, 5, 6]);
        let cursor: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'compact_cursor'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cursor, 4);
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
