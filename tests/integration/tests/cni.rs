//! skiff-cni driven exactly as a runtime drives it (CNI_* environment, config on stdin, result
//! or error body on stdout), inside test-made "node" namespaces, with pods made by the plugin.
//!
//! Network safety: every address below exists only inside namespaces these tests create. The
//! node namespaces have routes only to their own pods and to each other's pod CIDR.

mod common;

use std::{
    collections::HashSet,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use common::{RemoveOnDrop, Server, netprobe, run_probe};
use serde_json::{Value, json};
use skiff_test_support::{NetNs, require_root, unique_name, veth_pair};

/// The plugin binary, built by `cargo build --workspace` into the same target directory.
fn cni_bin() -> PathBuf {
    let bin = Path::new(netprobe()).with_file_name("skiff-cni");
    assert!(
        bin.exists(),
        "{} is missing: run these tests through `cargo xtask test`, which builds it",
        bin.display()
    );
    bin
}

/// What one plugin invocation returned: success, and the JSON it printed (Null if nothing).
#[derive(Debug)]
struct Outcome {
    ok: bool,
    out: Value,
    elapsed: Duration,
}

impl Outcome {
    /// The error code of a failed call.
    fn code(&self) -> i64 {
        assert!(!self.ok, "expected a failure, got {}", self.out);
        assert!(
            self.out["msg"].is_string(),
            "error body lacks msg: {}",
            self.out
        );
        self.out["code"].as_i64().expect("error body has a code")
    }

    fn result(&self) -> &Value {
        assert!(self.ok, "plugin failed: {}", self.out);
        &self.out
    }

    /// The pod address in an ADD result.
    fn pod_ip(&self) -> Ipv4Addr {
        let addr = self.result()["ips"][0]["address"]
            .as_str()
            .expect("ips[0].address");
        addr.strip_suffix("/32")
            .expect("a /32 pod address")
            .parse()
            .expect("an IPv4 address")
    }
}

/// Spawns the plugin in `node` with the CNI environment and `stdin`.
fn spawn_cni(node: &NetNs, bin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> std::process::Child {
    let mut cmd = node.command(bin);
    cmd.env("CNI_PATH", "/usr/lib/cni")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning skiff-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("writing the config");
    child
}

fn finish(child: std::process::Child, started: Instant) -> Outcome {
    let out = child.wait_with_output().expect("waiting for skiff-cni");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout {stdout:?} is not JSON: {e}"))
    };
    Outcome {
        ok: out.status.success(),
        out: json,
        elapsed,
    }
}

fn exec(node: &NetNs, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let started = Instant::now();
    finish(spawn_cni(node, &cni_bin(), env, stdin), started)
}

/// A node namespace with the plugin's IPAM state in a test-owned directory.
struct Node {
    ns: NetNs,
    conf: Value,
    state: PathBuf,
    _state: RemoveOnDrop,
}

impl Node {
    fn new(tag: &str, subnet: &str, mtu: u32) -> Self {
        // No ip_forward here: ADD must turn it on (pods are routed, not bridged).
        let ns = NetNs::new(tag);
        let state = std::env::temp_dir().join(unique_name("cni"));
        std::fs::create_dir_all(&state).expect("state dir");
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": "sktnet",
            "type": "skiff-cni",
            "mtu": mtu,
            "ipam": {"subnet": subnet, "dataDir": state.join("ipam")},
        });
        Self {
            ns,
            conf,
            _state: RemoveOnDrop(state.clone()),
            state,
        }
    }

    /// Every call also puts pods on the eBPF fast path, with maps pinned in `bpffs`.
    fn with_bpffs(mut self, bpffs: &Path) -> Self {
        self.conf["bpffs"] = json!(bpffs);
        self
    }

    fn conf_with(&self, extra: &Value) -> Vec<u8> {
        let mut conf = self.conf.clone();
        for (k, v) in extra.as_object().expect("object") {
            conf[k] = v.clone();
        }
        serde_json::to_vec(&conf).expect("json")
    }

    fn call(&self, verb: &str, pod: Option<&Pod>, extra: &Value) -> Outcome {
        let mut env = vec![("CNI_COMMAND", verb)];
        if let Some(pod) = pod {
            env.extend([
                ("CNI_CONTAINERID", pod.id.as_str()),
                ("CNI_NETNS", pod.netns.as_str()),
                ("CNI_IFNAME", "eth0"),
            ]);
        }
        exec(&self.ns, &env, &self.conf_with(extra))
    }

    fn add(&self, pod: &Pod) -> Outcome {
        self.call("ADD", Some(pod), &json!({}))
    }

    fn del(&self, pod: &Pod) -> Outcome {
        self.call("DEL", Some(pod), &json!({}))
    }

    /// Addresses the IPAM state holds.
    fn allocated(&self) -> Vec<String> {
        let dir = self.state.join("ipam/sktnet");
        let mut ips: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }

    /// The plugin's host-side veths in this node.
    fn host_veths(&self) -> Vec<String> {
        links(&self.ns)
            .into_iter()
            .filter(|l| l.starts_with("skf"))
            .collect()
    }

    fn routes(&self) -> String {
        String::from_utf8_lossy(&self.ns.ip(&["-4", "route", "show"]).stdout).into_owned()
    }
}

fn links(ns: &NetNs) -> Vec<String> {
    let out = ns.ip(&["-j", "link", "show"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

fn mtu_of(ns: &NetNs, ifname: &str) -> u64 {
    let out = ns.ip(&["-j", "link", "show", ifname]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    v[0]["mtu"].as_u64().expect("mtu")
}

/// A pod: its own network namespace, which the plugin wires.
struct Pod {
    ns: NetNs,
    id: String,
    netns: String,
}

impl Pod {
    fn new(tag: &str) -> Self {
        let ns = NetNs::new(tag);
        let id = format!("{}-{tag}", ns.name());
        let netns = ns.path().display().to_string();
        Self { ns, id, netns }
    }

    /// busybox ping from this pod; true when every echo came back.
    fn ping(&self, dst: &str, size: u32) -> bool {
        let out = self
            .ns
            .command("busybox")
            .args(["ping", "-c", "2", "-W", "2", "-s", &size.to_string(), dst])
            .output()
            .expect("running busybox ping");
        out.status.success()
    }

    fn probe(&self, args: &[&str]) -> Value {
        run_probe(self.ns.command(netprobe()), args)
    }
}

#[test]
#[ignore = "needs root: netns"]
fn verbs_results_and_error_codes_follow_the_spec() {
    require_root();
    let node = Node::new("cnode", "10.244.1.0/24", 1500);
    let pod = Pod::new("cpod");

    // VERSION needs nothing but a cniVersion (podman sends exactly this, with CNI_NETNS=dummy).
    let v = exec(
        &node.ns,
        &[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy")],
        br#"{"cniVersion":"1.0.0"}"#,
    );
    assert_eq!(v.result()["cniVersion"], "1.0.0");
    assert_eq!(
        v.result()["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    // Invalid environment and configs get the spec's codes and error body.
    assert_eq!(exec(&node.ns, &[], b"{}").code(), 4);
    assert_eq!(
        exec(
            &node.ns,
            &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")],
            &node.conf_with(&json!({}))
        )
        .code(),
        4
    );
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", pod.id.as_str()),
        ("CNI_NETNS", pod.netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let bad_json = exec(&node.ns, &env, b"{\"cniVersion\":");
    assert_eq!(bad_json.code(), 6);
    assert_eq!(bad_json.out["cniVersion"], "1.1.0");
    assert_eq!(
        node.call("ADD", Some(&pod), &json!({"cniVersion": "0.2.0"}))
            .code(),
        1
    );
    assert_eq!(
        node.call("ADD", Some(&pod), &json!({"type": "bridge"}))
            .code(),
        7
    );
    assert_eq!(node.call("ADD", Some(&pod), &json!({"mtu": 20})).code(), 7);
    assert_eq!(
        node.call(
            "ADD",
            Some(&pod),
            &json!({"ipam": {"subnet": "10.244.1.0/31"}})
        )
        .code(),
        7
    );
    let gone = Pod {
        ns: NetNs::new("cgone"),
        id: "gone".into(),
        netns: "/run/netns/skt-does-not-exist".into(),
    };
    assert_eq!(node.add(&gone).code(), 3);
    assert!(
        node.allocated().is_empty(),
        "failed ADDs leave no IPAM state"
    );
    assert!(node.host_veths().is_empty(), "failed ADDs leave no veth");

    // ADD: the result describes exactly what was made.
    let add = node.add(&pod);
    let r = add.result().clone();
    assert_eq!(r["cniVersion"], "1.1.0");
    let ip = add.pod_ip();
    assert_eq!(
        ip,
        Ipv4Addr::new(10, 244, 1, 2),
        "the first address after the reserved .1"
    );
    assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
    );
    let host_if = r["interfaces"][0]["name"]
        .as_str()
        .expect("host veth")
        .to_owned();
    assert_eq!(node.host_veths(), vec![host_if.clone()]);
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], pod.netns.as_str());
    let pod_link: Value =
        serde_json::from_slice(&pod.ns.ip(&["-j", "addr", "show", "eth0"]).stdout).unwrap();
    assert_eq!(pod_link[0]["address"], r["interfaces"][1]["mac"]);
    assert_eq!(pod_link[0]["addr_info"][0]["local"], ip.to_string());
    assert_eq!(pod_link[0]["addr_info"][0]["prefixlen"], 32);
    let neigh =
        String::from_utf8_lossy(&pod.ns.ip(&["neigh", "show", "dev", "eth0"]).stdout).into_owned();
    let host_mac = r["interfaces"][0]["mac"].as_str().unwrap();
    assert!(
        neigh.contains(&format!("169.254.1.1 lladdr {host_mac} PERMANENT")),
        "{neigh}"
    );
    assert!(
        node.routes().contains(&format!("{ip} dev {host_if}")),
        "{}",
        node.routes()
    );
    assert_eq!(node.allocated(), vec![ip.to_string()]);

    // A repeated ADD of a live attachment fails and leaves the attachment alone.
    assert_eq!(node.add(&pod).code(), 7);
    assert_eq!(node.host_veths(), vec![host_if.clone()]);

    // CHECK: passes on what ADD made, needs prevResult, notices breakage.
    let check = |extra: &Value| node.call("CHECK", Some(&pod), extra);
    let ok = check(&json!({"prevResult": r}));
    assert!(ok.ok && ok.out.is_null(), "{:?}", ok);
    assert_eq!(check(&json!({})).code(), 7);
    assert_eq!(
        check(&json!({"cniVersion": "0.3.1", "prevResult": r})).code(),
        1
    );
    pod.ns.ip(&["neigh", "del", "169.254.1.1", "dev", "eth0"]);
    assert_eq!(check(&json!({"prevResult": r})).code(), 101);

    // DEL: idempotent, with or without the netns, and nothing is left behind.
    for netns in [pod.netns.as_str(), "", "/run/netns/skt-does-not-exist"] {
        let out = exec(
            &node.ns,
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", pod.id.as_str()),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
            ],
            &node.conf_with(&json!({"prevResult": r})),
        );
        assert!(
            out.ok && out.out.is_null(),
            "DEL with CNI_NETNS={netns:?}: {:?}",
            out
        );
    }
    assert!(node.host_veths().is_empty());
    assert!(!node.routes().contains("10.244.1."), "{}", node.routes());
    assert!(node.allocated().is_empty());
    assert_eq!(links(&pod.ns), vec!["lo".to_owned()]);

    // Chained after another plugin: its result comes first and is kept, ours is appended.
    let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "dummy0"}],
        "ips": [{"address": "192.0.2.9/24", "interface": 0}], "dns": {"nameservers": ["192.0.2.53"]}});
    let chained = node.call("ADD", Some(&pod), &json!({"prevResult": prev}));
    let c = chained.result();
    assert_eq!(c["interfaces"][0]["name"], "dummy0");
    assert_eq!(c["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(c["ips"][0]["address"], "192.0.2.9/24");
    assert_eq!(
        c["ips"][1]["interface"], 2,
        "our IP points at our pod interface"
    );
    assert_eq!(c["dns"]["nameservers"][0], "192.0.2.53");
    assert!(node.del(&pod).ok);

    // Older result formats carry the per-IP family.
    let old = node.call("ADD", Some(&pod), &json!({"cniVersion": "0.4.0"}));
    assert_eq!(old.result()["cniVersion"], "0.4.0");
    assert_eq!(old.result()["ips"][0]["version"], "4");
    assert_ne!(old.pod_ip(), ip, "a released address is not reused at once");
    assert!(
        node.call("DEL", Some(&pod), &json!({"cniVersion": "0.4.0"}))
            .ok
    );

    // GC and STATUS exist from 1.1.0 on.
    assert_eq!(
        node.call("GC", None, &json!({"cniVersion": "1.0.0"}))
            .code(),
        1
    );
    assert_eq!(
        node.call("STATUS", None, &json!({"cniVersion": "1.0.0"}))
            .code(),
        1
    );
    assert!(node.call("STATUS", None, &json!({})).ok);
}

#[test]
#[ignore = "needs root: netns"]
fn pods_reach_each_other_and_their_node_on_one_node_and_across_nodes() {
    require_root();
    const MTU: u32 = 1400;
    // Node 1 runs the eBPF fast path, node 2 plain routing: traffic the program does not
    // redirect (to the other node, to the node itself) must pass through it untouched.
    let pins = skiff_test_support::BpffsDir::new("cn1bpf");
    let n1 = Node::new("cn1", "10.244.1.0/24", MTU).with_bpffs(pins.path());
    let n2 = Node::new("cn2", "10.244.2.0/24", MTU);
    // The node network: a veth between the nodes; direct routes to each other's pod CIDR.
    veth_pair(&n1.ns, "198.18.0.1/24", &n2.ns, "198.18.0.2/24");
    n1.ns
        .ip(&["route", "add", "10.244.2.0/24", "via", "198.18.0.2"]);
    n2.ns
        .ip(&["route", "add", "10.244.1.0/24", "via", "198.18.0.1"]);

    let pods = [Pod::new("pa"), Pod::new("pb"), Pod::new("pc")];
    let ips: Vec<Ipv4Addr> = [(&n1, &pods[0]), (&n1, &pods[1]), (&n2, &pods[2])]
        .iter()
        .map(|(node, pod)| node.add(pod).pod_ip())
        .collect();
    for node in [&n1, &n2] {
        let forward = node
            .ns
            .command("cat")
            .arg("/proc/sys/net/ipv4/ip_forward")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&forward.stdout).trim(),
            "1",
            "ADD enables forwarding"
        );
    }
    for pod in &pods {
        assert_eq!(mtu_of(&pod.ns, "eth0"), u64::from(MTU));
    }
    for veth in n1.host_veths() {
        assert_eq!(mtu_of(&n1.ns, &veth), u64::from(MTU));
    }
    let servers: Vec<Server> = pods
        .iter()
        .map(|p| Server::start(&p.ns, p.ns.name(), 8080))
        .collect();
    let node1_server = Server::start(&n1.ns, "node1", 8081);

    // (from, to) pairs: same node, across nodes (both directions).
    for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 1)] {
        let dst = format!("{}:8080", ips[to]);
        let tcp = pods[from].probe(&["tcp", &dst]);
        assert_eq!(tcp["ok"], true, "tcp {from}->{to}: {tcp}");
        // The server sees the client pod's own address: routed, never NATed.
        assert_eq!(
            tcp["reply"]
                .as_str()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap(),
            ips[from].to_string(),
            "{tcp}"
        );
        let udp = pods[from].probe(&["udp", &dst]);
        assert_eq!(udp["ok"], true, "udp {from}->{to}: {udp}");
        assert!(
            pods[from].ping(&ips[to].to_string(), 56),
            "ping {from}->{to}"
        );
        // Full-size frames: MTU minus IP and ICMP headers, through both veths and the node link.
        assert!(
            pods[from].ping(&ips[to].to_string(), MTU - 28),
            "full-MTU ping {from}->{to}"
        );
    }
    // Hairpin: a pod reaches itself through its own address (out through the gateway and back).
    let _own = Server::start(&pods[0].ns, "self", 8082);
    let tcp = pods[0].probe(&["tcp", &format!("{}:8082", ips[0])]);
    assert_eq!(tcp["ok"], true, "pod -> itself: {tcp}");
    // Pod to its node, and to the other node.
    let tcp = pods[0].probe(&["tcp", "198.18.0.1:8081"]);
    assert_eq!(tcp["ok"], true, "pod -> node: {tcp}");
    assert!(pods[2].ping("198.18.0.1", 56), "pod -> other node");
    assert!(
        n1.ns
            .command("busybox")
            .args(["ping", "-c", "1", "-W", "2", &ips[0].to_string()])
            .output()
            .unwrap()
            .status
            .success(),
        "node -> pod"
    );
    drop(servers);
    drop(node1_server);

    for (node, pod) in [(&n1, &pods[0]), (&n1, &pods[1]), (&n2, &pods[2])] {
        assert!(node.del(pod).ok);
        assert_eq!(links(&pod.ns), vec!["lo".to_owned()]);
    }
    for node in [&n1, &n2] {
        assert!(node.host_veths().is_empty());
        assert!(node.allocated().is_empty());
        assert!(!node.routes().contains("dev skf"), "{}", node.routes());
    }
}

#[test]
#[ignore = "needs root: netns"]
fn a_hundred_parallel_adds_get_distinct_addresses_and_dels_clean_up() {
    require_root();
    const PODS: usize = 100;
    let node = Node::new("cpar", "10.244.3.0/24", 1500);
    let pods: Vec<Pod> = (0..PODS).map(|i| Pod::new(&format!("p{i}x"))).collect();
    let bin = cni_bin();
    let conf = node.conf_with(&json!({}));
    let run_all = |verb: &str| -> Vec<Outcome> {
        let started: Vec<_> = pods
            .iter()
            .map(|p| {
                let env = [
                    ("CNI_COMMAND", verb),
                    ("CNI_CONTAINERID", p.id.as_str()),
                    ("CNI_NETNS", p.netns.as_str()),
                    ("CNI_IFNAME", "eth0"),
                ];
                (Instant::now(), spawn_cni(&node.ns, &bin, &env, &conf))
            })
            .collect();
        started.into_iter().map(|(t, c)| finish(c, t)).collect()
    };
    let adds = run_all("ADD");
    let ips: HashSet<Ipv4Addr> = adds.iter().map(Outcome::pod_ip).collect();
    assert_eq!(ips.len(), PODS, "every ADD got its own address");
    assert!(
        !ips.contains(&Ipv4Addr::new(10, 244, 3, 1)),
        "the reserved address"
    );
    assert_eq!(node.allocated().len(), PODS);
    assert_eq!(node.host_veths().len(), PODS);
    let mut lat: Vec<Duration> = adds.iter().map(|o| o.elapsed).collect();
    lat.sort();
    eprintln!(
        "{PODS} parallel ADDs (2 vCPUs, includes nsenter): p50 {:?}, p99 {:?}",
        lat[PODS / 2],
        lat[PODS * 99 / 100]
    );
    // One sequential ADD, the latency a single pod start sees.
    let extra = Pod::new("pextra");
    let one = node.add(&extra);
    eprintln!("a single ADD: {:?}", one.elapsed);
    assert!(node.del(&extra).ok);

    let dels = run_all("DEL");
    assert!(dels.iter().all(|o| o.ok), "every DEL succeeded");
    assert!(node.allocated().is_empty());
    assert!(node.host_veths().is_empty());
}

#[test]
#[ignore = "needs root: netns"]
fn exhaustion_is_a_clear_error_and_status_says_so() {
    require_root();
    // /29: .1 reserved, .2-.6 for pods.
    let node = Node::new("cexh", "10.244.4.0/29", 1500);
    let pods: Vec<Pod> = (0..6).map(|i| Pod::new(&format!("e{i}x"))).collect();
    for pod in &pods[..5] {
        node.add(pod).result();
    }
    assert_eq!(node.call("STATUS", None, &json!({})).code(), 50);
    let full = node.add(&pods[5]);
    assert_eq!(full.code(), 100);
    assert!(
        full.out["msg"]
            .as_str()
            .unwrap()
            .contains("no free pod address"),
        "{}",
        full.out
    );
    assert_eq!(links(&pods[5].ns), vec!["lo".to_owned()]);
    assert!(node.del(&pods[0]).ok);
    assert!(node.call("STATUS", None, &json!({})).ok);
    node.add(&pods[5]).result();
    for pod in &pods[1..] {
        assert!(node.del(pod).ok);
    }
    assert!(node.allocated().is_empty());
}

#[test]
#[ignore = "needs root: netns"]
fn gc_removes_stale_attachments_only() {
    require_root();
    let node = Node::new("cgc", "10.244.5.0/24", 1500);
    let pods: Vec<Pod> = (0..3).map(|i| Pod::new(&format!("g{i}x"))).collect();
    let results: Vec<Value> = pods.iter().map(|p| node.add(p).result().clone()).collect();
    // Pod 2's IPAM record is lost (say, a wiped dataDir): GC still finds its veth by alias.
    let ip2 = results[2]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .trim_end_matches("/32");
    std::fs::remove_file(node.state.join("ipam/sktnet").join(ip2)).unwrap();

    let gc = node.call(
        "GC",
        None,
        &json!({"cni.dev/valid-attachments": [{"containerID": pods[0].id, "ifname": "eth0"}]}),
    );
    assert!(gc.ok && gc.out.is_null(), "{gc:?}");
    assert_eq!(node.host_veths().len(), 1);
    assert_eq!(node.allocated().len(), 1);
    for pod in &pods[1..] {
        assert_eq!(links(&pod.ns), vec!["lo".to_owned()]);
    }
    let check = node.call("CHECK", Some(&pods[0]), &json!({"prevResult": results[0]}));
    assert!(
        check.ok,
        "the valid attachment survives GC: {:?}",
        check.out
    );
    // The alias libcni 1.2 also sends (containernetworking/cni#1101) is honoured too.
    let gc = node.call(
        "GC",
        None,
        &json!({"cni.dev/attachments": [{"containerID": pods[0].id, "ifname": "eth0"}]}),
    );
    assert!(gc.ok);
    assert_eq!(node.host_veths().len(), 1);
    // An empty list collects everything.
    assert!(
        node.call("GC", None, &json!({"cni.dev/valid-attachments": []}))
            .ok
    );
    assert!(node.host_veths().is_empty());
    assert!(node.allocated().is_empty());
}

#[test]
#[ignore = "needs root: netns"]
fn status_and_pod_cidr_come_from_the_agent_status_file() {
    require_root();
    let node = Node::new("cst", "10.244.6.0/24", 1500);
    let status = node.state.join("agent-status.json");
    let agent = json!({"agentStatusFile": status, "ipam": {"dataDir": node.state.join("ipam")}});
    let pod = Pod::new("spod");
    assert_eq!(
        node.call("STATUS", None, &agent).code(),
        50,
        "no status file"
    );
    assert_eq!(
        node.call("ADD", Some(&pod), &agent).code(),
        11,
        "no pod CIDR yet: retry"
    );
    std::fs::write(
        &status,
        r#"{"ready": false, "message": "datapath not loaded"}"#,
    )
    .unwrap();
    let not_ready = node.call("STATUS", None, &agent);
    assert_eq!(not_ready.code(), 50);
    assert_eq!(not_ready.out["details"], "datapath not loaded");
    std::fs::write(&status, r#"{"ready": false, "datapathReady": false}"#).unwrap();
    assert_eq!(node.call("STATUS", None, &agent).code(), 51);
    std::fs::write(&status, r#"{"ready": true, "podCIDR": "10.244.9.0/24"}"#).unwrap();
    assert!(node.call("STATUS", None, &agent).ok);
    let add = node.call("ADD", Some(&pod), &agent);
    assert_eq!(add.pod_ip(), Ipv4Addr::new(10, 244, 9, 2));
    assert!(node.call("DEL", Some(&pod), &agent).ok);
}

#[test]
#[ignore = "needs root: netns"]
fn chains_with_a_debian_plugin_through_a_conflist() {
    require_root();
    let tuning = Path::new("/usr/lib/cni/tuning");
    assert!(
        tuning.exists(),
        "containernetworking-plugins is missing (cargo xtask setup installs it)"
    );
    let node = Node::new("cch", "10.244.7.0/24", 1500);
    let pod = Pod::new("chpod");
    // What a runtime does with a conflist: run each plugin with the list's name and version
    // injected and the previous result as prevResult; DEL in reverse order.
    let list = json!({
        "cniVersion": "1.0.0", "name": "sktnet",
        "plugins": [
            node.conf,
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}},
        ],
    });
    let bins = [cni_bin(), tuning.to_path_buf()];
    let env = [
        ("CNI_CONTAINERID", pod.id.as_str()),
        ("CNI_NETNS", pod.netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let mut prev: Option<Value> = None;
    for (i, bin) in bins.iter().enumerate() {
        let conf = skiff_cni::types::plugin_config(&list, i, prev.as_ref()).unwrap();
        let mut e = env.to_vec();
        e.push(("CNI_COMMAND", "ADD"));
        let started = Instant::now();
        let out = finish(
            spawn_cni(&node.ns, bin, &e, &serde_json::to_vec(&conf).unwrap()),
            started,
        );
        prev = Some(out.result().clone());
    }
    let last = prev.unwrap();
    assert_eq!(last["cniVersion"], "1.0.0");
    assert_eq!(
        last["ips"][0]["gateway"], "169.254.1.1",
        "our result survives the chain: {last}"
    );
    let sysctl = pod
        .ns
        .command("cat")
        .arg("/proc/sys/net/ipv4/conf/eth0/accept_local")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "1");
    for (i, bin) in bins.iter().enumerate().rev() {
        let conf = skiff_cni::types::plugin_config(&list, i, Some(&last)).unwrap();
        let mut e = env.to_vec();
        e.push(("CNI_COMMAND", "DEL"));
        let started = Instant::now();
        let out = finish(
            spawn_cni(&node.ns, bin, &e, &serde_json::to_vec(&conf).unwrap()),
            started,
        );
        assert!(out.ok, "DEL of plugin {i}: {}", out.out);
    }
    assert!(node.host_veths().is_empty());
    assert!(node.allocated().is_empty());
}

/// podman 4 with its CNI backend, every piece of its state in the node's test directory, run
/// inside the node namespace so that the host side of each container lands there.
struct Podman<'a> {
    node: &'a Node,
    conf: PathBuf,
    storage: PathBuf,
    rootfs: PathBuf,
    /// The containers' cgroup parent, test-owned: podman's default (libpod_parent at the root
    /// of every hierarchy) would outlive the test.
    cgroup_parent: String,
}

impl<'a> Podman<'a> {
    fn new(node: &'a Node) -> Self {
        assert!(
            Path::new("/usr/bin/podman").exists(),
            "podman is missing (cargo xtask setup installs it)"
        );
        let dir = node.state.join("podman");
        let rootfs = dir.join("rootfs");
        for sub in ["cni.d", "storage", "run", "tmp", "rootfs/bin", "rootfs/tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("podman dirs");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("sh");
        let plugin_dir = cni_bin().parent().expect("target dir").to_owned();
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\n\
                 # No CAP_SYS_RESOURCE on these machines: podman's default rlimits fail.\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{}\"\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = \"{}\"\n\
                 tmp_dir = \"{}\"\n\
                 # crun refuses hybrid cgroups here; runc works.\n\
                 runtime = \"runc\"\n",
                plugin_dir.display(),
                dir.join("cni.d").display(),
                dir.join("events.log").display(),
                dir.join("tmp").display(),
            ),
        )
        .expect("containers.conf");
        let storage = dir.join("storage.conf");
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("storage").display(),
                dir.join("run").display()
            ),
        )
        .expect("storage.conf");
        let list = json!({"cniVersion": "1.0.0", "name": "sktnet", "plugins": [node.conf]});
        std::fs::write(dir.join("cni.d/sktnet.conflist"), list.to_string()).expect("conflist");
        Self {
            node,
            conf,
            storage,
            rootfs,
            cgroup_parent: format!("/{}", unique_name("podcg")),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.node.ns.command("podman");
        cmd.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage);
        match args.split_first() {
            Some((&"run", rest)) => cmd
                .args(["run", "--cgroup-parent", &self.cgroup_parent])
                .args(rest),
            _ => cmd.args(args),
        };
        cmd.output().expect("running podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Only this test's private storage is affected: its containers, their netns, their DEL.
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        skiff_kubelet::cleanup::remove_cgroup_trees(&self.cgroup_parent);
    }
}

#[test]
#[ignore = "needs root: netns, podman"]
fn podman_containers_get_their_network_from_skiff_cni() {
    require_root();
    let node = Node::new("cpm", "10.244.8.0/24", 1500);
    let podman = Podman::new(&node);
    let rootfs = podman.rootfs.display().to_string();
    let server = unique_name("pa");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &server,
        "--network",
        "sktnet",
        "--rootfs",
        &rootfs,
        "/bin/sh",
        "-c",
        "echo hello-from-a > /tmp/index.html; exec busybox httpd -f -p 8080 -h /tmp",
    ]);
    let ip = podman.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.sktnet.IPAddress}}",
        &server,
    ]);
    assert_eq!(
        node.allocated(),
        vec![ip.clone()],
        "podman's ADD went through skiff-cni"
    );
    assert_eq!(node.host_veths().len(), 1);
    // A second container reaches the first over TCP and ICMP; httpd may need a moment.
    // (No `wget -T`: busybox 1.35 wget segfaults with it.)
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do busybox wget -q -O - http://{ip}:8080/index.html && break; busybox sleep 0.2; done; \
         busybox ping -c 1 -W 2 {ip} | busybox grep -c 'bytes from'; busybox ip -o -4 addr show eth0"
    );
    let out = podman.ok(&[
        "run",
        "--rm",
        "--network",
        "sktnet",
        "--cap-add",
        "NET_RAW",
        "--rootfs",
        &rootfs,
        "/bin/sh",
        "-c",
        &script,
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hello-from-a"), "{out}");
    assert_eq!(lines.next(), Some("1"), "ping: {out}");
    assert!(lines.next().is_some_and(|l| l.contains("/32")), "{out}");
    assert_eq!(
        node.allocated(),
        vec![ip.clone()],
        "the client's DEL released its address"
    );
    podman.ok(&["rm", "--force", "--time", "0", &server]);
    assert!(
        node.allocated().is_empty(),
        "podman's DEL released the address"
    );
    assert!(
        node.host_veths().is_empty(),
        "podman's DEL removed the veth"
    );
}

#[test]
#[ignore = "needs root: netns, bpf()"]
fn pods_on_one_node_take_the_ebpf_fast_path() {
    require_root();
    let pins = skiff_test_support::BpffsDir::new("cnibpf");
    let bpffs = json!({"bpffs": pins.path()});
    let node = Node::new("cebpf", "10.244.10.0/24", 1500);
    let pods = [Pod::new("fa"), Pod::new("fb")];
    let results: Vec<Value> = pods
        .iter()
        .map(|p| node.call("ADD", Some(p), &bpffs).result().clone())
        .collect();
    let ips: Vec<String> = results
        .iter()
        .map(|r| {
            r["ips"][0]["address"]
                .as_str()
                .unwrap()
                .trim_end_matches("/32")
                .to_owned()
        })
        .collect();
    let endpoints = || {
        let mut ips: Vec<String> = skiff_datapath::EndpointMap::open(pins.path())
            .expect("opening the endpoint map")
            .map(|m| m.list().iter().map(|e| e.ip.to_string()).collect())
            .unwrap_or_default();
        ips.sort();
        ips
    };
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(endpoints(), sorted, "ADD registered both pods");
    for veth in node.host_veths() {
        let out = node
            .ns
            .command("tc")
            .args(["filter", "show", "dev", &veth, "ingress"])
            .output()
            .unwrap();
        let filters = String::from_utf8_lossy(&out.stdout);
        // The kernel keeps 15 bytes of a program's name.
        assert!(filters.contains("skiff_pod_ingre"), "{veth}: {filters}");
    }
    for (pod, r) in pods.iter().zip(&results) {
        let check = node.call(
            "CHECK",
            Some(pod),
            &json!({"bpffs": pins.path(), "prevResult": r}),
        );
        assert!(check.ok, "CHECK with the datapath: {}", check.out);
    }

    // With forwarding off, only the redirect can carry pod-to-pod packets.
    node.ns
        .command("sysctl")
        .args(["-q", "-w", "net.ipv4.ip_forward=0"])
        .status()
        .unwrap();
    let _server = Server::start(&pods[1].ns, "fb", 8080);
    let tcp = pods[0].probe(&["tcp", &format!("{}:8080", ips[1])]);
    assert_eq!(tcp["ok"], true, "tcp through the redirect: {tcp}");
    assert!(
        tcp["reply"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:", ips[0])),
        "no NAT: {tcp}"
    );
    assert!(pods[0].ping(&ips[1], 56), "ping through the redirect");
    assert!(
        pods[1].ping(&ips[0], 1472),
        "full-MTU ping through the redirect"
    );
    // Control: without the program on the sender's veth the same ping fails (no forwarding).
    let veth0 = results[0]["interfaces"][0]["name"].as_str().unwrap();
    assert!(
        node.ns
            .command("tc")
            .args(["filter", "del", "dev", veth0, "ingress"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        !pods[0].ping(&ips[1], 56),
        "without the program, forwarding is off"
    );

    // DEL removes exactly its endpoint; GC removes the endpoint of a lost veth.
    assert!(node.call("DEL", Some(&pods[1]), &bpffs).ok);
    assert_eq!(endpoints(), vec![ips[0].clone()]);
    node.ns.ip(&["link", "del", veth0]);
    std::fs::remove_file(node.state.join("ipam/sktnet").join(&ips[0])).unwrap();
    assert!(
        node.call(
            "GC",
            None,
            &json!({"bpffs": pins.path(), "cni.dev/valid-attachments": []})
        )
        .ok
    );
    assert!(endpoints().is_empty(), "GC removed the stale endpoint");
    assert!(node.call("DEL", Some(&pods[0]), &bpffs).ok);
}

// containerd through the CRI. The image and cleanup helpers mirror tests/kubelet.rs (which
// runs containerd the same way with Debian's bridge); they could move to `common`.

const PAUSE: &str = "registry.local/pause:1";

/// An OCI archive of a busybox-static image whose entrypoint is `entrypoint`.
fn build_pause_image(work: &Path) -> PathBuf {
    skiff_kubelet::image::build_busybox(work, "pause", PAUSE, &["/bin/sleep", "2147483647"])
        .expect("building the pause image")
}

/// Unmounts what containerd left mounted under a directory (sandbox shm, netns files).
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        skiff_kubelet::cleanup::unmount_under(&self.0);
    }
}

/// The sandboxes' cgroup subtree in every hierarchy: processes killed, directories removed.
struct SandboxCgroups(String);

impl SandboxCgroups {
    /// Every process under the subtree, in the `pids` hierarchy.
    fn pids(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![Path::new("/sys/fs/cgroup/pids").join(self.0.trim_start_matches('/'))];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            out.extend(procs.lines().map(str::to_owned));
        }
        out
    }
}

impl Drop for SandboxCgroups {
    fn drop(&mut self) {
        skiff_kubelet::cleanup::remove_cgroup_trees(&self.0);
    }
}

/// containerd's libcni caches results under /var/lib/cni/results (not configurable in 1.6) and
/// drops them on a successful DEL; a failed run would leave them, so they go on drop too.
struct CniCacheOf(Vec<String>);

impl Drop for CniCacheOf {
    fn drop(&mut self) {
        for entry in std::fs::read_dir("/var/lib/cni/results")
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if self
                .0
                .iter()
                .any(|name| text.contains(&format!("\"{name}\"")))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[test]
#[ignore = "needs root: netns, cgroups, containerd"]
fn containerd_sandboxes_get_their_network_from_skiff_cni() {
    use skiff_kubelet::{CriRuntime, Runtime as _, cri};

    require_root();
    let node = Node::new("cctd", "10.244.11.0/24", 1500);
    let work = node.state.join("ctd");
    std::fs::create_dir_all(work.join("cni-conf")).unwrap();
    // Drop order (reverse of declaration): containerd dies, sandboxes' cgroups are emptied,
    // mounts go; the node (and its state directory) last.
    let cgroup = skiff_test_support::Cgroup::new("cctd");
    let _mounts = UnmountUnder(work.clone());
    let sandbox_root = format!("/{}", unique_name("cctdpods"));
    let sandboxes = SandboxCgroups(sandbox_root.clone());
    let pause = build_pause_image(&work);
    // One plugin directory: containerd runs its own `loopback` before the configured list.
    let bin_dir = work.join("cni-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(cni_bin(), bin_dir.join("skiff-cni")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", bin_dir.join("loopback")).unwrap();
    let config = skiff_kubelet::containerd::config(&skiff_kubelet::containerd::ContainerdPaths {
        dir: &work,
        socket: &work.join("containerd.sock"),
        cni_bin_dir: &bin_dir,
        cni_conf_dir: &work.join("cni-conf"),
        sandbox_image: PAUSE,
        registry_hosts: None,
    });
    std::fs::write(work.join("containerd.toml"), config).unwrap();
    let list = json!({"cniVersion": "1.0.0", "name": "sktnet", "plugins": [node.conf]});
    std::fs::write(work.join("cni-conf/10-skiff.conflist"), list.to_string()).unwrap();
    let log = std::fs::File::create(work.join("containerd.log")).unwrap();
    let mut cmd = node.ns.command_in_cgroup(&cgroup, "containerd");
    cmd.arg("--config")
        .arg(work.join("containerd.toml"))
        .stdout(Stdio::null())
        .stderr(log);
    let containerd = skiff_test_support::ChildGuard::spawn(cmd, "containerd");
    let socket = work.join("containerd.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "containerd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    skiff_test_support::run(
        "ctr",
        &[
            "--address",
            &socket.display().to_string(),
            "-n",
            "k8s.io",
            "images",
            "import",
            &pause.display().to_string(),
        ],
    );

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The CRI channel is created lazily inside the runtime's reactor.
    let _enter = tokio.enter();
    let rt = CriRuntime::new(socket.clone());
    let names = [unique_name("sa"), unique_name("sb")];
    let _cache = CniCacheOf(names.to_vec());
    let ids: Vec<String> = names
        .iter()
        .map(|name| {
            let config = cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: name.clone(),
                    uid: name.clone(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                hostname: name.clone(),
                linux: Some(cri::LinuxPodSandboxConfig {
                    cgroup_parent: format!("{sandbox_root}/{name}"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            tokio
                .block_on(rt.run_pod_sandbox(config))
                .unwrap_or_else(|e| {
                    panic!(
                        "RunPodSandbox: {e}\n{}",
                        std::fs::read_to_string(work.join("containerd.log")).unwrap_or_default()
                    )
                })
        })
        .collect();
    let ips: Vec<String> = ids
        .iter()
        .map(|id| {
            let status = tokio.block_on(rt.pod_sandbox_status(id)).unwrap();
            status.network.expect("sandbox network").ip
        })
        .collect();
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(
        node.allocated(),
        sorted,
        "containerd's ADDs went through skiff-cni"
    );
    assert_eq!(node.host_veths().len(), 2);
    // Node to pod (the node needs an address of its own to ping from), and pod to pod from
    // inside each sandbox's namespace (its pause process).
    node.ns.ip(&["addr", "add", "198.18.0.1/32", "dev", "lo"]);
    for ip in &ips {
        let out = node
            .ns
            .command("busybox")
            .args(["ping", "-c", "1", "-W", "2", ip])
            .output()
            .unwrap();
        assert!(out.status.success(), "node -> sandbox {ip}");
    }
    let pids = sandboxes.pids();
    assert!(!pids.is_empty(), "sandbox processes in {sandbox_root}");
    let reached: HashSet<&String> = pids
        .iter()
        .flat_map(|pid| {
            // Only from a namespace other than the machine's own: a pid that went away and was
            // reused must not make this ping a pod address from the root namespace.
            let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let root = std::fs::read_link("/proc/1/ns/net").ok();
            let foreign = own.is_some() && own != root;
            ips.iter().filter(move |ip| {
                foreign
                    && std::process::Command::new("nsenter")
                        .arg(format!("--net=/proc/{pid}/ns/net"))
                        .args(["busybox", "ping", "-c", "1", "-W", "2", ip])
                        .output()
                        .is_ok_and(|o| o.status.success())
            })
        })
        .collect();
    assert_eq!(reached.len(), 2, "sandboxes reach each other: {reached:?}");

    // Stop (DEL with the netns) and remove (DEL again, empty CNI_NETNS) each sandbox.
    for id in &ids {
        tokio.block_on(rt.stop_pod_sandbox(id)).unwrap();
        tokio.block_on(rt.remove_pod_sandbox(id)).unwrap();
    }
    assert!(
        node.allocated().is_empty(),
        "containerd's DELs released the addresses"
    );
    assert!(
        node.host_veths().is_empty(),
        "containerd's DELs removed the veths"
    );
    drop(containerd);
}
