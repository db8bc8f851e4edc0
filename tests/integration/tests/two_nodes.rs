//! Two nodes, each a `skiff agent` with its own network namespace, cgroup, bpffs directory and
//! containerd, joined to one real `skiff server` with bootstrap tokens and linked by a veth pair
//! (direct routing between their pod CIDRs): a Deployment spread over both nodes is reached
//! through its ClusterIP from either node, every pod answering, and through a NodePort from the
//! other node (outside the node, per packet at tc); kubectl exec and logs reach pods on either
//! node through that node's kubelet API; a DaemonSet runs on both.

mod common;

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use common::{AgentNode, ControlPlane, eventually};
use skiff_test_support::veth_pair;

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn a_service_spans_pods_on_two_nodes() {
    let cp = ControlPlane::start_secure();
    let mut nodes: Vec<AgentNode> = (1..=2)
        .map(|i| AgentNode::new(&cp, &format!("n{i}")))
        .collect();
    let (if1, if2) = veth_pair(&nodes[0].ns, "198.18.0.1/24", &nodes[1].ns, "198.18.0.2/24");
    for (i, (node, iface)) in nodes.iter_mut().zip([if1, if2]).enumerate() {
        node.start_agent(
            &cp,
            &format!("n{}", i + 1),
            &format!("198.18.0.{}", i + 1),
            &iface,
            &[],
        );
    }
    eventually("two Ready nodes", Duration::from_secs(60), || {
        let out = cp.ok(&["get", "nodes", "--no-headers"]);
        (out.lines().filter(|l| l.contains(" Ready ")).count() == 2).then_some(())
    });
    let dirs: Vec<&std::path::Path> = nodes.iter().map(|n| n.dir.as_path()).collect();
    common::load_busybox(&cp.dir, "busybox", "docker.io/library/busybox:1.35", &dirs);
    cp.ok(&[
        "create",
        "deployment",
        "web",
        "--image=docker.io/library/busybox:1.35",
        "--replicas=4",
        "--",
        "/bin/sh",
        "-c",
        "while true; do hostname | nc -l -p 8080; done",
    ]);
    cp.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    let pods = eventually(
        "4 running pods on both nodes",
        Duration::from_secs(90),
        || {
            let pods = cp.json(&["get", "pods", "-l", "app=web"]);
            let running: Vec<(String, String)> = common::running_pods(&pods)
                .into_iter()
                .map(|p| (p.name, p.node))
                .collect();
            (running.len() == 4).then_some(running)
        },
    );
    let on: BTreeSet<&str> = pods.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(on.len(), 2, "the scheduler spreads the pods: {pods:?}");
    let names: BTreeSet<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    let vip = cp.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    for node in &nodes {
        let ask = || {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", node.ns.path().display()))
                .args(["sh", "-c"])
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && exec busybox nc -w 2 {} 80 </dev/null",
                    node.cgroup.path().display(),
                    vip.trim()
                ))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let mut answered = BTreeSet::new();
        eventually(
            "every pod answering from this node",
            Duration::from_secs(60),
            || {
                let who = ask();
                if !who.is_empty() {
                    answered.insert(who);
                }
                (answered == names).then_some(())
            },
        );
    }

    // A NodePort on node 1, asked from node 2 outside any pod cgroup: no socket LB on the way,
    // the tc program on node 1's interface balances over pods of both nodes.
    cp.ok(&[
        "expose",
        "deployment",
        "web",
        "--name=web-np",
        "--type=NodePort",
        "--port=80",
        "--target-port=8080",
    ]);
    let node_port = cp.ok(&[
        "get",
        "service",
        "web-np",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let mut answered = BTreeSet::new();
    eventually(
        "every pod answering through the NodePort",
        Duration::from_secs(60),
        || {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", nodes[1].ns.path().display()))
                .args(["busybox", "nc", "-w", "2", "198.18.0.1", node_port.trim()])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let who = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if !who.is_empty() {
                answered.insert(who);
            }
            (answered == names).then_some(())
        },
    );

    // The kubelet API of each node: exec into a pod on either.
    for (pod, node) in &pods {
        assert_eq!(
            cp.ok(&["exec", pod, "--", "hostname"]).trim(),
            pod,
            "exec on {node}"
        );
    }

    cp.ok(&[
        "create", "-f", &cp.file(
            "ds.yaml",
            r#"{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "everywhere"},
"spec": {"selector": {"matchLabels": {"app": "everywhere"}}, "template": {
"metadata": {"labels": {"app": "everywhere"}}, "spec": {"containers": [{"name": "app",
"image": "docker.io/library/busybox:1.35", "command": ["sh", "-c", "echo on $(hostname); sleep 3600"]}]}}}}"#,
        ),
    ]);
    cp.ok(&["rollout", "status", "daemonset/everywhere", "--timeout=90s"]);
    let ds = cp.json(&["get", "pods", "-l", "app=everywhere"]);
    let mut on: Vec<(String, String)> = ds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    on.sort();
    assert_eq!(
        on.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["n1", "n2"],
        "one DaemonSet pod per node"
    );
    for (_, pod) in &on {
        let logs = eventually("the DaemonSet pod's log", Duration::from_secs(30), || {
            let out = cp.kubectl(&["logs", pod]).output().ok()?;
            (!out.stdout.is_empty()).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
        assert_eq!(logs, format!("on {pod}\n"));
    }
}
