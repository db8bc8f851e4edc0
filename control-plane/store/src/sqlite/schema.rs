//! The on-disk layout and how each kind of connection is opened.
//!
//! ```text
//! log(revision INTEGER PRIMARY KEY, key BLOB, create_revision, prev_revision, deleted, value BLOB)
//!     one row per write; a delete is a tombstone row (deleted = 1, value NULL). prev_revision
//!     is the revision of the row this write replaced (0 for a create), so a watch event finds
//!     its previous value by primary key and compaction finds superseded rows without a scan.
//! log_key_revision(key, revision)
//!     reads at an old revision: the newest row of a key at or below it.
//! current(key BLOB PRIMARY KEY, create_revision, mod_revision) WITHOUT ROWID
//!     the live keys and the log row holding each one's value: get/list at the latest revision
//!     never look at history. Values are stored once, in the log.
//! meta(name PRIMARY KEY, value)
//!     compacted: reads below it fail; compact_cursor: log rows up to it are already pruned.
//! ```
//!
//! Keys are stored as BLOBs so ranges compare bytes (see `keys::prefix_end`).

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS current (
    key BLOB PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES
    ('schema_version', 1), ('compacted', 0), ('compact_cursor', 0);
";

/// Once the WAL has been fully checkpointed and restarts, SQLite truncates the file to this
/// size, so a burst of writes does not leave a huge WAL behind (k3s#4044, #5033).
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// How long the writer waits for a lock it should always get at once.
pub(super) const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Page cache per connection, in KiB (negative means KiB to SQLite).
const CACHE_KIB: i64 = 32 * 1024;

pub(super) fn sql_err(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::backend(context, source)
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Settings every connection shares.
fn common(conn: &Connection) -> rusqlite::Result<()> {
    // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, which survives a killed
    // process (the OS still has the pages) but not a power cut or kernel crash, so an
    // acknowledged write could vanish. FULL fsyncs the WAL at every commit; the group-commit
    // writer amortizes that one fsync over every write in the batch.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// The one connection that writes: creates the schema on first open.
pub(super) fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(path)?;
    // Must come before the first table exists: it lets compaction hand freed pages back to the
    // file system in small steps (PRAGMA incremental_vacuum) instead of a blocking VACUUM.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode:?}; WAL is required"
        )));
    }
    common(&conn)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    // No automatic checkpoint: it would run inside COMMIT and stall every write in the batch.
    // A separate connection checkpoints in the background; see `Writer::maybe_reset_wal`.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Nothing else takes the write lock (the lock file keeps other stores out, checkpoints on
    // other connections are PASSIVE); this only covers SQLite's own recovery after a crash.
    conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// A connection for reads: never writes, so a bug cannot write outside the writer's order.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(path)?;
    common(&conn)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// The connection that checkpoints the WAL into the database file.
pub(super) fn open_checkpointer(path: &Path) -> rusqlite::Result<Connection> {
    let conn = open(path)?;
    common(&conn)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

/// What a checkpoint did: whether it was blocked, how many frames the WAL holds, and how many
/// of them are now in the database file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checkpointed {
    pub busy: bool,
    pub wal_frames: i64,
    pub copied: i64,
}

pub(super) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpointed {
            busy: r.get::<_, i64>(0)? != 0,
            wal_frames: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_sets_wal_full_sync_and_incremental_vacuum() {
        let dir = std::env::temp_dir().join(format!("skiff-store-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let conn = open_writer(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let vacuum: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "auto_vacuum=INCREMENTAL");
        let compacted: i64 = conn
            .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(compacted, 0);
        // Opening again is a no-op on an existing schema.
        drop(conn);
        drop(open_writer(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
