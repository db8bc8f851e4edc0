//! `skiff up --sandbox`, the README's first command: the API server on the host, the node in a
//! sandbox (its own network namespace, cgroup and bpffs directory) joined through its agent,
//! and the seed's first workflow with the real kubectl: an image loaded with `skiff image load`,
//! a Deployment whose pods run on containerd with skiff-cni addresses, exposed as a Service that
//! a client on the node reaches through the eBPF socket load balancer (every pod answers in
//! turn) and that the cluster DNS names; then everything is gone again after SIGTERM.

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
    // When the test fails, `skiff up` gets SIGTERM and removes its sandbox itself; whatever it
    // could not is removed after it.
    let mut up = Up {
        process: ChildGuard::spawn(cmd, "skiff up"),
        name: name.clone(),
        dir: dir.clone(),
    };
    let out = || std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !out().contains("Ctrl-C stops skiff") {
        assert!(
            up.process.child().try_wait().unwrap().is_none(),
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

    // A node that runs pods.
    common::eventually("the node to be Ready", Duration::from_secs(60), || {
        kubectl(&["get", "nodes"]).contains(" Ready ").then_some(())
    });
    let image =
        skiff_kubelet::image::build_busybox(&dir, "busybox", "docker.io/library/busybox:1.35", &[])
            .expect("building a busybox image");
    let load = Command::new(common::skiff_bin())
        .args(["image", "load"])
        .arg(&image)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "skiff image load: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=docker.io/library/busybox:1.35",
        "--replicas=3",
        "--",
        "/bin/sh",
        "-c",
        "while true; do hostname | nc -l -p 8080; done",
    ]);
    kubectl(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    let pods = common::eventually("3 running pods", Duration::from_secs(90), || {
        let pods: serde_json::Value =
            serde_json::from_str(&kubectl(&["get", "pods", "-l", "app=web", "-o", "json"])).ok()?;
        let running: Vec<(String, String)> = pods["items"]
            .as_array()?
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        (running.len() == 3).then_some(running)
    });
    for (_, ip) in &pods {
        assert!(
            ip.starts_with("10.244."),
            "pod IP {ip} outside the node's pod CIDR"
        );
    }
    let cluster_ip = kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    // A client inside the node (its namespace and cgroup, where the socket LB is attached).
    let cgroup = skiff_test_support::cgroup2_root().join(&name);
    let ask = || {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{name}"))
            .args(["sh", "-c"])
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec busybox nc -w 2 {} 80 </dev/null",
                cgroup.display(),
                cluster_ip.trim()
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mut answered = std::collections::BTreeSet::new();
    common::eventually(
        "every pod answering through the ClusterIP",
        Duration::from_secs(60),
        || {
            let who = ask();
            if !who.is_empty() {
                answered.insert(who);
            }
            (answered.len() == 3).then_some(())
        },
    );
    let names: std::collections::BTreeSet<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        answered, names,
        "the answers come from the Deployment's pods"
    );
    let lookup = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{name}"))
        .args([
            "busybox",
            "nslookup",
            "web.default.svc.cluster.local",
            "10.96.0.10",
        ])
        .output()
        .unwrap();
    let lookup = String::from_utf8_lossy(&lookup.stdout);
    assert!(lookup.contains(cluster_ip.trim()), "{lookup}");

    let pid = nix::unistd::Pid::from_raw(up.process.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = up.process.wait_timeout(Duration::from_secs(30));
    assert!(status.success(), "skiff up exited with {status}");
    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "the sandbox netns is left"
    );
    assert!(!bpffs.exists(), "the sandbox pins are left");
    let left: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join(&name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(left.is_empty(), "sandbox cgroups are left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts under the data dir are left"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the API server still listens"
    );
}

/// `skiff up` and what a failed run could leave: the sandbox's netns, cgroups (in every
/// hierarchy), pins, and containerd's mounts under the data dir.
struct Up {
    process: ChildGuard,
    name: String,
    dir: std::path::PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        // Signalled only while it is our unreaped child: its pid cannot belong to anyone else.
        if matches!(self.process.child().try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            // Its own cleanup (agent, containerd, sandbox) takes a few seconds.
            for _ in 0..300 {
                if !matches!(self.process.child().try_wait(), Ok(None)) {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        skiff_kubelet::cleanup::remove_cgroup_trees(&self.name);
        skiff_kubelet::cleanup::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(&self.name));
        if Path::new("/run/netns").join(&self.name).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}
