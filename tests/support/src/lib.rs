//! skiff-test-support: RAII guards for what privileged tests create (network namespaces, cgroup
//! v2 directories, bpffs directories, veth pairs, child processes) and helpers to run code or
//! commands inside a namespace.
//!
//! Every guard removes what it made on drop, including while a failing test unwinds. Names carry
//! the test process's pid, so [`reap_stale`] can remove what a killed test run left behind
//! without touching anything a live run (or anyone else) owns.
#![forbid(unsafe_code)]

pub mod packet;

use std::{
    fmt, fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::{Pid, Uid},
};

/// Prefix of every namespace, cgroup and bpffs directory made here.
pub const PREFIX: &str = "skt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other guard of this or any other live test process uses: `skt<pid>-<tag><n>`.
#[must_use]
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{tag}{n}", std::process::id())
}

/// An interface name (at most 15 bytes, the kernel's IFNAMSIZ - 1) unique in this process.
#[must_use]
pub fn unique_ifname(tag: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id() % 100_000)
}

/// Panics unless running as root: privileged tests must fail loudly, never pass by skipping.
pub fn require_root() {
    assert!(
        Uid::effective().is_root(),
        "this test needs root (netns, cgroup v2, bpf()); run it through `cargo xtask test` as root"
    );
}

/// Runs a command to completion and panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace (`/run/netns/NAME`) with `lo` up. Deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    #[must_use]
    pub fn new(tag: &str) -> Self {
        reap_stale();
        let name = unique_name(tag);
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs in this namespace through `nsenter --net`, which (unlike
    /// `ip netns exec`) leaves the cgroup filesystem visible.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Like [`NetNs::command`], and the process joins `cgroup` before it execs `program`.
    #[must_use]
    pub fn command_in_cgroup(&self, cgroup: &Cgroup, program: impl AsRef<Path>) -> Command {
        let mut cmd = self.command("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
            .arg("sh")
            .arg(cgroup.path())
            .arg(program.as_ref());
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace (the calling thread is untouched).
    /// Sockets `f` creates belong to the namespace; the filesystem stays the caller's.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        thread::scope(|s| {
            s.spawn(|| {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Spawns a long-lived thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let file = fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()));
        let name = self.name.clone();
        thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns into {name}: {e}"));
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Connects two namespaces with a veth pair: `(a, a_if, a_cidr)` and `(b, b_if, b_cidr)`, both
/// ends up. The pair disappears with either namespace.
pub fn veth_pair(a: &NetNs, a_cidr: &str, b: &NetNs, b_cidr: &str) -> (String, String) {
    let (a_if, b_if) = (unique_ifname('a'), unique_ifname('b'));
    a.ip(&[
        "link",
        "add",
        &a_if,
        "type",
        "veth",
        "peer",
        "name",
        &b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", a_cidr, "dev", &a_if]);
    b.ip(&["addr", "add", b_cidr, "dev", &b_if]);
    a.ip(&["link", "set", &a_if, "up"]);
    b.ip(&["link", "set", &b_if, "up"]);
    (a_if, b_if)
}

/// The cgroup v2 mount (see [`skiff_datapath::cgroup2_mount`]); panics when there is none.
#[must_use]
pub fn cgroup2_root() -> PathBuf {
    skiff_datapath::cgroup2_mount().expect("no cgroup v2 hierarchy mounted")
}

/// A cgroup v2 directory. On drop, processes still in it are killed (only processes a test
/// put there can be in it) and the directory is removed.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    #[must_use]
    pub fn new(tag: &str) -> Self {
        reap_stale();
        let path = cgroup2_root().join(unique_name(tag));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pids currently in this cgroup.
    #[must_use]
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

fn remove_cgroup(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = fs::read_to_string(path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        match fs::remove_dir(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20));
            }
            _ => return,
        }
    }
}

/// A directory on the bpf filesystem for a test's pins. Removed, with everything pinned in it
/// (which detaches programs whose only reference was a pinned link), on drop.
#[derive(Debug)]
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    #[must_use]
    pub fn new(tag: &str) -> Self {
        reap_stale();
        let path = Path::new("/sys/fs/bpf").join(unique_name(tag));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A child process that is killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd`; `what` names it in panics.
    pub fn spawn(mut cmd: Command, what: impl fmt::Display) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        Self {
            child: Some(child),
            what: what.to_string(),
        }
    }

    #[must_use]
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child already reaped")
    }

    /// Waits for the process to exit, up to `timeout`; panics when it does not.
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.what
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes namespaces, cgroups and bpffs directories left by test processes that no longer
/// exist (a run killed before its guards could drop). Anything of a live process is left alone.
pub fn reap_stale() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
    };
    let entries = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| dead(n))
            .collect()
    };
    for name in entries(Path::new("/run/netns")) {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
    }
    let cg_root = cgroup2_root();
    for name in entries(&cg_root) {
        remove_cgroup(&cg_root.join(name));
    }
    for name in entries(Path::new("/sys/fs/bpf")) {
        let _ = fs::remove_dir_all(Path::new("/sys/fs/bpf").join(name));
    }
}
