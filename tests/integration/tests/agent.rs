//! `skiff agent` on a test node (its own network namespace, cgroup and bpffs directory): it
//! joins a real `skiff server` with a bootstrap token (a CSR the controllers approve and sign),
//! then the Services created with kubectl reach the node's eBPF maps (a connect() to the
//! ClusterIP from the node's cgroup lands on an endpoint) and its cluster DNS answers for them.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{ControlPlane, Lab, eventually};
use skiff_test_support::ChildGuard;

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [198.18.0.2]
  conditions: {ready: true}
- addresses: [198.18.1.2]
  conditions: {ready: true}
";

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn agent_joins_and_serves_services_and_dns_on_its_node() {
    let cp = ControlPlane::start_secure();
    let url = cp.server_url();
    let token = cp.skiff_token(&["create"]);

    let lab = Lab::new(2);
    let resolv = cp.file("resolv.conf", "nameserver 127.0.0.1\n");
    let log = cp.dir.join("agent.log");
    let agent_dir = cp.dir.join("agent");
    let start_agent = |token: Option<&str>| {
        let mut cmd = Command::new(common::skiff_bin());
        cmd.args(["agent", "--server", &url, "--node-name", "n1"])
            .arg("--ca-file")
            .arg(cp.dir.join("tls/ca.crt"))
            .arg("--data-dir")
            .arg(&agent_dir)
            .arg("--netns")
            .arg(lab.node.path())
            .arg("--cgroup")
            .arg(lab.cgroup.path())
            .arg("--bpffs")
            .arg(lab.pins.path())
            .args(["--resolv-conf", &resolv])
            // What this test checks needs no pods (up.rs and two_nodes.rs run them); without a
            // kubelet the agent starts no containerd that its SIGKILL below would leave behind.
            .arg("--no-kubelet")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        ChildGuard::spawn(cmd, "skiff agent")
    };
    let mut agent = start_agent(Some(&token));
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the agent's DNS to answer", Duration::from_secs(60), || {
        assert!(
            agent.child().try_wait().unwrap().is_none(),
            "the agent exited:\n{}",
            agent_log()
        );
        agent_log().contains("cluster DNS answering").then_some(())
    });
    let csrs = cp.ok(&["get", "csr"]);
    assert!(
        csrs.lines()
            .any(|l| l.starts_with("node-csr-n1-") && l.contains("Approved,Issued")),
        "{csrs}"
    );

    cp.ok(&["apply", "-f", &cp.file("web.yaml", SERVICE)]);
    let ip = cp.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let vip = format!("{}:80", ip.trim());
    let mut seen = std::collections::BTreeSet::new();
    eventually(
        "connections to the ClusterIP reaching both endpoints",
        Duration::from_secs(30),
        || {
            let reply = lab.probe(&["tcp", &vip]);
            if reply["ok"] == true {
                seen.insert(Lab::backend_of(&reply));
            }
            (seen.len() == 2).then_some(())
        },
    );

    // The node's DNS (10.96.0.10 in its namespace) knows the Service.
    let lookup = || {
        let out = lab
            .node
            .command("busybox")
            .args(["nslookup", "web.default.svc.cluster.local", "10.96.0.10"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answer = eventually(
        "a DNS answer for the Service",
        Duration::from_secs(20),
        || {
            let text = lookup();
            text.contains(ip.trim()).then_some(text)
        },
    );
    assert!(answer.contains("web.default.svc.cluster.local"), "{answer}");

    // Pods' in-cluster clients: the agent answers the kubernetes Service's address.
    assert!(
        agent_log().contains("in-cluster clients reach the API server here"),
        "{}",
        agent_log()
    );

    // Restarted without the token, the agent uses the certificate it got; that the kubernetes
    // Service's port is taken in the node (here by a squatter) costs only the forwarder.
    agent.kill();
    let mut squatter = lab.node.command("python3");
    squatter.args([
        "-c",
        "import socket, time\n\
         s = socket.socket(); s.bind(('10.96.0.1', 443)); s.listen(); print('bound', flush=True)\n\
         time.sleep(120)",
    ]);
    squatter.stdout(Stdio::piped());
    let mut squatter = ChildGuard::spawn(squatter, "a process holding 10.96.0.1:443");
    let mut bound = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.child().stdout.as_mut().unwrap()),
        &mut bound,
    )
    .unwrap();
    assert_eq!(bound.trim(), "bound");
    let mut agent = start_agent(None);
    eventually("the restarted agent", Duration::from_secs(60), || {
        assert!(
            agent.child().try_wait().unwrap().is_none(),
            "the restarted agent exited:\n{}",
            agent_log()
        );
        agent_log().contains("cluster DNS answering").then_some(())
    });
    assert!(!agent_log().contains("waiting for the node certificate"));
    assert!(
        agent_log().contains("pods cannot reach the API server through the kubernetes Service"),
        "{}",
        agent_log()
    );
    let reply = lab.probe(&["tcp", &vip]);
    assert_eq!(reply["ok"], true, "{reply}");
    squatter.kill();
}
