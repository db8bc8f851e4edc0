//! `kill -9` of `skiff server` in the middle of concurrent writes: after a restart on the same
//! data directory every acknowledged write is there, intact, and the server serves as before.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::skiff_bin;
use skiff_test_support::ChildGuard;

/// A minimal HTTP/1.1 exchange (the insecure loopback server speaks plain HTTP).
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

fn start(dir: &std::path::Path, port: u16) -> ChildGuard {
    let mut cmd = Command::new(skiff_bin());
    cmd.args([
        "server",
        "--insecure-loopback",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--data-dir")
    .arg(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let guard = ChildGuard::spawn(cmd, "skiff server");
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if http(&addr, "GET", "/healthz", "").is_some_and(|(c, _)| c == 200) {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("skiff server did not come up on {addr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = std::env::temp_dir().join(skiff_test_support::unique_name("crash"));
    std::fs::create_dir_all(&dir).unwrap();
    // Declared before the servers: dropped after them, also when an assertion fails.
    let _dir = common::RemoveOnDrop(dir.clone());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = start(&dir, port);

    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (acked, stop, addr) = (Arc::clone(&acked), Arc::clone(&stop), addr.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{w}-{i}");
                    let value = format!("{}-{}", name, "x".repeat(200));
                    let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"v":"{value}"}}}}"#);
                    match http(&addr, "POST", "/api/v1/namespaces/default/configmaps", &body) {
                        Some((201, _)) => acked.lock().unwrap().push((name, value)),
                        Some(_) => {}
                        None => break,
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 400 {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let _server = start(&dir, port);
    for (name, value) in &acked {
        let (code, body) = http(
            &addr,
            "GET",
            &format!("/api/v1/namespaces/default/configmaps/{name}"),
            "",
        )
        .unwrap();
        assert_eq!(code, 200, "acknowledged {name} is gone after kill -9");
        let cm: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(cm["data"]["v"], value.as_str(), "{name} is intact");
    }
    // And the server goes on writing where it stopped.
    let (code, _) = http(
        &addr,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}"#,
    )
    .unwrap();
    assert_eq!(code, 201);
    drop(_server);
}
