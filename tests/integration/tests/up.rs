//! `skiff up --sandbox`, the README's first command: the API server on the host, the node in a
//! sandbox (its own network namespace, cgroup and bpffs directory) joined through its agent,
//! and the seed's first workflow with the real kubectl: an image loaded with `skiff image load`,
//! a Deployment whose pods run on containerd with skiff-cni addresses, exposed as a Service that
//! a client on the node reaches through the eBPF socket load balancer (every pod answers in
//! turn) and that the cluster DNS names; then the seed's node-facing commands through the API
//! server and the kubelet API (logs, exec, port-forward, proxy, top, a ConfigMap volume); then
//! kubectl inside a pod under a ServiceAccount bound to `view` (the seed's RBAC lesson); then
//! the seed's workloads on real pods (probes, rolling update and undo, a Job, a DaemonSet); an
//! image pulled from a local registry; then everything is gone again after SIGTERM.

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
        .args(["--insecure-registry", "127.0.0.1:5000"])
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
        let out = kubectl_cmd(&dir, args).output().unwrap();
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
    let image = common::load_busybox(&dir, "busybox", BUSYBOX, &[&dir]);
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
        let running: Vec<(String, String)> = common::running_pods(&pods)
            .into_iter()
            .map(|p| (p.name, p.ip))
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

    node_streams_and_volumes(&kubectl, &dir, &name);
    in_cluster_client(&kubectl, &dir);
    workloads(&kubectl, &dir, &name);
    pulled_from_a_registry(&kubectl, &dir, &name, &image);

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

const BUSYBOX: &str = "docker.io/library/busybox:1.35";

/// A kubectl process left running (logs -f, port-forward, proxy), stopped when dropped.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The seed's RBAC lesson from inside the cluster: a pod running as the ServiceAccount `viewer`
/// (bound to the `view` ClusterRole) runs kubectl with its in-cluster configuration (the service
/// environment variables, the mounted token and CA) through the `kubernetes` Service, which the
/// node's agent forwards to the API server on the host's loopback: reading works, creating a
/// Deployment is refused with upstream's message.
fn in_cluster_client(kubectl: &dyn Fn(&[&str]) -> String, dir: &Path) {
    // The published endpoint: the Service's own address, answered by every node's agent.
    let endpoints = kubectl(&["get", "endpoints", "kubernetes", "-o", "json"]);
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints).unwrap();
    assert_eq!(
        endpoints["subsets"][0]["addresses"][0]["ip"], "10.96.0.1",
        "{endpoints}"
    );
    assert_eq!(
        endpoints["subsets"][0]["ports"][0]["port"], 443,
        "{endpoints}"
    );

    kubectl(&["create", "serviceaccount", "viewer"]);
    kubectl(&[
        "create",
        "rolebinding",
        "viewercanview",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    // The host's kubectl in the pod (a static binary; the machine's `kubectl` is a dispatcher,
    // so the real one of the server's minor version).
    let dispatcher = std::fs::canonicalize(
        std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("kubectl"))
                    .find(|p| p.exists())
            })
            .expect("kubectl on PATH"),
    )
    .unwrap();
    let versioned = dispatcher.with_file_name("kubectl.1.32");
    let binary = if versioned.exists() {
        versioned
    } else {
        dispatcher
    };
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "eyepod"},
        "spec": {
            "serviceAccountName": "viewer",
            "containers": [{"name": "eye", "image": "docker.io/library/busybox:1.35",
                            "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "kubectl", "mountPath": "/usr/local/bin/kubectl",
                                              "readOnly": true}]}],
            "volumes": [{"name": "kubectl",
                         "hostPath": {"path": binary.display().to_string(), "type": "File"}}],
        },
    });
    let manifest = dir.join("eyepod.json");
    std::fs::write(&manifest, pod.to_string()).unwrap();
    kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/eyepod",
        "--timeout=60s",
    ]);

    let env = kubectl(&["exec", "eyepod", "--", "env"]);
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.96.0.1\n"), "{env}");
    assert!(env.contains("KUBERNETES_SERVICE_PORT=443\n"), "{env}");
    assert!(
        env.contains("KUBERNETES_PORT=tcp://10.96.0.1:443\n"),
        "{env}"
    );

    let inside = |args: &[&str]| {
        let mut all = vec!["exec", "eyepod", "--", "/usr/local/bin/kubectl"];
        all.extend_from_slice(args);
        kubectl_cmd(dir, &all).output().unwrap()
    };
    let pods = inside(&["get", "pods", "-o", "name"]);
    assert!(
        pods.status.success() && String::from_utf8_lossy(&pods.stdout).contains("pod/eyepod"),
        "kubectl in the pod: {pods:?}"
    );
    let can = |verb: &str, what: &str| {
        let out = inside(&["auth", "can-i", verb, what]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can("get", "pods"), "yes");
    assert_eq!(can("create", "pods"), "no");
    let create = inside(&["create", "deployment", "testrab", "--image", "nginx"]);
    assert!(!create.status.success(), "{create:?}");
    let stderr = String::from_utf8_lossy(&create.stderr);
    assert!(
        stderr.contains(
            "deployments.apps is forbidden: User \"system:serviceaccount:default:viewer\" cannot \
             create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        ),
        "{stderr}"
    );
    kubectl(&["delete", "pod", "eyepod", "--wait=false"]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kubectl_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", dir.join("kubeconfig.yaml"))
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args);
    cmd
}

/// Waits for a line containing `needle` on a background process's stdout.
fn wait_for_line(child: &mut std::process::Child, needle: &str) -> String {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_owned();
    thread::spawn(move || {
        let mut seen = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(&needle) {
                let _ = tx.send(seen.clone());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the expected output of a background kubectl")
}

/// The seed's commands that reach into the node: logs (tail, follow, previous, by label), exec
/// (with stdin closing, exit codes, a terminal), port-forward, proxy (pod, service, node), top,
/// a ConfigMap volume updated in a running pod with the service account token beside it, and
/// the kubelet API refusing callers without the right certificate or permission.
fn node_streams_and_volumes(kubectl: &dyn Fn(&[&str]) -> String, dir: &Path, node: &str) {
    let run = |args: &[&str]| kubectl_cmd(dir, args).output().unwrap();
    kubectl(&[
        "run",
        "logger",
        "--image",
        BUSYBOX,
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo one; echo two; sleep 3600",
    ]);
    kubectl(&[
        "run",
        "crasher",
        "--image",
        BUSYBOX,
        "--",
        "sh",
        "-c",
        "echo attempt; exit 1",
    ]);
    kubectl(&[
        "run",
        "web-http",
        "--image",
        BUSYBOX,
        "--port=8080",
        "--",
        "sh",
        "-c",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    kubectl(&[
        "expose",
        "pod",
        "web-http",
        "--port=80",
        "--target-port=8080",
    ]);
    common::eventually("logger's output", Duration::from_secs(60), || {
        (kubectl_cmd(dir, &["logs", "logger"]).output().ok()?.stdout == b"one\ntwo\n").then_some(())
    });
    assert_eq!(kubectl(&["logs", "logger", "--tail=1"]), "two\n");
    assert!(kubectl(&["logs", "-l", "run=logger"]).contains("one"));
    let mut follow = Background(
        kubectl_cmd(dir, &["logs", "-f", "logger"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for_line(&mut follow.0, "two").contains("one\ntwo"));
    drop(follow);

    // The seed's scale-out: ten replicas, each answering a client pod through the ClusterIP
    // (the socket load balancer in the pod's cgroup).
    kubectl(&["scale", "deployment", "web", "--replicas=10"]);
    kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let web_ip = kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let mut seen = std::collections::BTreeSet::new();
    common::eventually(
        "all 10 pods answering a pod",
        Duration::from_secs(90),
        || {
            let script = format!(
                "for i in $(seq 1 30); do nc -w 1 {} 80 </dev/null; done",
                web_ip.trim()
            );
            let out = run(&["exec", "logger", "--", "sh", "-c", &script]);
            seen.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_owned),
            );
            (seen.len() == 10).then_some(())
        },
    );
    assert!(seen.iter().all(|h| h.starts_with("web-")), "{seen:?}");
    kubectl(&["scale", "deployment", "web", "--replicas=3"]);

    // exec: output, stdin closing (cat ends), the exit code, a terminal.
    assert_eq!(kubectl(&["exec", "logger", "--", "hostname"]), "logger\n");
    let mut cat = kubectl_cmd(dir, &["exec", "-i", "logger", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let cat = cat.wait_with_output().unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "through stdin\n");
    let failed = run(&["exec", "logger", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    let tty = Command::new("script")
        .env("KUBECONFIG", dir.join("kubeconfig.yaml"))
        .args([
            "-qec",
            "kubectl exec -it logger -- sh -c 'tty; stty size'",
            "/dev/null",
        ])
        .output()
        .unwrap();
    let tty_out = String::from_utf8_lossy(&tty.stdout);
    assert!(
        tty.status.success() && tty_out.contains("/dev/pts/"),
        "{tty:?}"
    );

    // Names resolve from pods: their resolv.conf names kube-dns, which the socket LB leaves
    // to the node's own DNS.
    let web_ip = kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let lookup = kubectl(&[
        "exec",
        "logger",
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    assert!(lookup.contains(web_ip.trim()), "{lookup}");
    let resolv = kubectl(&["exec", "logger", "--", "cat", "/etc/resolv.conf"]);
    for line in [
        "nameserver 10.96.0.10",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ] {
        assert!(
            resolv.contains(line),
            "{line} in the pod's resolv.conf:\n{resolv}"
        );
    }
    let dns = kubectl(&[
        "get",
        "service",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(dns, "10.96.0.10");

    // Previous logs once the crasher has restarted.
    common::eventually("crasher to restart", Duration::from_secs(90), || {
        let n = kubectl(&[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        (n.trim().parse::<u32>().ok()? >= 1).then_some(())
    });
    assert!(kubectl(&["logs", "crasher", "--previous"]).contains("attempt"));

    // port-forward from the host's loopback to a pod.
    common::eventually("web-http to run", Duration::from_secs(60), || {
        (kubectl(&["get", "pod", "web-http", "-o", "jsonpath={.status.phase}"]) == "Running")
            .then_some(())
    });
    let local = free_port();
    let mut forward = Background(
        kubectl_cmd(
            dir,
            &["port-forward", "pod/web-http", &format!("{local}:8080")],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    wait_for_line(&mut forward.0, "Forwarding from 127.0.0.1");
    let page = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{local}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&page.stdout),
        "web-http\n",
        "{page:?}"
    );
    drop(forward);

    // kubectl proxy: a pod, a service and the node's kubelet through the API server.
    let port = free_port();
    let mut proxy = Background(
        kubectl_cmd(dir, &["proxy", &format!("--port={port}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut proxy.0, "Starting to serve");
    let get = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                &format!("http://127.0.0.1:{port}{path}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        get("/api/v1/namespaces/default/pods/web-http:8080/proxy/"),
        "web-http\n"
    );
    common::eventually("the service proxy", Duration::from_secs(30), || {
        (get("/api/v1/namespaces/default/services/web-http:80/proxy/") == "web-http\n")
            .then_some(())
    });
    assert_eq!(get(&format!("/api/v1/nodes/{node}/proxy/healthz")), "ok");
    drop(proxy);

    // Resource metrics for kubectl top.
    let top = common::eventually("kubectl top pod", Duration::from_secs(90), || {
        let out = run(&["top", "pod", "logger"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(top.contains("logger") && top.contains("Mi"), "{top}");
    let top = common::eventually("kubectl top node", Duration::from_secs(30), || {
        let out = run(&["top", "node"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(top.contains(node), "{top}");

    // A ConfigMap volume, updated while the pod runs, and the service account token.
    kubectl(&[
        "create",
        "configmap",
        "greeting",
        "--from-literal=text=hello",
    ]);
    let manifest = dir.join("cfg-pod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cfg\nspec:\n  containers:\n  - name: app\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n    volumeMounts:\n    - {{name: greeting, mountPath: /etc/greeting}}\n  volumes:\n  - name: greeting\n    configMap: {{name: greeting}}\n"
        ),
    )
    .unwrap();
    kubectl(&["apply", "-f", &manifest.display().to_string()]);
    let read = |path: &str| {
        let out = run(&["exec", "cfg", "--", "cat", path]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    common::eventually("the ConfigMap in the pod", Duration::from_secs(60), || {
        (read("/etc/greeting/text")? == "hello").then_some(())
    });
    assert_eq!(
        read("/var/run/secrets/kubernetes.io/serviceaccount/namespace").as_deref(),
        Some("default")
    );
    // The ServiceAccount admission's volume, fed by the root CA publisher's ConfigMap.
    let volumes = kubectl(&[
        "get",
        "pod",
        "cfg",
        "-o",
        "jsonpath={.spec.volumes[*].name}",
    ]);
    assert!(volumes.contains("kube-api-access-"), "{volumes}");
    assert!(kubectl(&["get", "configmap", "kube-root-ca.crt"]).contains("kube-root-ca.crt"));
    assert_eq!(
        read("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        std::fs::read_to_string(dir.join("tls/ca.crt")).ok()
    );
    let token = read("/var/run/secrets/kubernetes.io/serviceaccount/token").unwrap_or_default();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    kubectl(&[
        "patch",
        "configmap",
        "greeting",
        "-p",
        r#"{"data":{"text":"bonjour"}}"#,
    ]);
    common::eventually(
        "the updated ConfigMap in the running pod",
        Duration::from_secs(90),
        || (read("/etc/greeting/text")? == "bonjour").then_some(()),
    );

    // The kubelet API itself: a certificate from the cluster CA is needed, and permission.
    let endpoint = kubectl(&[
        "get",
        "node",
        node,
        "-o",
        r"jsonpath={.metadata.annotations.kubelet\.skiff\.io/endpoint}",
    ]);
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    let pki = skiff_apiserver::tls::Pki::load_or_create(&dir.join("tls")).unwrap();
    let bob = pki
        .issue(&skiff_apiserver::tls::LeafSpec {
            common_name: "bob".into(),
            organizations: Vec::new(),
            sans: Vec::new(),
            server: false,
            client: true,
        })
        .unwrap();
    std::fs::write(dir.join("bob.crt"), &bob.cert_pem).unwrap();
    std::fs::write(dir.join("bob.key"), &bob.key_pem).unwrap();
    let kubelet = |cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(dir.join("tls/ca.crt"))
        .args(["--resolve", &format!("{node}:{port}:127.0.0.1")]);
        if cert {
            cmd.arg("--cert")
                .arg(dir.join("bob.crt"))
                .arg("--key")
                .arg(dir.join("bob.key"));
        }
        let out = cmd
            .arg(format!("https://{node}:{port}/pods"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(kubelet(false), "401", "no certificate");
    assert_eq!(kubelet(true), "403", "bob may not use the node's API");
    let bob_logs = run(&["logs", "logger", "--as", "bob"]);
    assert!(!bob_logs.status.success());
    assert!(
        String::from_utf8_lossy(&bob_logs.stderr).contains("forbidden"),
        "{bob_logs:?}"
    );
}

/// The seed's workload behaviour on real pods: readiness taking a pod out of the Service's
/// endpoints and the node's maps, liveness restarting a container, a rolling update with `set
/// image` and `rollout undo`, a Job run to completion, a DaemonSet on the node.
fn workloads(kubectl: &dyn Fn(&[&str]) -> String, dir: &Path, node: &str) {
    let apply = |file: &str, manifest: String| {
        let path = dir.join(file);
        std::fs::write(&path, manifest).unwrap();
        kubectl(&["apply", "-f", &path.display().to_string()]);
    };
    apply(
        "probed.yaml",
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: probed}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: probed}}}}
  template:
    metadata: {{labels: {{app: probed}}}}
    spec:
      containers:
      - name: app
        image: {BUSYBOX}
        command: [sh, -c, "while true; do hostname | nc -l -p 8080; done"]
        readinessProbe: {{exec: {{command: [test, -f, /tmp/ready]}}, periodSeconds: 1}}
        livenessProbe: {{exec: {{command: [test, '!', -f, /tmp/dead]}}, periodSeconds: 1, failureThreshold: 1}}
"#
        ),
    );
    kubectl(&[
        "expose",
        "deployment",
        "probed",
        "--port=80",
        "--target-port=8080",
    ]);
    let pods = common::eventually("2 running probed pods", Duration::from_secs(90), || {
        let v: serde_json::Value =
            serde_json::from_str(&kubectl(&["get", "pods", "-l", "app=probed", "-o", "json"]))
                .ok()?;
        let running: Vec<(String, String)> = common::running_pods(&v)
            .into_iter()
            .map(|p| (p.name, p.ip))
            .collect();
        (running.len() == 2).then_some(running)
    });
    let ready_ips = || {
        let v: serde_json::Value = serde_json::from_str(&kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=probed",
            "-o",
            "json",
        ]))
        .unwrap();
        let mut ips: Vec<String> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
            .collect();
        ips.sort();
        ips
    };
    let lb = || {
        let out = Command::new(common::skiff_bin())
            .args(["lb", "list", "--bpffs"])
            .arg(Path::new("/sys/fs/bpf").join(node))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        ready_ips().is_empty(),
        "no pod is ready before its probe passes"
    );
    for (pod, _) in &pods {
        kubectl(&["exec", pod, "--", "touch", "/tmp/ready"]);
    }
    let mut all: Vec<String> = pods.iter().map(|(_, ip)| ip.clone()).collect();
    all.sort();
    common::eventually(
        "both pods ready in the endpoints",
        Duration::from_secs(30),
        || (ready_ips() == all).then_some(()),
    );
    common::eventually(
        "both pods in the node's maps",
        Duration::from_secs(10),
        || {
            let table = lb();
            all.iter()
                .all(|ip| table.contains(&format!("{ip}:8080")))
                .then_some(())
        },
    );
    let (failing, failing_ip) = &pods[0];
    kubectl(&["exec", failing, "--", "rm", "/tmp/ready"]);
    common::eventually(
        "the unready pod out of the endpoints",
        Duration::from_secs(30),
        || (ready_ips() == vec![pods[1].1.clone()]).then_some(()),
    );
    common::eventually(
        "the unready pod out of the maps",
        Duration::from_secs(10),
        || {
            let table = lb();
            (!table.contains(&format!("{failing_ip}:8080"))
                && table.contains(&format!("{}:8080", pods[1].1)))
            .then_some(())
        },
    );
    kubectl(&["exec", &pods[1].0, "--", "touch", "/tmp/dead"]);
    common::eventually(
        "liveness to restart the container",
        Duration::from_secs(60),
        || {
            let n = kubectl(&[
                "get",
                "pod",
                &pods[1].0,
                "-o",
                "jsonpath={.status.containerStatuses[0].restartCount}",
            ]);
            (n.trim().parse::<u32>().ok()? >= 1).then_some(())
        },
    );

    // A rolling update to another image and back.
    common::load_busybox(dir, "busybox-v2", "docker.io/library/busybox:v2", &[dir]);
    let images = || {
        let mut images: Vec<String> = kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}",
        ])
        .lines()
        .map(str::to_owned)
        .collect();
        images.dedup();
        images
    };
    kubectl(&[
        "set",
        "image",
        "deployment/web",
        "busybox=docker.io/library/busybox:v2",
    ]);
    kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    common::eventually("only v2 pods", Duration::from_secs(60), || {
        (images() == ["docker.io/library/busybox:v2"]).then_some(())
    });
    kubectl(&["rollout", "undo", "deployment/web"]);
    kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    common::eventually("only 1.35 pods again", Duration::from_secs(60), || {
        (images() == [BUSYBOX]).then_some(())
    });

    // A Job to completion, and a DaemonSet on the node.
    kubectl(&[
        "create", "job", "hello", "--image", BUSYBOX, "--", "echo", "job done",
    ]);
    kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=90s",
    ]);
    assert_eq!(kubectl(&["logs", "job/hello"]), "job done\n");
    apply(
        "ds.yaml",
        format!(
            r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: everywhere}}
spec:
  selector: {{matchLabels: {{app: everywhere}}}}
  template:
    metadata: {{labels: {{app: everywhere}}}}
    spec:
      containers:
      - {{name: app, image: "{BUSYBOX}", command: [sleep, "3600"]}}
"#
        ),
    );
    kubectl(&["rollout", "status", "daemonset/everywhere", "--timeout=90s"]);

    // The HPA on the kubelets' CPU readings (metrics.k8s.io): a busy pod using twice its
    // request is scaled out to the maximum.
    apply(
        "burner.yaml",
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: burner}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burner}}}}
  template:
    metadata: {{labels: {{app: burner}}}}
    spec:
      containers:
      - name: app
        image: "{BUSYBOX}"
        command: [sh, -c, "while :; do :; done"]
        resources: {{requests: {{cpu: 50m}}, limits: {{cpu: 100m}}}}
"#
        ),
    );
    kubectl(&[
        "autoscale",
        "deployment",
        "burner",
        "--cpu-percent=50",
        "--min=1",
        "--max=2",
    ]);
    common::eventually("the HPA to scale out", Duration::from_secs(120), || {
        let replicas = kubectl(&[
            "get",
            "hpa",
            "burner",
            "-o",
            "jsonpath={.status.desiredReplicas}",
        ]);
        (replicas == "2").then_some(())
    });
    kubectl(&["delete", "deployment", "burner", "--wait=false"]);
    let on = kubectl(&[
        "get",
        "pods",
        "-l",
        "app=everywhere",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert_eq!(on, node);
}

/// An image pulled from a registry (docker-registry serving on the node's own loopback, in the
/// sandbox's network namespace) rather than loaded.
fn pulled_from_a_registry(
    kubectl: &dyn Fn(&[&str]) -> String,
    dir: &Path,
    node: &str,
    archive: &Path,
) {
    let netns = format!("--net=/run/netns/{node}");
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp: {{addr: 127.0.0.1:5000}}\n",
            dir.join("registry").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("nsenter");
    cmd.arg(&netns)
        .args(["docker-registry", "serve"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap());
    let _registry = ChildGuard::spawn(cmd, "docker-registry");
    common::eventually("the registry", Duration::from_secs(20), || {
        let out = Command::new("nsenter")
            .arg(&netns)
            .args(["curl", "-sf", "http://127.0.0.1:5000/v2/"])
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    let push = Command::new("nsenter")
        .arg(&netns)
        .args(["skopeo", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg("docker://127.0.0.1:5000/library/busybox:pulled")
        .output()
        .unwrap();
    assert!(push.status.success(), "{push:?}");
    kubectl(&[
        "run",
        "pulled",
        "--image=127.0.0.1:5000/library/busybox:pulled",
        "--image-pull-policy=Always",
        "--",
        "sleep",
        "3600",
    ]);
    common::eventually("the pulled pod to run", Duration::from_secs(60), || {
        (kubectl(&["get", "pod", "pulled", "-o", "jsonpath={.status.phase}"]) == "Running")
            .then_some(())
    });
    let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    assert!(
        log.contains("/v2/library/busybox/manifests/pulled"),
        "containerd asked the registry for the image:\n{log}"
    );
}
