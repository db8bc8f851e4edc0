//! Packet-level tests of the tc program through BPF_PROG_TEST_RUN: each fixture feeds one
//! frame to the program, with maps seeded in setup, and checks the frame it gives back and
//! its verdict (as Katran's and Cilium's BPF unit tests do). Run inside a test namespace whose
//! routes make the program's FIB lookups succeed; nothing is sent anywhere.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use skiff_datapath::{
    Backend, Datapath, Frontend, LbTable, PinnedLbMaps, Protocol, Service, ServiceKind,
};
use skiff_test_support::{
    BpffsDir, NetNs,
    packet::{self, ACK, Parsed, SYN},
    require_root, veth_pair,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// Checks of the frame a fixture's program gave back.
type Check = Box<dyn Fn(&Parsed)>;

struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// `None`: the frame must come back byte for byte.
    expect: Option<Check>,
}

/// A node namespace with a link towards backends (198.18.0.0/24) and one towards clients
/// (198.19.0.0/24), forwarding on, the datapath loaded and these services programmed:
/// NodePort 198.19.0.1:30080/TCP and /UDP -> 198.18.0.2:8080 (remote: SNAT),
/// NodePort 198.19.0.1:30081/TCP -> 198.18.0.3:8080 (traffic policy Local: no SNAT),
/// NodePort 198.19.0.1:30082/TCP without backends.
fn setup(node: &NetNs, peer: &NetNs, pins: &BpffsDir) -> Datapath {
    veth_pair(node, "198.18.0.1/24", peer, "198.18.0.2/24");
    veth_pair(node, "198.19.0.1/24", peer, "198.19.0.2/24");
    common::sysctl(node, "net.ipv4.ip_forward=1");
    let config = skiff_datapath::DatapathConfig {
        bpffs: pins.path().to_owned(),
        snat_ipv4: Some(Ipv4Addr::new(198, 19, 0, 1)),
        ..Default::default()
    };
    let datapath = Datapath::load(config).expect("load");
    let mut table = LbTable::open(PinnedLbMaps::open(pins.path()).unwrap()).unwrap();
    let nodeport = |port: u16, proto, backends: Vec<Backend>, local: bool| {
        let mut s = Service::new(
            Frontend::new(Ipv4Addr::new(198, 19, 0, 1), port, proto),
            backends,
        );
        s.kind = ServiceKind::NodePort;
        s.local_only = local;
        s
    };
    let remote = Backend::active(addr("198.18.0.2:8080"));
    let local = Backend {
        local: true,
        ..Backend::active(addr("198.18.0.3:8080"))
    };
    for s in [
        nodeport(30080, Protocol::Tcp, vec![remote], false),
        nodeport(30080, Protocol::Udp, vec![remote], false),
        nodeport(30081, Protocol::Tcp, vec![local], true),
        nodeport(30082, Protocol::Tcp, vec![], false),
    ] {
        table.upsert(&s).unwrap();
    }
    datapath
}

fn checks_ok(p: &Parsed) {
    assert!(p.ip_checksum_ok, "IP checksum: {p:?}");
    assert_ne!(p.l4_checksum_ok, Some(false), "L4 checksum: {p:?}");
}

#[test]
#[ignore = "needs root: bpf(), netns"]
fn tc_program_packet_fixtures() {
    require_root();
    let node = NetNs::new("pkt");
    let peer = NetNs::new("pkp");
    let pins = BpffsDir::new("pkt");
    node.run(|| {
        let mut dp = setup(&node, &peer, &pins);
        let client = addr("198.19.0.2:40000");
        let nodeport = addr("198.19.0.1:30080");

        // The SYN creates the flow; its SNAT port is needed to build the reply fixture.
        let out = dp.test_run_tc(&packet::tcp(client, nodeport, SYN)).unwrap();
        assert_eq!(
            out.verdict, TC_ACT_REDIRECT,
            "the SYN is translated and redirected"
        );
        let syn = packet::parse(&out.packet).unwrap();
        let nat = syn.src;

        let fixtures = vec![
            Fixture {
                description: "a SYN to a NodePort goes to the backend, SNATed to the node",
                input: packet::tcp(client, nodeport, SYN),
                verdict: TC_ACT_REDIRECT,
                expect: Some(Box::new(move |p| {
                    assert_eq!(p.dst, addr("198.18.0.2:8080"));
                    assert_eq!(*p.src.ip(), Ipv4Addr::new(198, 19, 0, 1));
                    assert!((61_000..=65_535).contains(&p.src.port()), "{p:?}");
                    assert_eq!(p.src, nat, "a retransmission keeps its conntrack entry");
                    assert_eq!(p.ttl, 63, "forwarding costs a hop");
                    checks_ok(p);
                })),
            },
            Fixture {
                description: "the backend's reply goes back to the client from the NodePort",
                input: packet::tcp(addr("198.18.0.2:8080"), nat, SYN | ACK),
                verdict: TC_ACT_REDIRECT,
                expect: Some(Box::new(move |p| {
                    assert_eq!(p.src, nodeport);
                    assert_eq!(p.dst, client);
                    checks_ok(p);
                })),
            },
            Fixture {
                description: "traffic policy Local: DNAT only, the client address stays",
                input: packet::tcp(client, addr("198.19.0.1:30081"), SYN),
                verdict: TC_ACT_REDIRECT,
                expect: Some(Box::new(move |p| {
                    assert_eq!(p.dst, addr("198.18.0.3:8080"));
                    assert_eq!(p.src, client);
                    checks_ok(p);
                })),
            },
            Fixture {
                description: "UDP with a checksum is translated with a valid one",
                input: packet::udp(addr("198.19.0.2:5000"), nodeport, b"query", true),
                verdict: TC_ACT_REDIRECT,
                expect: Some(Box::new(|p| {
                    assert_eq!(p.dst, addr("198.18.0.2:8080"));
                    assert_eq!(p.l4_checksum_ok, Some(true));
                    checks_ok(p);
                })),
            },
            Fixture {
                description: "UDP without a checksum stays without one",
                input: packet::udp(addr("198.19.0.2:5001"), nodeport, b"query", false),
                verdict: TC_ACT_REDIRECT,
                expect: Some(Box::new(|p| {
                    assert_eq!(p.dst, addr("198.18.0.2:8080"));
                    assert_eq!(p.l4_checksum_ok, None);
                    assert!(p.ip_checksum_ok);
                })),
            },
            Fixture {
                description: "a frontend without backends drops new flows",
                input: packet::tcp(client, addr("198.19.0.1:30082"), SYN),
                verdict: TC_ACT_SHOT,
                expect: None,
            },
            Fixture {
                description: "a port that is no service passes untouched",
                input: packet::tcp(client, addr("198.19.0.1:22"), SYN),
                verdict: TC_ACT_OK,
                expect: None,
            },
            Fixture {
                description: "a later fragment (no ports) passes untouched",
                input: {
                    let mut f = packet::udp(addr("198.19.0.2:5002"), nodeport, b"frag", true);
                    packet::make_later_fragment(&mut f);
                    f
                },
                verdict: TC_ACT_OK,
                expect: None,
            },
            Fixture {
                description: "a frame cut inside its TCP header passes untouched",
                input: packet::tcp(client, nodeport, SYN)[..40].to_vec(),
                verdict: TC_ACT_OK,
                expect: None,
            },
        ];
        for f in fixtures {
            let out = dp
                .test_run_tc(&f.input)
                .unwrap_or_else(|e| panic!("{}: {e}", f.description));
            assert_eq!(out.verdict, f.verdict, "{}: verdict", f.description);
            match &f.expect {
                None => assert_eq!(out.packet, f.input, "{}: frame changed", f.description),
                Some(check) => {
                    let parsed = packet::parse(&out.packet)
                        .unwrap_or_else(|| panic!("{}: unreadable output", f.description));
                    check(&parsed);
                }
            }
        }
    });
}

/// Maglev's point: every node picks the same backend for a flow without sharing state. Two
/// datapaths with the same service must agree on every flow; random selection would not
/// (20 flows over 3 backends agree by chance with probability 3^-20).
#[test]
#[ignore = "needs root: bpf(), netns"]
fn maglev_picks_the_same_backend_for_a_flow_on_every_node() {
    require_root();
    let node = NetNs::new("pmg");
    let peer = NetNs::new("pmp");
    let (pins_a, pins_b) = (BpffsDir::new("pma"), BpffsDir::new("pmb"));
    node.run(|| {
        veth_pair(&node, "198.18.0.1/24", &peer, "198.18.0.2/24");
        veth_pair(&node, "198.19.0.1/24", &peer, "198.19.0.2/24");
        common::sysctl(&node, "net.ipv4.ip_forward=1");
        let frontend = addr("198.19.0.1:30090");
        let mut service = Service::new(
            Frontend::new(*frontend.ip(), frontend.port(), Protocol::Tcp),
            ["198.18.0.2:8080", "198.18.0.4:8080", "198.18.0.5:8080"]
                .iter()
                .map(|b| Backend::active(addr(b)))
                .collect(),
        );
        service.kind = ServiceKind::NodePort;
        service.algorithm = skiff_datapath::Algorithm::Maglev;
        let mut nodes: Vec<Datapath> = [&pins_a, &pins_b]
            .iter()
            .map(|pins| {
                let dp = Datapath::load(skiff_datapath::DatapathConfig {
                    bpffs: pins.path().to_owned(),
                    snat_ipv4: Some(Ipv4Addr::new(198, 19, 0, 1)),
                    ..Default::default()
                })
                .expect("load");
                let mut table = LbTable::open(PinnedLbMaps::open(pins.path()).unwrap()).unwrap();
                table.upsert(&service).unwrap();
                dp
            })
            .collect();
        let mut picked = std::collections::BTreeSet::new();
        for port in 40_000..40_020 {
            let syn = packet::tcp(addr(&format!("198.19.0.2:{port}")), frontend, SYN);
            let pick = |dp: &mut Datapath| {
                let out = dp.test_run_tc(&syn).unwrap();
                assert_eq!(out.verdict, TC_ACT_REDIRECT);
                packet::parse(&out.packet).unwrap().dst
            };
            let (a, b) = (pick(&mut nodes[0]), pick(&mut nodes[1]));
            assert_eq!(a, b, "flow from port {port}: the two nodes disagree");
            picked.insert(a);
        }
        assert!(picked.len() >= 2, "20 flows all on one backend: {picked:?}");
    });
}
