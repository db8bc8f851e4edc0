//! The controllers inside the real `skiff server`, driven by the real kubectl: a Deployment's
//! ReplicaSets and pods, scale, set image, rollout history and undo, events, all under TLS and
//! RBAC (the controllers run as system:kube-controller-manager with the controller roles), and
//! two servers on one etcd with a single leader and a handover when it dies.

mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{ControlPlane, RemoveOnDrop, eventually};
use serde_json::Value;
use skiff_test_support::ChildGuard;

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn pods_of(cp: &ControlPlane, app: &str) -> Vec<Value> {
    items(&cp.json(&["get", "pods", "-l", &format!("app={app}")]))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn kubectl_deployment_workflow_runs_through_the_controllers() {
    let cp = ControlPlane::start_secure();
    cp.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=3",
    ]);
    let pods = eventually("3 pods of web", Duration::from_secs(30), || {
        let pods = pods_of(&cp, "web");
        (pods.len() == 3).then_some(pods)
    });
    let owner = &pods[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert!(owner["name"].as_str().unwrap().starts_with("web-"));

    cp.ok(&["scale", "deployment", "web", "--replicas=5"]);
    eventually("5 pods", Duration::from_secs(30), || {
        (pods_of(&cp, "web").len() == 5).then_some(())
    });

    cp.ok(&["set", "image", "deployment/web", "busybox=busybox:2"]);
    let replica_sets = eventually(
        "a second ReplicaSet at revision 2",
        Duration::from_secs(30),
        || {
            let sets = items(&cp.json(&["get", "rs", "-l", "app=web"]));
            let revisions: Vec<&str> = sets
                .iter()
                .filter_map(|rs| {
                    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str()
                })
                .collect();
            (sets.len() == 2 && revisions.contains(&"2")).then_some(sets)
        },
    );
    let first = replica_sets
        .iter()
        .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1")
        .expect("revision 1 kept")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = cp.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains("REVISION"), "{history}");
    assert!(history.lines().any(|l| l.starts_with("1 ")), "{history}");
    assert!(history.lines().any(|l| l.starts_with("2 ")), "{history}");
    // No kubelet runs here, so no pod ever becomes available: the rollout may replace only
    // maxSurge + maxUnavailable pods (2 + 1 of 5) and then waits, as upstream does.
    eventually("the surge step", Duration::from_secs(30), || {
        let pods = pods_of(&cp, "web");
        let new = pods
            .iter()
            .filter(|p| p["spec"]["containers"][0]["image"] == "busybox:2")
            .count();
        (new == 3 && pods.len() == 7).then_some(())
    });
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pods_of(&cp, "web").len(),
        7,
        "the rollout went beyond its bounds"
    );

    let undo = cp.ok(&["rollout", "undo", "deployment/web"]);
    assert!(undo.contains("rolled back"), "{undo}");
    eventually(
        "revision 1's ReplicaSet back as revision 3",
        Duration::from_secs(60),
        || {
            let rs = cp.json(&["get", "rs", &first]);
            let annotations = &rs["metadata"]["annotations"];
            (annotations["deployment.kubernetes.io/revision"] == "3"
                && annotations["deployment.kubernetes.io/revision-history"] == "1")
                .then_some(())
        },
    );
    let d = cp.json(&["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1",
        "undo put revision 1's template back"
    );

    let describe = cp.ok(&["describe", "deployment", "web"]);
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
    assert!(describe.contains("Scaled up replica set"), "{describe}");
    let events = cp.ok(&["get", "events"]);
    assert!(events.contains("SuccessfulCreate"), "{events}");
    // The scheduler runs too (as system:kube-scheduler): with no node to run on, it says so.
    let events = eventually("a FailedScheduling event", Duration::from_secs(30), || {
        let events = cp.ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
        ]);
        events.contains("FailedScheduling").then_some(events)
    });
    assert!(events.contains("nodes"), "{events}");
    assert!(
        !cp.log().contains("forbidden"),
        "a controller was refused by RBAC:\n{}",
        cp.log()
    );
}

/// One etcd member on loopback ports, killed (by PID) when the test ends.
struct Etcd {
    _process: ChildGuard,
    client: u16,
    _dir: RemoveOnDrop,
}

impl Etcd {
    fn start() -> Option<Etcd> {
        if !std::path::Path::new("/usr/bin/etcd").exists() {
            eprintln!("SKIPPED: /usr/bin/etcd is missing (cargo xtask setup installs etcd-server)");
            return None;
        }
        let dir = std::env::temp_dir().join(skiff_test_support::unique_name("etcd"));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<std::net::TcpListener> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let [client, peer] = [0, 1].map(|i| ports[i].local_addr().unwrap().port());
        drop(ports);
        let mut cmd = Command::new("/usr/bin/etcd");
        cmd.arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap());
        let process = ChildGuard::spawn(cmd, "etcd");
        Some(Etcd {
            _process: process,
            client,
            _dir: RemoveOnDrop(dir),
        })
    }
}

fn lease_holder(cp: &ControlPlane) -> Option<String> {
    let out = cp
        .kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn two_servers_one_leader_and_a_handover_when_it_dies() {
    let Some(etcd) = Etcd::start() else { return };
    let store = format!("etcd://127.0.0.1:{}/skiff-leader-test", etcd.client);
    let flags = [
        "--insecure-loopback",
        "--datastore",
        store.as_str(),
        "--leader-elect-lease-duration",
        "3s",
    ];
    let a = ControlPlane::launch(&flags);
    let b = ControlPlane::launch(&flags);
    let first = eventually("a leader", Duration::from_secs(30), || lease_holder(&b));
    // One leader, and it stays the leader while it lives.
    thread::sleep(Duration::from_secs(4));
    assert_eq!(lease_holder(&b).as_deref(), Some(first.as_str()));
    let a_leads = a.log().contains("became the leader");
    let b_leads = b.log().contains("became the leader");
    assert!(
        a_leads ^ b_leads,
        "exactly one server leads (a: {a_leads}, b: {b_leads})"
    );
    let (mut leader, survivor) = if a_leads {
        (a, b)
    } else {
        (b, ControlPlane::launch(&flags))
    };
    // Whichever led, kill it; the other takes over within a few lease durations.
    leader.kill();
    let next = eventually("a new leader", Duration::from_secs(30), || {
        lease_holder(&survivor).filter(|h| *h != first)
    });
    assert_ne!(next, first);
    // And the new leader's controllers work.
    survivor.ok(&[
        "create",
        "deployment",
        "after",
        "--image=busybox",
        "--replicas=2",
    ]);
    eventually(
        "pods made by the new leader",
        Duration::from_secs(30),
        || (pods_of(&survivor, "after").len() == 2).then_some(()),
    );
    drop(leader);
}
