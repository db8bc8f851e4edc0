//! Crash safety: a child process (this test binary, re-executed) writes concurrently and
//! prints every write the store acknowledged; the parent SIGKILLs it mid-run, reopens the
//! store and checks that every acknowledged write is there, intact, and that the revision log
//! is consistent.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::TempDir;
use skiff_store::{Event, Revision, SqliteConfig, SqliteStore, Store};

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD_DB";
const WRITERS: usize = 16;

/// The value written for (writer, sequence number): checkable without storing it.
fn value_for(writer: usize, seq: u64) -> Vec<u8> {
    let mut value = format!("writer {writer} seq {seq} ").into_bytes();
    value.extend((0..512).map(|i| ((seq as usize * 31 + writer * 7 + i) % 253) as u8));
    value
}

/// The child's side: runs only when re-executed by `acknowledged_writes_survive_sigkill`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(db) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(
        &db,
        SqliteConfig {
            compaction: None,
            ..SqliteConfig::default()
        },
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("/crash/{writer:02}");
            let mut kv = store.create(&key, value_for(writer, 0)).await.unwrap();
            ack(writer, 0, kv.mod_revision);
            for seq in 1.. {
                kv = store
                    .update(&key, value_for(writer, seq), kv.mod_revision)
                    .await
                    .unwrap();
                ack(writer, seq, kv.mod_revision);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Prints an acknowledgement; only after the store returned Ok.
fn ack(writer: usize, seq: u64, revision: Revision) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACK {writer} {seq} {revision}").unwrap();
    out.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new("crash");
    let db = dir.path().join("state.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed and reaped on every path, including a failed assertion below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);

    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines: the kill may cut the last one short.
        while stdout.read_line(&mut line).is_ok_and(|n| n > 0) && line.ends_with('\n') {
            if lines_tx.send(line.trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let mut acked: BTreeMap<usize, (u64, Revision)> = BTreeMap::new();
    let mut all_acks = Vec::new();
    let started = Instant::now();
    // Kill once a good number of writes went through (or after a while regardless).
    while all_acks.len() < 3000 && started.elapsed() < Duration::from_secs(20) {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if let Some(ack) = parse_ack(&line) {
            all_acks.push(ack);
        }
    }
    eprintln!(
        "killing the writer after {} acknowledgements",
        all_acks.len()
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    reader.join().unwrap();
    // Acknowledgements already in the pipe count too: they were printed before the kill.
    all_acks.extend(lines.try_iter().filter_map(|line| parse_ack(&line)));
    assert!(
        all_acks.len() > 100,
        "the child wrote too little: {}",
        all_acks.len()
    );
    for &(writer, seq, revision) in &all_acks {
        let entry = acked.entry(writer).or_insert((seq, revision));
        if seq > entry.0 {
            *entry = (seq, revision);
        }
    }

    let store = SqliteStore::open(
        &db,
        SqliteConfig {
            compaction: None,
            ..SqliteConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(store.verify().await.unwrap(), Vec::<String>::new());
    let current = store.current_revision().await.unwrap();
    let max_acked = all_acks.iter().map(|a| a.2).max().unwrap();
    assert!(
        current >= max_acked,
        "current {current} < acknowledged {max_acked}"
    );

    // Every acknowledged write is readable at its revision with its exact value.
    for &(writer, seq, revision) in &all_acks {
        let key = format!("/crash/{writer:02}");
        let kv = store
            .get(&key, Some(revision))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key}@{revision} is missing"));
        assert_eq!(kv.mod_revision, revision);
        assert_eq!(
            kv.value,
            value_for(writer, seq),
            "{key}@{revision} is damaged"
        );
    }
    // The latest value of each key is at least as new as its last acknowledgement.
    for (&writer, &(seq, revision)) in &acked {
        let kv = store
            .get(&format!("/crash/{writer:02}"), None)
            .await
            .unwrap()
            .unwrap();
        assert!(kv.mod_revision >= revision);
        let value = String::from_utf8_lossy(&kv.value[..24]).into_owned();
        let newest: u64 = value.split(' ').nth(3).unwrap().parse().unwrap();
        assert!(
            newest >= seq,
            "{writer}: newest {newest} < acknowledged {seq}"
        );
    }
    // The log is dense and ordered: revisions 1..=current, each update's previous value is the
    // one before it (no compaction ran, and failed writes consume no revision).
    let mut rx = store.watch("/crash/", 0).await.unwrap();
    let mut last_by_key: BTreeMap<String, Revision> = BTreeMap::new();
    for expected in 1..=current {
        let event = common::conformance::recv(&mut rx).await;
        assert_eq!(event.revision(), expected);
        if let Event::Put { kv, prev } = &event {
            assert_eq!(
                prev.as_ref().map(|p| p.mod_revision),
                last_by_key.get(&kv.key).copied()
            );
        }
        last_by_key.insert(event.key().to_owned(), event.revision());
    }
    // And the store takes writes again.
    let kv = store.create("/crash/after", vec![]).await.unwrap();
    assert_eq!(kv.mod_revision, current + 1);
}

fn parse_ack(line: &str) -> Option<(usize, u64, Revision)> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}
