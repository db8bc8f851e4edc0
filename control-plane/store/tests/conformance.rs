//! The conformance suite against every backend: SQLite in a temp dir, and real etcd servers
//! started on loopback by the test (one member, and three with the leader killed mid-way).

mod common;

use std::time::{Duration, Instant};

use common::{Etcd, TempDir, conformance, conformance::recv};
use skiff_store::{AnyStore, Store, StoreError, open_datastore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let dir = TempDir::new("conformance");
    let store = open_datastore("sqlite", dir.path()).await.unwrap();
    conformance::run_all(&store).await;
    let AnyStore::Sqlite(sqlite) = &store else {
        panic!("\"sqlite\" opened {store:?}")
    };
    assert_eq!(sqlite.path(), dir.path().join("state.db"));
    assert_eq!(sqlite.verify().await.unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_single_member() {
    let Some(etcd) = Etcd::start(1) else { return };
    // Wait until it answers, then go through the spec parser like the server does.
    etcd.connect("").await;
    let store = open_datastore(
        &etcd.spec("/skiff-conformance"),
        std::path::Path::new("/nonexistent"),
    )
    .await
    .unwrap();
    assert!(matches!(store, AnyStore::Etcd(_)));
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_three_members_and_leader_loss() {
    let Some(mut etcd) = Etcd::start(3) else {
        return;
    };
    let store = etcd.connect("/skiff-conformance").await;
    conformance::run_all(&store).await;

    // Writes continue, and a watch keeps every event, when the leader is killed.
    let prefix = "/ha/";
    let store = etcd.connect("").await;
    let start = store.current_revision().await.unwrap();
    let mut rx = store.watch(prefix, start).await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions.push(
            store
                .create(&format!("{prefix}{i:03}"), vec![1])
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let leader = etcd.leader().await;
    etcd.kill(leader);
    let killed_at = Instant::now();
    let mut retries = 0;
    for i in 20..60 {
        let key = format!("{prefix}{i:03}");
        loop {
            match store.create(&key, vec![2]).await {
                Ok(kv) => {
                    revisions.push(kv.mod_revision);
                    break;
                }
                // The attempt that failed may have been applied after all.
                Err(StoreError::AlreadyExists { .. }) => {
                    revisions.push(store.get(&key, None).await.unwrap().unwrap().mod_revision);
                    break;
                }
                Err(error)
                    if error.is_retryable() && killed_at.elapsed() < Duration::from_secs(20) =>
                {
                    retries += 1;
                    eprintln!(
                        "retrying write {i} at {:?}: {error}: {}",
                        killed_at.elapsed(),
                        std::error::Error::source(&error)
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!(
                    "write {i} after killing the leader: {error}: {:?}",
                    std::error::Error::source(&error)
                ),
            }
        }
    }
    eprintln!(
        "40 writes after killing leader m{leader} took {:?} ({retries} retried)",
        killed_at.elapsed()
    );
    let new_leader = etcd.leader().await;
    assert_ne!(new_leader, leader);
    for expected in &revisions {
        assert_eq!(recv(&mut rx).await.revision(), *expected);
    }
    conformance::assert_quiet(&mut rx).await;
}
