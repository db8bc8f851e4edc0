//! Behaviour specific to the embedded SQLite backend: slow watchers, reopening, and
//! compaction that runs beside writers and gives disk space back.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{TempDir, conformance::recv};
use skiff_store::{Event, SqliteConfig, SqliteStore, Store, StoreError};

fn quiet_config() -> SqliteConfig {
    SqliteConfig {
        compaction: None,
        ..SqliteConfig::default()
    }
}

/// A watcher whose consumer does not read while thousands of events go by falls off the
/// live ring, reads the missed events back from the log, and still delivers each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_recovers_from_the_log() {
    let dir = TempDir::new("slow-watch");
    let config = SqliteConfig {
        broadcast_capacity: 8,
        watch_buffer: 4,
        ..quiet_config()
    };
    let store = SqliteStore::open(dir.path().join("state.db"), config)
        .await
        .unwrap();
    let mut rx = store.watch("/slow/", 0).await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..2000 {
        let kv = store
            .create(&format!("/slow/{i:05}"), vec![7; 64])
            .await
            .unwrap();
        revisions.push(kv.mod_revision);
        // Noise outside the prefix.
        if i % 100 == 0 {
            store.create(&format!("/other/{i}"), vec![]).await.unwrap();
        }
    }
    for expected in revisions {
        assert_eq!(recv(&mut rx).await.revision(), expected);
    }
    common::conformance::assert_quiet(&mut rx).await;
}

/// A watcher still behind when compaction removes what it needs gets WatchLagged, after the
/// events it could still be given, and its channel closes. Writers never waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_behind_compaction_gets_lagged() {
    let dir = TempDir::new("lagged");
    let config = SqliteConfig {
        broadcast_capacity: 4,
        watch_buffer: 2,
        ..quiet_config()
    };
    let store = SqliteStore::open(dir.path().join("state.db"), config)
        .await
        .unwrap();
    let mut rx = store.watch("/lag/", 0).await.unwrap();
    let started = Instant::now();
    for i in 0..200 {
        store
            .create(&format!("/lag/{i:03}"), vec![1])
            .await
            .unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    let mut delivered = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
        {
            Some(Ok(event)) => {
                delivered += 1;
                assert_eq!(event.revision(), delivered);
            }
            Some(Err(StoreError::WatchLagged {
                last_delivered,
                compacted,
            })) => {
                assert_eq!(compacted, current);
                assert!(last_delivered < compacted);
                break;
            }
            other => panic!("expected events then WatchLagged, got {other:?}"),
        }
    }
    assert!(delivered < 200, "nothing was lost, so nothing should lag");
    assert!(
        rx.recv().await.is_none(),
        "the channel closes after WatchLagged"
    );
}

/// Everything written survives a reopen, and revisions continue where they stopped, even when
/// the newest log row (a tombstone) was compacted away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_and_revisions() {
    let dir = TempDir::new("reopen");
    let path = dir.path().join("nested").join("state.db");
    let (kept, last) = {
        let store = SqliteStore::open(&path, quiet_config()).await.unwrap();
        let kept = store.create("/r/kept", b"v".to_vec()).await.unwrap();
        store.create("/r/tmp", b"t".to_vec()).await.unwrap();
        let (_, last) = store.delete("/r/tmp", None).await.unwrap();
        store.compact(last).await.unwrap();
        (kept, last)
    };
    // The old writer thread finishes on its own; a new one takes over the file.
    let store = SqliteStore::open(&path, quiet_config()).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), last);
    assert_eq!(store.compacted_revision().await.unwrap(), last);
    assert_eq!(store.get("/r/kept", None).await.unwrap(), Some(kept));
    assert_eq!(store.get("/r/tmp", None).await.unwrap(), None);
    let next = store.create("/r/next", vec![]).await.unwrap();
    assert_eq!(next.mod_revision, last + 1);
    assert_eq!(store.verify().await.unwrap(), Vec::<String>::new());
    // A second store on the same file would hand out the same revisions: refused.
    match SqliteStore::open(&path, quiet_config()).await {
        Err(StoreError::Backend { source, .. }) => {
            assert!(source.to_string().contains("in use"), "{source}");
        }
        other => panic!("second open of a live store: {other:?}"),
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A big compaction runs in small steps queued between write batches: writes keep completing
/// while it runs, and afterwards the database file and the WAL are smaller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_does_not_block_writers_and_gives_space_back() {
    let dir = TempDir::new("compaction");
    let path = dir.path().join("state.db");
    let config = SqliteConfig {
        compaction_batch: 500,
        ..quiet_config()
    };
    let store = SqliteStore::open(&path, config).await.unwrap();

    // History: 200 keys rewritten 100 times with 2 KiB values (about 40 MiB of log).
    const KEYS: usize = 200;
    const ROUNDS: usize = 100;
    let value = vec![0x5A; 2048];
    let mut tasks = Vec::new();
    for k in 0..KEYS {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/big/{k:04}");
            let mut kv = store.create(&key, value.clone()).await.unwrap();
            for _ in 1..ROUNDS {
                kv = store
                    .update(&key, value.clone(), kv.mod_revision)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let target = store.current_revision().await.unwrap();
    assert_eq!(target as usize, KEYS * ROUNDS);
    // Let the background checkpointer copy the WAL in, so sizes compare like with like.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db_before = file_len(&path);
    let wal_path = dir.path().join("state.db-wal");
    let wal_before = file_len(&wal_path);
    eprintln!("before compaction: db {db_before} bytes, wal {wal_before} bytes");
    // About 100 MiB went through the WAL, but it started over every few MiB: the file never
    // passes journal_size_limit (64 MiB) by much.
    assert!(
        wal_before < 70 << 20,
        "the WAL kept growing: {wal_before} bytes"
    );

    // Writers run for the whole compaction and count what completes while it is in progress.
    let compacting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let max_latency_us = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, compacting, stop, during, max_latency_us) = (
            store.clone(),
            compacting.clone(),
            stop.clone(),
            during.clone(),
            max_latency_us.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let started = Instant::now();
                store
                    .create(&format!("/live/{w}/{i:06}"), vec![1; 100])
                    .await
                    .unwrap();
                let latency = started.elapsed().as_micros() as u64;
                if compacting.load(Ordering::Acquire) {
                    during.fetch_add(1, Ordering::Relaxed);
                    max_latency_us.fetch_max(latency, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    compacting.store(true, Ordering::Release);
    let started = Instant::now();
    store.compact(target).await.unwrap();
    let took = started.elapsed();
    compacting.store(false, Ordering::Release);
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.await.unwrap();
    }
    let during = during.load(Ordering::Relaxed);
    eprintln!(
        "compaction of {target} revisions took {took:?}; {during} writes completed meanwhile, \
         slowest {} ms",
        max_latency_us.load(Ordering::Relaxed) / 1000
    );
    assert!(
        during >= 20,
        "only {during} writes completed during a {took:?} compaction"
    );

    let db_after = file_len(&path);
    let wal_after = file_len(&wal_path);
    eprintln!("after compaction: db {db_after} bytes, wal {wal_after} bytes");
    assert!(
        db_after < db_before / 2,
        "database file did not shrink: {db_before} -> {db_after}"
    );
    assert!(
        wal_after < wal_before.max(1) || wal_after == 0,
        "WAL did not shrink: {wal_before} -> {wal_after}"
    );

    // Nothing that should stay was lost.
    let listed = store.list("/big/", None, None, None).await.unwrap();
    assert_eq!(listed.items.len(), KEYS);
    assert!(listed.items.iter().all(|kv| kv.value == value));
    assert_eq!(
        store
            .get("/big/0000", Some(target))
            .await
            .unwrap()
            .unwrap()
            .value,
        value
    );
    assert_eq!(store.verify().await.unwrap(), Vec::<String>::new());
}

/// The background compactor keeps the configured number of revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_keeps_the_last_revisions() {
    let dir = TempDir::new("background");
    let config = SqliteConfig {
        compaction: Some(skiff_store::CompactionPolicy {
            keep_revisions: Some(50),
            keep_for: None,
            interval: Duration::from_millis(100),
        }),
        ..quiet_config()
    };
    let store = SqliteStore::open(dir.path().join("state.db"), config)
        .await
        .unwrap();
    let mut kv = store.create("/bg/k", vec![0]).await.unwrap();
    for i in 1..300_u16 {
        kv = store
            .update("/bg/k", i.to_be_bytes().to_vec(), kv.mod_revision)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.compacted_revision().await.unwrap() != 250 {
        assert!(Instant::now() < deadline, "background compaction never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        store.get("/bg/k", Some(249)).await,
        Err(StoreError::Compacted { .. })
    ));
    let at_250 = store.get("/bg/k", Some(250)).await.unwrap().unwrap();
    assert_eq!(at_250.mod_revision, 250);
    let mut rx = store.watch("/bg/", 250).await.unwrap();
    match recv(&mut rx).await {
        Event::Put { kv, prev } => {
            assert_eq!(kv.mod_revision, 251);
            assert_eq!(prev.unwrap().mod_revision, 250);
        }
        other => panic!("{other:?}"),
    }
}
