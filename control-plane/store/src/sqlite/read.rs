//! Reads, each inside one read transaction so the revision it reports and the rows it returns
//! come from the same WAL snapshot. They run on a small pool of read-only connections, which
//! WAL mode lets proceed while the writer commits.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::schema::{open_reader, sql_err};
use crate::{
    Event, KeyValue, ListPage, Revision, StoreError,
    keys::{list_start, prefix_end},
};

/// Idle read connections, opened on demand; at most `max_idle` are kept.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

impl ReadPool {
    pub fn new(path: PathBuf, max_idle: usize) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Runs `read` on a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&pool.path).map_err(sql_err("opening a read connection"))?,
            };
            let result = read(&mut conn);
            let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < pool.max_idle {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::backend("running a read", e))?
    }
}

/// The revisions a snapshot can serve.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub current: Revision,
    pub compacted: Revision,
}

impl Header {
    fn read(tx: &Transaction<'_>) -> Result<Header, StoreError> {
        tx.prepare_cached(
            "SELECT (SELECT IFNULL(MAX(revision), 0) FROM log),
                    (SELECT value FROM meta WHERE name = 'compacted')",
        )
        .and_then(|mut stmt| {
            stmt.query_row([], |r| {
                let logged: Revision = r.get(0)?;
                let compacted: Revision = r.get(1)?;
                Ok(Header {
                    current: logged.max(compacted),
                    compacted,
                })
            })
        })
        .map_err(sql_err("reading the store revision"))
    }

    /// `requested` must lie in `[compacted, current]`.
    fn check(self, requested: Revision) -> Result<(), StoreError> {
        if requested < self.compacted {
            return Err(StoreError::Compacted {
                requested,
                compacted: self.compacted,
            });
        }
        if requested > self.current {
            return Err(StoreError::FutureRevision {
                requested,
                current: self.current,
            });
        }
        Ok(())
    }
}

fn begin(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction()
        .map_err(sql_err("starting a read transaction"))
}

fn key_of(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// A `(key, create_revision, mod_revision, value)` row.
fn kv_row(r: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: key_of(r.get(0)?)?,
        create_revision: r.get(1)?,
        mod_revision: r.get(2)?,
        value: r.get(3)?,
    })
}

pub(super) fn get(
    conn: &mut Connection,
    key: &str,
    revision: Option<Revision>,
) -> Result<Option<KeyValue>, StoreError> {
    let tx = begin(conn)?;
    let historic = match revision {
        None => None,
        Some(revision) => {
            let header = Header::read(&tx)?;
            header.check(revision)?;
            (revision < header.current).then_some(revision)
        }
    };
    let found = match historic {
        None => tx
            .prepare_cached(
                "SELECT c.key, c.create_revision, c.mod_revision, l.value
                 FROM current c JOIN log l ON l.revision = c.mod_revision
                 WHERE c.key = ?1",
            )
            .and_then(|mut stmt| stmt.query_row([key.as_bytes()], kv_row).optional()),
        Some(revision) => tx
            .prepare_cached(
                "SELECT key, create_revision, revision, value FROM log
                 WHERE key = ?1 AND revision <= ?2 AND deleted = 0
                   AND revision = (SELECT MAX(revision) FROM log
                                   WHERE key = ?1 AND revision <= ?2)",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![key.as_bytes(), revision], kv_row)
                    .optional()
            }),
    };
    found.map_err(sql_err("reading a key"))
}

/// Rows of the keys in `[?1, ?2)` as of revision ?3.
const HISTORIC_ROWS: &str = "SELECT l.key, l.create_revision, l.revision, l.value FROM log l
     WHERE l.key >= ?1 AND l.key < ?2 AND l.revision <= ?3
       AND l.revision = (SELECT MAX(x.revision) FROM log x
                         WHERE x.key = l.key AND x.revision <= ?3)
       AND l.deleted = 0";

pub(super) fn list(
    conn: &mut Connection,
    prefix: &str,
    revision: Option<Revision>,
    start_after: Option<&str>,
    limit: Option<usize>,
) -> Result<ListPage, StoreError> {
    let tx = begin(conn)?;
    let header = Header::read(&tx)?;
    let at = match revision {
        Some(revision) => {
            header.check(revision)?;
            revision
        }
        None => header.current,
    };
    let start = list_start(prefix.as_bytes(), start_after.map(str::as_bytes));
    let end = prefix_end(prefix.as_bytes());
    // 0 means "no limit", as in Kubernetes.
    let limit = limit.filter(|&n| n > 0);
    // One more row than asked tells whether more remain without a count in the common case.
    let fetch = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX - 1) + 1);
    let historic = at < header.current;

    let mut items = if historic {
        // The newest row of each key at or below `at`, skipping keys deleted by then. Walking
        // the (key, revision) index in order with a correlated MAX streams: the query stops
        // after the page instead of grouping (and sorting) the whole range first.
        tx.prepare_cached(&format!("{HISTORIC_ROWS} ORDER BY l.key LIMIT ?4"))
            .and_then(|mut stmt| {
                stmt.query_map(params![start, end, at, fetch], kv_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
    } else {
        tx.prepare_cached(
            "SELECT c.key, c.create_revision, c.mod_revision, l.value
             FROM current c JOIN log l ON l.revision = c.mod_revision
             WHERE c.key >= ?1 AND c.key < ?2
             ORDER BY c.key LIMIT ?3",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![start, end, fetch], kv_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    }
    .map_err(sql_err("listing keys"))?;

    let more = limit.is_some_and(|n| items.len() > n);
    let mut remaining = 0;
    if let Some(n) = limit
        && more
    {
        items.truncate(n);
        let last = items.last().map(|kv| kv.key.as_str());
        let after = list_start(prefix.as_bytes(), last.map(str::as_bytes));
        let counted: i64 = if historic {
            tx.prepare_cached(&HISTORIC_ROWS.replacen(
                "l.key, l.create_revision, l.revision, l.value",
                "COUNT(*)",
                1,
            ))
            .and_then(|mut stmt| stmt.query_row(params![after, end, at], |r| r.get(0)))
        } else {
            tx.prepare_cached("SELECT COUNT(*) FROM current WHERE key >= ?1 AND key < ?2")
                .and_then(|mut stmt| stmt.query_row(params![after, end], |r| r.get(0)))
        }
        .map_err(sql_err("counting remaining keys"))?;
        remaining = u64::try_from(counted).unwrap_or(0);
    }
    Ok(ListPage {
        items,
        revision: at,
        more,
        remaining,
    })
}

/// A page of history for a watcher.
pub(super) struct EventPage {
    pub events: Vec<Event>,
    /// The snapshot's current revision: with a short page, every event up to here was read.
    pub upto: Revision,
}

/// Events under `prefix` with revision > `after`, oldest first, at most `limit`.
pub(super) fn events(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<EventPage, StoreError> {
    let tx = begin(conn)?;
    let header = Header::read(&tx)?;
    if after < header.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: header.compacted,
        });
    }
    let start = prefix.as_bytes();
    let end = prefix_end(start);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let events = tx
        .prepare_cached(
            "SELECT l.key, l.create_revision, l.revision, l.value, l.deleted,
                    p.create_revision, p.revision, p.value, p.deleted
             FROM log l LEFT JOIN log p ON p.revision = l.prev_revision
             WHERE l.revision > ?1 AND l.revision <= ?2 AND l.key >= ?3 AND l.key < ?4
             ORDER BY l.revision LIMIT ?5",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![after, header.current, start, end, limit], event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql_err("reading history for a watch"))?;
    let events = events.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(EventPage {
        events,
        upto: header.current,
    })
}

fn event_row(r: &Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    let key = key_of(r.get(0)?)?;
    let create_revision: Revision = r.get(1)?;
    let revision: Revision = r.get(2)?;
    let deleted: bool = r.get(4)?;
    // The previous row is gone only when it was a tombstone (compaction drops those): then
    // the key did not exist before this write.
    let prev_revision: Option<Revision> = r.get(6)?;
    let prev_deleted: Option<bool> = r.get(8)?;
    let prev = match (prev_revision, prev_deleted) {
        (Some(mod_revision), Some(false)) => Some(KeyValue {
            key: key.clone(),
            value: r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
            create_revision: r.get(5)?,
            mod_revision,
        }),
        _ => None,
    };
    if deleted {
        let Some(prev) = prev else {
            return Ok(Err(StoreError::backend(
                "reading history for a watch",
                format!("log row {revision} deletes {key:?} but its previous value is missing"),
            )));
        };
        return Ok(Ok(Event::Delete { prev, revision }));
    }
    let kv = KeyValue {
        key,
        value: r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
        create_revision,
        mod_revision: revision,
    };
    Ok(Ok(Event::Put { kv, prev }))
}

/// Checks that the log and the current-state table agree. Returns the problems found.
pub(super) fn verify(conn: &mut Connection) -> Result<Vec<String>, StoreError> {
    let tx = begin(conn)?;
    let mut problems = Vec::new();
    let check = |sql: &str| -> Result<i64, StoreError> {
        tx.query_row(sql, [], |r| r.get(0))
            .map_err(sql_err("verifying the store"))
    };
    let quick: String = tx
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql_err("verifying the store"))?;
    if quick != "ok" {
        problems.push(format!("quick_check: {quick}"));
    }
    let dangling = check(
        "SELECT COUNT(*) FROM current c LEFT JOIN log l ON l.revision = c.mod_revision
         WHERE l.revision IS NULL OR l.key != c.key OR l.deleted != 0
            OR l.create_revision != c.create_revision",
    )?;
    if dangling > 0 {
        problems.push(format!(
            "{dangling} current rows do not point at a live log row"
        ));
    }
    let stale = check(
        "SELECT COUNT(*) FROM (SELECT key, MAX(revision) AS revision FROM log GROUP BY key) m
         JOIN log l ON l.revision = m.revision
         LEFT JOIN current c ON c.key = m.key
         WHERE (l.deleted = 0 AND (c.key IS NULL OR c.mod_revision != m.revision))
            OR (l.deleted = 1 AND c.key IS NOT NULL)",
    )?;
    if stale > 0 {
        problems.push(format!(
            "{stale} keys whose newest log row disagrees with the current table"
        ));
    }
    let header = Header::read(&tx)?;
    let above_current = check(&format!(
        "SELECT COUNT(*) FROM log WHERE revision > {}",
        header.current
    ))?;
    if above_current > 0 || header.compacted > header.current {
        problems.push(format!(
            "revisions beyond the current one (compacted {}, current {})",
            header.compacted, header.current
        ));
    }
    Ok(problems)
}
