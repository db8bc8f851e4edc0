//! `skiff up --sandbox`, the README's first command: the API server on the host, the node in a
//! sandbox (its own network namespace, cgroup and bpffs directory) joined through its agent,
//! kubectl working with the printed kubeconfig, and everything gone again after SIGTERM.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::RemoveOnDrop;
use skiff_test_support::ChildGuard;

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn up_runs_a_sandboxed_cluster_and_cleans_up_on_sigterm() {
    let dir = std::env::temp_dir().join(skiff_test_support::unique_name("up"));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = RemoveOnDrop(dir.clone());
    let name = skiff_test_support::unique_name("up");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(common::skiff_bin());
    cmd.args(["up", "--sandbox", "--sandbox-name", &name])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&dir)
        .stdout(std::fs::File::create(dir.join("up.out")).unwrap())
        .stderr(Stdio::null());
    let mut up = ChildGuard::spawn(cmd, "skiff up");
    let out = || std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !out().contains("Ctrl-C stops skiff") {
        assert!(
            up.child().try_wait().unwrap().is_none(),
            "skiff up exited:\n{}\n{}",
            out(),
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "skiff up not ready:\n{}", out());
        thread::sleep(Duration::from_millis(100));
    }
    let printed = out();
    assert!(printed.contains(&format!(
        "export KUBECONFIG={}",
        dir.join("kubeconfig.yaml").display()
    )));
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", dir.join("kubeconfig.yaml"))
            .arg("--cache-dir")
            .arg(dir.join("kube-cache"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(kubectl(&["get", "namespaces"]).contains("kube-system"));
    let csrs = kubectl(&["get", "csr"]);
    assert!(
        csrs.contains(&format!("node-csr-{name}-")) && csrs.contains("Approved,Issued"),
        "{csrs}"
    );
    // The node's maps follow the API: the `kubernetes` Service is in them.
    let bpffs = Path::new("/sys/fs/bpf").join(&name);
    let lb = Command::new(common::skiff_bin())
        .args(["lb", "list", "--bpffs"])
        .arg(&bpffs)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&lb.stdout).contains("10.96.0.1:443/TCP"),
        "{lb:?}"
    );

    let pid = nix::unistd::Pid::from_raw(up.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = up.wait_timeout(Duration::from_secs(30));
    assert!(status.success(), "skiff up exited with {status}");
    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "the sandbox netns is left"
    );
    assert!(!bpffs.exists(), "the sandbox pins are left");
    assert!(
        !skiff_test_support::cgroup2_root().join(&name).exists(),
        "the sandbox cgroup is left"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the API server still listens"
    );
}
