//! The VXLAN overlay (`skiff agent --overlay vxlan`) between two nodes that share no L2
//! segment: node 1 (198.18.1.0/24) and node 2 (198.18.2.0/24) reach each other only through a
//! router namespace that knows nothing but those two subnets. Pods of a Deployment spread
//! over both nodes talk TCP across them by pod IP, a full-MTU ping between them (busybox ping:
//! DF set, as the kernel does for every packet that fits the route's MTU) comes back whole, and
//! the router sees only UDP 8472 between node addresses: no packet with a pod address, no
//! fragment.

mod common;

use std::time::Duration;

use common::{AgentNode, ControlPlane, RunningPod, eventually, sysctl};
use skiff_test_support::{NetNs, veth_pair};

/// The cluster's pod CIDR (every node's /24 comes from it).
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The nodes' interfaces are veths: MTU 1500; VXLAN takes 50 of it.
const POD_MTU: u32 = 1450;
const VXLAN: &[&str] = &["--overlay", "vxlan"];

/// Packets counted by the router's named nftables counter `name`.
fn counter(router: &NetNs, name: &str) -> u64 {
    let out = router
        .command("nft")
        .args(["list", "counter", "ip", "skt", name])
        .output()
        .expect("running nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == "packets")
        .expect("nft prints a packet count");
    words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {text}"))
}

#[test]
#[ignore = "needs root: run by cargo xtask test"]
fn pods_on_nodes_without_a_shared_segment_talk_through_vxlan() {
    skiff_test_support::require_root();
    let cp = ControlPlane::start_secure();
    // Declared before the nodes, so it is dropped after them.
    let router = NetNs::new("rt");
    let mut nodes: Vec<AgentNode> = (1..=2)
        .map(|i| AgentNode::new(&cp, &format!("vx{i}")))
        .collect();
    let (if1, _) = veth_pair(&nodes[0].ns, "198.18.1.2/24", &router, "198.18.1.1/24");
    let (if2, _) = veth_pair(&nodes[1].ns, "198.18.2.2/24", &router, "198.18.2.1/24");
    sysctl(&router, "net.ipv4.ip_forward=1");
    for (i, node) in nodes.iter().enumerate() {
        node.ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("198.18.{}.1", i + 1),
        ]);
    }
    // The router knows only the two node subnets: a pod address can cross it only inside
    // the nodes' UDP.
    let routes = String::from_utf8(router.ip(&["-4", "route", "show"]).stdout).unwrap();
    let mut dsts: Vec<&str> = routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    dsts.sort_unstable();
    assert_eq!(dsts, ["198.18.1.0/24", "198.18.2.0/24"], "{routes}");
    // Counted before routing (prerouting), so even packets the router could not route count.
    let nft = format!(
        "table ip skt {{
            counter pods {{}}
            counter fragments {{}}
            counter vxlan {{}}
            counter other {{}}
            chain pre {{
                type filter hook prerouting priority -300; policy accept;
                ip saddr {CLUSTER_CIDR} counter name pods
                ip daddr {CLUSTER_CIDR} counter name pods
                ip frag-off & 0x3fff != 0 counter name fragments
                ip saddr 198.18.0.0/16 ip daddr 198.18.0.0/16 udp dport 8472 counter name vxlan accept
                counter name other
            }}
        }}"
    );
    let load = router
        .command("nft")
        .args(["-f", &cp.file("router.nft", &nft)])
        .output()
        .expect("running nft");
    assert!(
        load.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&load.stderr)
    );

    let if1_again = if1.clone();
    for (i, (node, iface)) in nodes.iter_mut().zip([if1, if2]).enumerate() {
        node.start_agent(
            &cp,
            &format!("vx{}", i + 1),
            &format!("198.18.{}.2", i + 1),
            &iface,
            VXLAN,
        );
    }
    eventually("two Ready nodes", Duration::from_secs(60), || {
        let out = cp.ok(&["get", "nodes", "--no-headers"]);
        (out.lines().filter(|l| l.contains(" Ready ")).count() == 2).then_some(())
    });
    let cidrs: Vec<String> = (1..=2)
        .map(|i| {
            eventually("the node's pod CIDR", Duration::from_secs(30), || {
                let c = cp.ok(&[
                    "get",
                    "node",
                    &format!("vx{i}"),
                    "-o",
                    "jsonpath={.spec.podCIDR}",
                ]);
                (!c.trim().is_empty()).then(|| c.trim().to_owned())
            })
        })
        .collect();
    // Each node: the VXLAN device at the underlay's MTU less 50, the other node's pods routed
    // through it.
    for (i, node) in nodes.iter().enumerate() {
        let other = &cidrs[1 - i];
        eventually(
            "the other node's pods routed over the VXLAN device",
            Duration::from_secs(30),
            || {
                let out = node
                    .ns
                    .command("ip")
                    .args(["route", "show", other])
                    .output()
                    .unwrap();
                let route = String::from_utf8_lossy(&out.stdout);
                (route.contains("dev skiff.vxlan") && route.contains("onlink")).then_some(())
            },
        );
        let link =
            String::from_utf8(node.ns.ip(&["-d", "link", "show", "skiff.vxlan"]).stdout).unwrap();
        assert!(
            link.contains(&format!("mtu {POD_MTU} "))
                && link.contains("vxlan id 1 ")
                && link.contains(&format!("local 198.18.{}.2 ", i + 1))
                && link.contains("dstport 8472")
                && link.contains("nolearning"),
            "{link}"
        );
    }

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
    let pods = eventually(
        "4 running pods on both nodes",
        Duration::from_secs(90),
        || {
            let pods = cp.json(&["get", "pods", "-l", "app=web"]);
            let running = common::running_pods(&pods);
            (running.len() == 4).then_some(running)
        },
    );
    let on = |node: &str| {
        pods.iter()
            .find(|p| p.node == node)
            .unwrap_or_else(|| panic!("the scheduler spreads the pods: none on {node}: {pods:?}"))
            .clone()
    };
    let (a, b) = (on("vx1"), on("vx2"));
    let vxlan_before = counter(&router, "vxlan");

    // TCP by pod IP, both ways.
    for (from, to) in [(&a, &b), (&b, &a)] {
        eventually(
            &format!("{} reaching {} at {}", from.name, to.name, to.ip),
            Duration::from_secs(60),
            || {
                let out = cp
                    .kubectl(&["exec", &from.name, "--", "nc", "-w", "2", &to.ip, "8080"])
                    .output()
                    .unwrap();
                (String::from_utf8_lossy(&out.stdout).trim() == to.name).then_some(())
            },
        );
    }

    // A packet of the pods' MTU (DF set: it fits the route) crosses whole, asked once: had the
    // pods the underlay's MTU, the first echo would be dropped at the VXLAN device with
    // "fragmentation needed". And that MTU leaves room for the encapsulation.
    let mtu_of = |pod: &RunningPod| -> u32 {
        let link = cp.ok(&["exec", &pod.name, "--", "ip", "link", "show", "eth0"]);
        link.split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no MTU in {link}"))
    };
    for (from, to) in [(&a, &b), (&b, &a)] {
        let size = (mtu_of(from) - 28).to_string();
        let out = cp
            .kubectl(&[
                "exec", &from.name, "--", "ping", "-c", "3", "-W", "2", "-s", &size, &to.ip,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("3 packets transmitted, 3 packets received"),
            "full-MTU ping {} -> {}: {text}{}",
            from.name,
            to.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for pod in [&a, &b] {
        assert_eq!(mtu_of(pod), POD_MTU, "{}'s MTU", pod.name);
    }

    // The router carried all of it as UDP 8472 between the nodes, and nothing else.
    let vxlan = counter(&router, "vxlan") - vxlan_before;
    assert!(vxlan >= 12, "only {vxlan} VXLAN packets crossed the router");
    assert_eq!(counter(&router, "pods"), 0, "pod addresses at the router");
    assert_eq!(counter(&router, "fragments"), 0, "fragments at the router");
    assert_eq!(
        counter(&router, "other"),
        0,
        "packets other than VXLAN at the router"
    );
    let unroutable = router
        .command("ip")
        .args(["route", "get", &b.ip])
        .output()
        .unwrap();
    assert!(
        !unroutable.status.success(),
        "the router has a route to pod {}: {}",
        b.ip,
        String::from_utf8_lossy(&unroutable.stdout)
    );

    // An agent restart keeps the device (same settings: not re-created) and cleans up after a
    // node that left while it was down.
    let ifindex = |node: &AgentNode| {
        let out = node.ns.ip(&["-o", "link", "show", "skiff.vxlan"]).stdout;
        String::from_utf8(out)
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let before = ifindex(&nodes[0]);
    let pid =
        nix::unistd::Pid::from_raw(i32::try_from(nodes[0].agent.as_ref().unwrap().id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    nodes[0]
        .agent
        .as_mut()
        .unwrap()
        .wait_timeout(Duration::from_secs(30));
    let gone = &nodes[0].ns;
    gone.ip(&[
        "route",
        "replace",
        "10.244.99.0/24",
        "via",
        "10.244.99.0",
        "dev",
        "skiff.vxlan",
        "onlink",
    ]);
    gone.ip(&[
        "neigh",
        "replace",
        "10.244.99.0",
        "lladdr",
        "02:73:c6:12:63:63",
        "dev",
        "skiff.vxlan",
        "nud",
        "permanent",
    ]);
    let fdb = gone
        .command("bridge")
        .args([
            "fdb",
            "replace",
            "02:73:c6:12:63:63",
            "dev",
            "skiff.vxlan",
            "dst",
            "198.18.99.99",
            "self",
            "permanent",
        ])
        .status()
        .unwrap();
    assert!(fdb.success());
    nodes[0].start_agent(&cp, "vx1", "198.18.1.2", &if1_again, VXLAN);
    eventually(
        "the left node's entries removed",
        Duration::from_secs(30),
        || {
            let show = |program: &str, args: &[&str]| {
                let out = nodes[0].ns.command(program).args(args).output().unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let all = show("ip", &["route", "show", "dev", "skiff.vxlan"])
                + &show("ip", &["neigh", "show", "dev", "skiff.vxlan"])
                + &show("bridge", &["fdb", "show", "dev", "skiff.vxlan"]);
            (!all.contains("10.244.99.")
                && !all.contains("02:73:c6:12:63:63")
                && all.contains(&cidrs[1]))
            .then_some(())
        },
    );
    assert_eq!(ifindex(&nodes[0]), before, "the device was re-created");
    eventually(
        &format!("{} reaching {} after the restart", b.name, a.name),
        Duration::from_secs(60),
        || {
            let out = cp
                .kubectl(&["exec", &b.name, "--", "nc", "-w", "2", &a.ip, "8080"])
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).trim() == a.name).then_some(())
        },
    );
}
