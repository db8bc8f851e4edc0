//! A restarted (even killed) loader drops no traffic: the programs run from their pinned
//! links, the maps are adopted, and clients connecting without pause see no failure.
//! Driven through the real `skiff` CLI.

mod common;

use std::{process::Stdio, time::Duration};

use common::{Lab, NODE_IP, netprobe, skiff_bin};
use skiff_datapath::map_usage;
use skiff_test_support::{ChildGuard, require_root};

const VIP: &str = "10.96.0.10:80";
const NODE_PORT: &str = "198.19.0.1:30080";

fn skiff(lab: &Lab, args: &[&str]) -> std::process::Command {
    let mut cmd = lab.node.command(skiff_bin());
    cmd.args(args)
        .arg("--bpffs")
        .arg(lab.pins.path())
        .stdout(Stdio::null());
    cmd
}

fn attach_command(lab: &Lab) -> std::process::Command {
    let mut cmd = skiff(lab, &["datapath", "attach"]);
    cmd.arg("--cgroup")
        .arg(lab.cgroup.path())
        .args(["--node-ip", &NODE_IP.to_string()]);
    for iface in &lab.node_ifs {
        cmd.args(["--iface", iface]);
    }
    cmd
}

fn ok(mut cmd: std::process::Command, what: &str) {
    let out = cmd.stderr(Stdio::piped()).output().expect(what);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: netns, cgroup v2, bpf(), tc"]
fn restarting_the_loader_under_load_drops_nothing_and_adopts_the_maps() {
    require_root();
    let lab = Lab::new(2);
    ok(attach_command(&lab), "skiff datapath attach");
    let backends = lab
        .backends
        .iter()
        .map(|b| b.endpoint().to_string())
        .collect::<Vec<_>>()
        .join(",");
    ok(
        skiff(
            &lab,
            &["lb", "add", "--frontend", VIP, "--backends", &backends],
        ),
        "skiff lb add (ClusterIP)",
    );
    ok(
        skiff(
            &lab,
            &[
                "lb",
                "add",
                "--frontend",
                NODE_PORT,
                "--backends",
                &backends,
                "--type",
                "nodeport",
            ],
        ),
        "skiff lb add (NodePort)",
    );
    let ids = |lab: &Lab| -> Vec<(&'static str, u32)> {
        map_usage(lab.pins.path())
            .unwrap()
            .into_iter()
            .map(|u| (u.name, u.id))
            .collect()
    };
    let before = ids(&lab);

    let clusterip = lab.spawn_probe(&["loop", VIP, "5"]);
    let mut ext_cmd = lab.ext.command(netprobe());
    ext_cmd
        .args(["loop", NODE_PORT, "5"])
        .stdout(Stdio::piped());
    let nodeport = ChildGuard::spawn(ext_cmd, "netprobe loop (NodePort)");

    // Kill the loader at different points of its start-up, then let it run to completion.
    for round in 0..6_u64 {
        let mut killed = ChildGuard::spawn(attach_command(&lab), "skiff datapath attach");
        std::thread::sleep(Duration::from_millis(round * 15));
        killed.kill();
        ok(attach_command(&lab), "skiff datapath attach (restart)");
        std::thread::sleep(Duration::from_millis(300));
    }

    for (mut child, what) in [(clusterip, "ClusterIP"), (nodeport, "NodePort")] {
        child.wait_timeout(Duration::from_secs(15));
        let mut out = String::new();
        std::io::Read::read_to_string(child.child().stdout.as_mut().unwrap(), &mut out).unwrap();
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(
            report["failed"], 0,
            "{what}: no connection may fail: {report}"
        );
        assert!(
            report["connections"].as_u64().unwrap() > 100,
            "{what}: clients kept connecting: {report}"
        );
    }
    assert_eq!(ids(&lab), before, "every map was adopted, none recreated");

    // What the operator sees: both services, and the NodePort flows in conntrack.
    let json = |args: &[&str]| -> serde_json::Value {
        let out = skiff(&lab, args).stdout(Stdio::piped()).output().unwrap();
        assert!(out.status.success(), "skiff {args:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let services = json(&["lb", "list", "-o", "json"]);
    assert_eq!(services.as_array().unwrap().len(), 2, "{services}");
    assert_eq!(services[1]["type"], "NodePort", "{services}");
    let flows = json(&["ct", "list", "-o", "json", "--all", "--frontend", NODE_PORT]);
    assert!(
        flows.as_array().unwrap().len() > 100,
        "NodePort flows are tracked"
    );
    let usage = json(&["ct", "stats", "-o", "json"]);
    assert_eq!(usage[0]["name"], "SKIFF_CT4_V1");
    assert!(usage[0]["entries"].as_u64().unwrap() > 100, "{usage}");
}
