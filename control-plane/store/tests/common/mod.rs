//! Shared by the store's integration tests: temp dirs, a real etcd on loopback, and the
//! conformance suite every backend must pass.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

pub mod conformance;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use skiff_store::EtcdStore;

/// A directory removed on drop, even when the test panics.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "skiff-store-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const ETCD: &str = "/usr/bin/etcd";

/// Free loopback ports: all bound at once so they are distinct, then released for etcd.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

struct Member {
    name: String,
    client_port: u16,
    child: Option<Child>,
}

/// etcd members started by the test on loopback in a temp dir; killed (by PID) on drop.
pub struct Etcd {
    members: Vec<Member>,
    // Dropped after the members (field order), so data dirs go once the processes are dead.
    dir: TempDir,
}

impl Etcd {
    /// Starts an `n`-member cluster, or returns None (saying so loudly) if etcd is not
    /// installed.
    pub fn start(n: usize) -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            eprintln!("SKIPPED: {ETCD} is missing (cargo xtask setup installs etcd-server)");
            return None;
        }
        let dir = TempDir::new(&format!("etcd{n}"));
        let ports = free_ports(2 * n);
        let token = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let cluster = (0..n)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members: Vec::new(),
            dir,
        };
        for i in 0..n {
            let (client_port, peer_port) = (ports[2 * i], ports[2 * i + 1]);
            let name = format!("m{i}");
            let log = std::fs::File::create(etcd.dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(ETCD)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(etcd.dir.path().join(&name))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client_port}"),
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client_port}"),
                    "--listen-peer-urls",
                    &format!("http://127.0.0.1:{peer_port}"),
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer_port}"),
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-token",
                    &token,
                    "--initial-cluster-state",
                    "new",
                    // Loopback: elect a new leader fast when the test kills one.
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting etcd");
            etcd.members.push(Member {
                name,
                client_port,
                child: Some(child),
            });
        }
        Some(etcd)
    }

    /// `127.0.0.1:port` of every member, killed ones included.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// A `--datastore` spec for this cluster with keys under `key_prefix`.
    pub fn spec(&self, key_prefix: &str) -> String {
        format!("etcd://{}{key_prefix}", self.endpoints().join(","))
    }

    /// Connects once the cluster has a leader and answers.
    pub async fn connect(&self, key_prefix: &str) -> EtcdStore {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(&self.endpoints(), key_prefix).await {
                Ok(store) => return store,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("etcd not ready yet: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("etcd never became ready: {error}\n{}", self.logs()),
            }
        }
    }

    /// The index of the current leader, as the live members report it.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let endpoint = format!("http://127.0.0.1:{}", member.client_port);
                let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else {
                    continue;
                };
                let Ok(status) = client.status().await else {
                    continue;
                };
                let me = status.header().map(etcd_client::ResponseHeader::member_id);
                if status.leader() != 0 && Some(status.leader()) == me {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs member `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            eprintln!("killing etcd {} (pid {})", self.members[i].name, child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let log = self.dir.path().join(format!("{}.log", member.name));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(20).collect();
            out.push_str(&format!("--- {} ---\n", member.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
