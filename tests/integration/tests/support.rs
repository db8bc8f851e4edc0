//! The test-support guards clean up after themselves, also when a test fails.

use std::{path::PathBuf, process::Stdio, sync::Mutex, time::Duration};

use skiff_test_support::{BpffsDir, Cgroup, ChildGuard, NetNs, require_root};

#[test]
#[ignore = "needs root: netns, cgroup v2, bpffs"]
fn guards_remove_everything_when_a_test_panics() {
    require_root();
    let made: Mutex<Option<(PathBuf, PathBuf, PathBuf, u32)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let ns = NetNs::new("boom");
        let cgroup = Cgroup::new("boom");
        let pins = BpffsDir::new("boom");
        std::fs::create_dir(pins.path().join("nested")).unwrap();
        let mut cmd = ns.command_in_cgroup(&cgroup, "sleep");
        cmd.arg("600").stdout(Stdio::null());
        let child = ChildGuard::spawn(cmd, "sleep in a test cgroup");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cgroup.pids().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep never joined the cgroup"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = cgroup.pids()[0] as u32;
        *made.lock().unwrap() = Some((
            ns.path(),
            cgroup.path().to_owned(),
            pins.path().to_owned(),
            pid,
        ));
        let _keep = child;
        panic!("a failing test");
    });
    assert!(result.is_err());
    let (ns, cgroup, pins, pid) = made.lock().unwrap().take().expect("guards were made");
    assert!(!ns.exists(), "{} is left", ns.display());
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    assert!(!pins.exists(), "{} is left", pins.display());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status.is_empty() || status.contains("State:\tZ"),
        "process {pid} still runs"
    );
}

#[test]
#[ignore = "needs root: netns"]
fn run_enters_the_namespace_on_its_own_thread_only() {
    require_root();
    let ns = NetNs::new("ns");
    let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let inside = ns.run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_ne!(mine, inside);
    assert_eq!(
        std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
        mine
    );
    let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        links.lines().count(),
        1,
        "a fresh namespace has only lo: {links}"
    );
}
