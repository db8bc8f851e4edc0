//! The conformance suite: what every backend must do, written against the `Store` trait only.
//!
//! Each case works under its own key prefix and compares revisions relative to what it
//! observed, so it also holds on an etcd whose revision counter other cases already moved.

use std::{collections::HashSet, time::Duration};

use skiff_store::{Event, KeyValue, Revision, Store, StoreError, WatchReceiver};

const RECV_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every case, in order, printing each name so a failure says which one.
pub async fn run_all<S: Store>(store: &S) {
    macro_rules! case {
        ($name:ident) => {
            eprintln!("conformance: {}", stringify!($name));
            $name(store).await;
        };
    }
    case!(crud_and_cas);
    case!(invalid_keys);
    case!(list_pages_keep_their_snapshot);
    case!(list_prefixes_are_exact);
    case!(get_at_old_revisions);
    case!(watch_catch_up_then_live);
    case!(watch_from_the_middle);
    case!(watch_rejects_future_revisions);
    case!(large_values);
    case!(odd_keys);
    case!(concurrent_writers_and_watchers);
    // Last: compaction drops the history the other cases' revisions refer to.
    case!(compaction);
}

pub async fn recv(rx: &mut WatchReceiver) -> Event {
    match tokio::time::timeout(RECV_TIMEOUT, rx.recv()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch error: {error}"),
        Ok(None) => panic!("watch channel closed"),
        Err(_) => panic!("no watch event within {RECV_TIMEOUT:?}"),
    }
}

/// Asserts nothing arrives for a short while.
pub async fn assert_quiet(rx: &mut WatchReceiver) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("expected no event, got {got:?}");
    }
}

fn put_of(event: &Event) -> (&KeyValue, Option<&KeyValue>) {
    match event {
        Event::Put { kv, prev } => (kv, prev.as_ref()),
        Event::Delete { .. } => panic!("expected a put, got {event:?}"),
    }
}

async fn crud_and_cas<S: Store>(store: &S) {
    let key = "/conf/crud/a";
    let created = store.create(key, b"one".to_vec()).await.unwrap();
    assert_eq!(created.key, key);
    assert_eq!(created.value, b"one");
    assert_eq!(created.create_revision, created.mod_revision);
    assert_eq!(
        store.current_revision().await.unwrap(),
        created.mod_revision
    );
    assert_eq!(store.get(key, None).await.unwrap(), Some(created.clone()));

    match store.create(key, b"again".to_vec()).await {
        Err(StoreError::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("create of an existing key: {other:?}"),
    }

    match store
        .update(key, b"two".to_vec(), created.mod_revision - 1)
        .await
    {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, created.mod_revision - 1);
            assert_eq!(actual, created.mod_revision);
        }
        other => panic!("stale update: {other:?}"),
    }
    let updated = store
        .update(key, b"two".to_vec(), created.mod_revision)
        .await
        .unwrap();
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.value, b"two");
    assert_eq!(store.get(key, None).await.unwrap(), Some(updated.clone()));
    // Failed writes consume no revision.
    assert_eq!(
        store.current_revision().await.unwrap(),
        updated.mod_revision
    );

    match store.delete(key, Some(created.mod_revision)).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, updated.mod_revision),
        other => panic!("stale delete: {other:?}"),
    }
    let (deleted, at) = store.delete(key, Some(updated.mod_revision)).await.unwrap();
    assert_eq!(deleted, updated);
    assert!(at > updated.mod_revision);
    assert_eq!(store.current_revision().await.unwrap(), at);
    assert_eq!(store.get(key, None).await.unwrap(), None);

    for result in [
        store.update(key, b"x".to_vec(), at).await.map(|_| ()),
        store.update(key, b"x".to_vec(), 0).await.map(|_| ()),
        store.delete(key, None).await.map(|_| ()),
        store.delete(key, Some(at)).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::NotFound { key: k }) => assert_eq!(k, key),
            other => panic!("write to a missing key: {other:?}"),
        }
    }

    // Re-creating starts a new life: a new create_revision.
    let again = store.create(key, b"three".to_vec()).await.unwrap();
    assert!(again.create_revision > at);
    // Unconditional delete.
    let (gone, _) = store.delete(key, None).await.unwrap();
    assert_eq!(gone, again);
}

async fn invalid_keys<S: Store>(store: &S) {
    assert!(matches!(
        store.create("", b"x".to_vec()).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.get("", None).await,
        Err(StoreError::InvalidKey { .. })
    ));
}

async fn list_pages_keep_their_snapshot<S: Store>(store: &S) {
    let prefix = "/conf/pages/";
    let mut expected = Vec::new();
    for i in 0..25 {
        let kv = store
            .create(&format!("{prefix}{i:03}"), format!("v{i}").into_bytes())
            .await
            .unwrap();
        expected.push(kv);
    }
    // Neighbours that must not show up.
    store.create("/conf/pages", b"x".to_vec()).await.unwrap();
    store.create("/conf/pages0", b"x".to_vec()).await.unwrap();

    let first = store.list(prefix, None, None, Some(10)).await.unwrap();
    assert_eq!(first.items, expected[..10]);
    assert!(first.more);
    assert_eq!(first.remaining, 15);
    let snapshot = first.revision;
    assert_eq!(snapshot, store.current_revision().await.unwrap());

    // Change things behind the first page's back.
    let changed = &expected[12];
    store
        .update(&changed.key, b"changed".to_vec(), changed.mod_revision)
        .await
        .unwrap();
    store.delete(&expected[20].key, None).await.unwrap();
    store
        .create(&format!("{prefix}015a"), b"new".to_vec())
        .await
        .unwrap();

    // Continuing at the snapshot sees the snapshot.
    let mut items = first.items.clone();
    let mut last = first.items.last().unwrap().key.clone();
    let mut pages = 1;
    loop {
        let page = store
            .list(prefix, Some(snapshot), Some(&last), Some(10))
            .await
            .unwrap();
        assert_eq!(page.revision, snapshot);
        assert_eq!(page.remaining as usize, 25 - items.len() - page.items.len());
        items.extend(page.items.iter().cloned());
        pages += 1;
        if !page.more {
            break;
        }
        last = page.items.last().unwrap().key.clone();
    }
    assert_eq!(pages, 3);
    assert_eq!(items, expected);

    // The latest state has the changes.
    let latest = store.list(prefix, None, None, None).await.unwrap();
    assert!(!latest.more);
    assert_eq!(latest.remaining, 0);
    assert_eq!(latest.items.len(), 25);
    assert_eq!(latest.items[12].value, b"changed");
    assert!(latest.items.iter().any(|kv| kv.key.ends_with("015a")));
    assert!(!latest.items.iter().any(|kv| kv.key == expected[20].key));
    // Keys are in order.
    assert!(latest.items.windows(2).all(|w| w[0].key < w[1].key));
    // A limit of 0 means no limit.
    let unlimited = store.list(prefix, None, None, Some(0)).await.unwrap();
    assert_eq!(unlimited.items, latest.items);
    // An exact page boundary: no more.
    let exact = store.list(prefix, None, None, Some(25)).await.unwrap();
    assert!(!exact.more);
    assert_eq!(exact.remaining, 0);
}

async fn list_prefixes_are_exact<S: Store>(store: &S) {
    for key in [
        "/conf/px/a",
        "/conf/px/a/b",
        "/conf/px/ab",
        "/conf/px/a0",
        "/conf/px/b",
    ] {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let keys = |page: skiff_store::ListPage| -> Vec<String> {
        page.items.into_iter().map(|kv| kv.key).collect()
    };
    assert_eq!(
        keys(store.list("/conf/px/a/", None, None, None).await.unwrap()),
        ["/conf/px/a/b"]
    );
    assert_eq!(
        keys(store.list("/conf/px/a", None, None, None).await.unwrap()),
        ["/conf/px/a", "/conf/px/a/b", "/conf/px/a0", "/conf/px/ab"]
    );
    // start_after need not be an existing key.
    assert_eq!(
        keys(
            store
                .list("/conf/px/", None, Some("/conf/px/a1"), None)
                .await
                .unwrap()
        ),
        ["/conf/px/ab", "/conf/px/b"]
    );
    // The empty prefix is everything.
    let everything = store.list("", None, None, Some(2)).await.unwrap();
    assert_eq!(everything.items.len(), 2);
    assert!(everything.more);
    assert!(everything.remaining >= 3);
    assert!(
        store
            .list("/conf/px/zzz/", None, None, Some(5))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn get_at_old_revisions<S: Store>(store: &S) {
    let key = "/conf/history/k";
    let v1 = store.create(key, b"v1".to_vec()).await.unwrap();
    let v2 = store
        .update(key, b"v2".to_vec(), v1.mod_revision)
        .await
        .unwrap();
    let (_, deleted_at) = store.delete(key, None).await.unwrap();
    let v3 = store.create(key, b"v3".to_vec()).await.unwrap();

    assert_eq!(
        store.get(key, Some(v1.mod_revision - 1)).await.unwrap(),
        None
    );
    assert_eq!(
        store.get(key, Some(v1.mod_revision)).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        store.get(key, Some(v2.mod_revision)).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.get(key, Some(deleted_at)).await.unwrap(), None);
    assert_eq!(
        store.get(key, Some(v3.mod_revision)).await.unwrap(),
        Some(v3.clone())
    );
    assert_eq!(store.get(key, None).await.unwrap(), Some(v3.clone()));
    assert_ne!(v3.create_revision, v1.create_revision);

    let old = store
        .list("/conf/history/", Some(v2.mod_revision), None, None)
        .await
        .unwrap();
    assert_eq!(old.items, [v2]);
    assert_eq!(old.revision, v3.mod_revision - 2);
    assert!(
        store
            .list("/conf/history/", Some(deleted_at), None, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let current = store.current_revision().await.unwrap();
    match store.get(key, Some(current + 10)).await {
        Err(StoreError::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!(requested, current + 10);
            assert!(c >= current);
        }
        other => panic!("read in the future: {other:?}"),
    }
    assert!(matches!(
        store
            .list("/conf/history/", Some(current + 10), None, None)
            .await,
        Err(StoreError::FutureRevision { .. })
    ));
}

async fn watch_catch_up_then_live<S: Store>(store: &S) {
    let prefix = "/conf/watch1/";
    let start = store.current_revision().await.unwrap();
    let a = store
        .create(&format!("{prefix}a"), b"a1".to_vec())
        .await
        .unwrap();
    let a2 = store
        .update(&a.key, b"a2".to_vec(), a.mod_revision)
        .await
        .unwrap();
    store
        .create("/conf/watch1-outside", b"no".to_vec())
        .await
        .unwrap();
    let (deleted, deleted_at) = store.delete(&a.key, None).await.unwrap();

    let mut rx = store.watch(prefix, start).await.unwrap();
    // Catch-up from history, with previous values.
    let e1 = recv(&mut rx).await;
    assert_eq!(
        e1,
        Event::Put {
            kv: a.clone(),
            prev: None
        }
    );
    let e2 = recv(&mut rx).await;
    assert_eq!(
        e2,
        Event::Put {
            kv: a2.clone(),
            prev: Some(a.clone())
        }
    );
    let e3 = recv(&mut rx).await;
    assert_eq!(
        e3,
        Event::Delete {
            prev: deleted.clone(),
            revision: deleted_at
        }
    );
    assert_eq!(e3.revision(), deleted_at);
    assert_eq!(e3.key(), a.key);
    assert_quiet(&mut rx).await;

    // Live.
    let b = store
        .create(&format!("{prefix}b"), b"b1".to_vec())
        .await
        .unwrap();
    store
        .create("/conf/watch1-outside2", b"no".to_vec())
        .await
        .unwrap();
    let b2 = store
        .update(&b.key, b"b2".to_vec(), b.mod_revision)
        .await
        .unwrap();
    let (b_gone, b_gone_at) = store.delete(&b.key, Some(b2.mod_revision)).await.unwrap();
    assert_eq!(
        recv(&mut rx).await,
        Event::Put {
            kv: b.clone(),
            prev: None
        }
    );
    assert_eq!(
        recv(&mut rx).await,
        Event::Put {
            kv: b2.clone(),
            prev: Some(b)
        }
    );
    assert_eq!(
        recv(&mut rx).await,
        Event::Delete {
            prev: b_gone,
            revision: b_gone_at
        }
    );
    assert_quiet(&mut rx).await;

    // Watching from "now" sees only what comes next.
    let now = store.current_revision().await.unwrap();
    let mut from_now = store.watch(prefix, now).await.unwrap();
    assert_quiet(&mut from_now).await;
    let c = store
        .create(&format!("{prefix}c"), b"c".to_vec())
        .await
        .unwrap();
    let (kv, prev) = {
        let event = recv(&mut from_now).await;
        let (kv, prev) = put_of(&event);
        (kv.clone(), prev.cloned())
    };
    assert_eq!(kv, c);
    assert_eq!(prev, None);
    // Dropping the receiver ends the watch without disturbing writers.
    drop(from_now);
    drop(rx);
    store.delete(&c.key, None).await.unwrap();
}

async fn watch_from_the_middle<S: Store>(store: &S) {
    let prefix = "/conf/watch2/";
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(
            store
                .create(&format!("{prefix}{i}"), vec![i; 3])
                .await
                .unwrap(),
        );
    }
    // A watch on the empty prefix sees every key.
    let mut everything = store.watch("", written[9].mod_revision - 1).await.unwrap();
    assert_eq!(recv(&mut everything).await.key(), written[9].key);
    drop(everything);
    let after = written[4].mod_revision;
    let mut rx = store.watch(prefix, after).await.unwrap();
    for kv in &written[5..] {
        let event = recv(&mut rx).await;
        assert_eq!(put_of(&event).0, kv);
    }
    assert_quiet(&mut rx).await;
}

async fn watch_rejects_future_revisions<S: Store>(store: &S) {
    let current = store.current_revision().await.unwrap();
    match store.watch("/conf/", current + 100).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 100),
        Err(other) => panic!("watch in the future: {other}"),
        Ok(_) => panic!("watch in the future was accepted"),
    }
}

async fn large_values<S: Store>(store: &S) {
    // 1 MiB: under etcd's default 1.5 MiB request limit.
    let value: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let start = store.current_revision().await.unwrap();
    let kv = store
        .create("/conf/large/one", value.clone())
        .await
        .unwrap();
    assert_eq!(
        store
            .get("/conf/large/one", None)
            .await
            .unwrap()
            .unwrap()
            .value,
        value
    );
    let listed = store.list("/conf/large/", None, None, None).await.unwrap();
    assert_eq!(listed.items, std::slice::from_ref(&kv));
    let mut reversed = value.clone();
    reversed.reverse();
    let kv2 = store
        .update("/conf/large/one", reversed.clone(), kv.mod_revision)
        .await
        .unwrap();
    let mut rx = store.watch("/conf/large/", start).await.unwrap();
    assert_eq!(put_of(&recv(&mut rx).await).0.value, value);
    let event = recv(&mut rx).await;
    let (now, prev) = put_of(&event);
    assert_eq!(now, &kv2);
    assert_eq!(prev.unwrap().value, value);
    // An empty value is a value.
    let empty = store.create("/conf/large/empty", Vec::new()).await.unwrap();
    assert_eq!(
        store.get("/conf/large/empty", None).await.unwrap(),
        Some(empty)
    );
}

async fn odd_keys<S: Store>(store: &S) {
    let long = format!("/conf/odd/{}", "x".repeat(1000));
    let keys = [
        "/conf/odd/with space".to_owned(),
        "/conf/odd/tab\tand\nnewline".to_owned(),
        "/conf/odd/percent%2F%00".to_owned(),
        "/conf/odd/quote'\"back\\slash".to_owned(),
        "/conf/odd/ünïcödé/日本語/🚀".to_owned(),
        "/conf/odd/nul\u{0}inside".to_owned(),
        "/conf/odd/\u{10FFFF}".to_owned(),
        "/conf/odd/a/../b".to_owned(),
        "/conf/odd/*?[]{}".to_owned(),
        long,
    ];
    let start = store.current_revision().await.unwrap();
    for key in &keys {
        let kv = store.create(key, key.as_bytes().to_vec()).await.unwrap();
        assert_eq!(&kv.key, key);
        assert_eq!(store.get(key, None).await.unwrap(), Some(kv));
    }
    let listed: Vec<String> = store
        .list("/conf/odd/", None, None, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| {
            assert_eq!(kv.value, kv.key.as_bytes());
            kv.key
        })
        .collect();
    let mut sorted = keys.to_vec();
    // Byte order, which for UTF-8 is code point order.
    sorted.sort();
    assert_eq!(listed, sorted);
    // Paging through odd keys with start_after.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list("/conf/odd/", None, after.as_deref(), Some(3))
            .await
            .unwrap();
        paged.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        after = page.items.last().map(|kv| kv.key.clone());
    }
    assert_eq!(paged, sorted);
    // A prefix ending in a multi-byte character.
    let under: Vec<String> = store
        .list("/conf/odd/ünïcödé/日本", None, None, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(under, ["/conf/odd/ünïcödé/日本語/🚀"]);
    let mut rx = store.watch("/conf/odd/", start).await.unwrap();
    for key in &keys {
        assert_eq!(recv(&mut rx).await.key(), key);
    }
}

/// 16 writers at once: every write gets a unique revision, each writer's increase, and two
/// watchers (one started before, one started mid-way from the beginning, so its catch-up
/// races the live stream) see every event exactly once, in order.
async fn concurrent_writers_and_watchers<S: Store>(store: &S) {
    const WRITERS: usize = 16;
    const WRITES: usize = 40;
    let prefix = "/conf/concurrent/";
    let start = store.current_revision().await.unwrap();
    let mut early = store.watch(prefix, start).await.unwrap();
    let mut late = None;

    let results = std::sync::Mutex::new(Vec::new());
    let write_all = async {
        let writers = (0..WRITERS).map(|w| {
            let results = &results;
            async move {
                let key = format!("{prefix}w{w:02}");
                let mut kv = store.create(&key, b"0".to_vec()).await.unwrap();
                let mut revisions = vec![kv.mod_revision];
                for i in 1..WRITES {
                    if i % 10 == 9 {
                        let (_, at) = store.delete(&key, Some(kv.mod_revision)).await.unwrap();
                        revisions.push(at);
                        kv = store
                            .create(&key, i.to_string().into_bytes())
                            .await
                            .unwrap();
                        revisions.push(kv.mod_revision);
                    } else {
                        kv = store
                            .update(&key, i.to_string().into_bytes(), kv.mod_revision)
                            .await
                            .unwrap();
                        revisions.push(kv.mod_revision);
                    }
                }
                assert!(
                    revisions.windows(2).all(|p| p[0] < p[1]),
                    "writer {w}: {revisions:?}"
                );
                results.lock().unwrap().extend(revisions);
            }
        });
        futures_join_all(writers).await;
    };
    let start_late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        late = Some(store.watch(prefix, start).await.unwrap());
    };
    tokio::join!(write_all, start_late);

    let mut revisions = results.into_inner().unwrap();
    let total = revisions.len();
    let unique: HashSet<Revision> = revisions.iter().copied().collect();
    assert_eq!(unique.len(), total, "revisions handed out twice");
    revisions.sort_unstable();

    for (name, rx) in [("early", &mut early), ("late", late.as_mut().unwrap())] {
        let mut seen = Vec::with_capacity(total);
        for _ in 0..total {
            seen.push(recv(rx).await.revision());
        }
        assert_eq!(
            seen, revisions,
            "{name} watcher saw events out of order, twice or not at all"
        );
        assert_quiet(rx).await;
    }
}

/// `join_all` without the futures crate: runs the futures concurrently on this task.
async fn futures_join_all<F: Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut pending: Vec<_> = set.iter_mut().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for slot in &mut pending {
            if let Some(future) = slot {
                if future.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    done = false;
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

async fn compaction<S: Store>(store: &S) {
    let prefix = "/conf/compact/";
    let kept = store
        .create(&format!("{prefix}kept"), b"k1".to_vec())
        .await
        .unwrap();
    let gone = store
        .create(&format!("{prefix}gone"), b"g".to_vec())
        .await
        .unwrap();
    let (gone_prev, gone_at) = store.delete(&gone.key, None).await.unwrap();
    let changed = store
        .create(&format!("{prefix}changed"), b"c1".to_vec())
        .await
        .unwrap();
    // Compact at a revision where `changed` is c1, then change it and delete `kept`.
    let at = store.current_revision().await.unwrap();
    let changed2 = store
        .update(&changed.key, b"c2".to_vec(), changed.mod_revision)
        .await
        .unwrap();
    let (kept_prev, kept_deleted_at) = store.delete(&kept.key, None).await.unwrap();
    let before = store.compacted_revision().await.unwrap();
    assert!(before < at);

    store.compact(at).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), at);

    // Below the boundary: Compacted, for reads and watches alike.
    match store.get(&changed.key, Some(at - 1)).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!(requested, at - 1);
            assert_eq!(compacted, at);
        }
        other => panic!("read below the compacted revision: {other:?}"),
    }
    assert!(matches!(
        store.list(prefix, Some(gone_at), None, None).await,
        Err(StoreError::Compacted { .. })
    ));
    match store.watch(prefix, at - 1).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, at),
        Err(other) => panic!("watch below the compacted revision: {other}"),
        Ok(_) => panic!("watch below the compacted revision was accepted"),
    }

    // At the boundary: the state as of `at`, exactly.
    assert_eq!(
        store.get(&changed.key, Some(at)).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        store.get(&kept.key, Some(at)).await.unwrap(),
        Some(kept.clone())
    );
    assert_eq!(store.get(&gone.key, Some(at)).await.unwrap(), None);
    let snapshot = store.list(prefix, Some(at), None, None).await.unwrap();
    assert_eq!(snapshot.items, [changed.clone(), kept.clone()]);
    // And the latest state.
    assert_eq!(
        store.get(&changed.key, None).await.unwrap(),
        Some(changed2.clone())
    );
    assert_eq!(store.get(&kept.key, None).await.unwrap(), None);

    // A watch from the boundary replays what came after, with previous values that were
    // written before the boundary.
    let mut rx = store.watch(prefix, at).await.unwrap();
    assert_eq!(
        recv(&mut rx).await,
        Event::Put {
            kv: changed2.clone(),
            prev: Some(changed.clone())
        }
    );
    assert_eq!(
        recv(&mut rx).await,
        Event::Delete {
            prev: kept_prev,
            revision: kept_deleted_at
        }
    );
    assert_quiet(&mut rx).await;
    let _ = gone_prev;

    // Compacting again to the same or an older revision, or to the future, is refused.
    assert!(matches!(
        store.compact(at).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        store.compact(at - 1).await,
        Err(StoreError::Compacted { .. })
    ));
    let current = store.current_revision().await.unwrap();
    assert!(matches!(
        store.compact(current + 5).await,
        Err(StoreError::FutureRevision { .. })
    ));

    // Compacting everything: reads at the latest revision still work, writes continue with
    // the next revision.
    store.compact(current).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), current);
    assert_eq!(
        store.get(&changed.key, Some(current)).await.unwrap(),
        Some(changed2.clone())
    );
    let next = store
        .create(&format!("{prefix}after"), b"a".to_vec())
        .await
        .unwrap();
    assert_eq!(next.mod_revision, current + 1);
    let page = store.list(prefix, Some(current), None, None).await.unwrap();
    assert_eq!(page.items, [changed2]);
}
