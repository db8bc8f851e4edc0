//! kube-proxy-style rulesets: a Rust port of the baseline's `gen.py`
//! (shared/reference/test-peers.md §6), plus a NodePort for one service and the one-endpoint
//! updates the programming benchmark applies.
//!
//! Without a NodePort the output is line for line what `gen.py iptables|nft NSVC NEP` prints.
//! Layout: service i has VIP `10.96.(i/250).(i%250+1):80`; every service has the endpoints
//! `10.244.0.2..` on port 8080. iptables: `KUBE-SERVICES -d VIP -j KUBE-SVC-x`, then
//! `-m statistic --mode random --probability 1/(n-j) -j KUBE-SEP-y`, then `DNAT`; nft: one
//! `ip daddr . meta l4proto . th dport vmap @service-ips` lookup, then `numgen random mod n`.

use std::{fmt::Write as _, net::Ipv4Addr};

use anyhow::ensure;
use sha2::{Digest as _, Sha256};

use super::topology::{BACKEND_PORT, endpoint_ip};

/// Cluster CIDR of the masquerade rules.
const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Service port of every generated service.
pub const SERVICE_PORT: u16 = 80;
/// Most services the VIP formula can address inside 10.96.0.0/12 with valid octets.
pub const MAX_SERVICES: usize = 64_000;

/// VIP of service `i`: `10.96.(i/250).(i%250+1)`.
pub fn vip(i: usize) -> Ipv4Addr {
    assert!(i < MAX_SERVICES, "service {i} has no VIP in 10.96.0.0/12");
    Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// gen.py's `h`: the first 16 hex digits of sha256, upper case.
fn h(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(16);
    for byte in &digest[..8] {
        let _ = write!(out, "{byte:02X}");
    }
    out
}

fn svc_name(i: usize) -> String {
    format!("ns{}/svc{i}:http", i % 10)
}

/// A NodePort on one service: traffic to `node_ip:port` goes to that service's endpoints.
#[derive(Debug, Clone, Copy)]
pub struct NodePort {
    pub service: usize,
    pub node_ip: Ipv4Addr,
    pub port: u16,
}

/// What a ruleset holds.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub services: usize,
    pub endpoints: usize,
    pub node_port: Option<NodePort>,
}

/// The endpoints of a service; `version` B replaces the last one with the spare address, which
/// is how the update benchmark changes one endpoint.
pub fn endpoints(count: usize, version: Version) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|j| match version {
            Version::B if j + 1 == count => endpoint_ip(count as u8),
            _ => endpoint_ip(j as u8),
        })
        .collect()
}

/// The two endpoint sets updates alternate between (A is what the full ruleset has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    A,
    B,
}

impl Version {
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

fn ensure_spec(spec: &Spec) -> anyhow::Result<()> {
    ensure!(
        spec.services <= MAX_SERVICES,
        "at most {MAX_SERVICES} services"
    );
    ensure!(
        (1..usize::from(super::topology::ENDPOINT_ADDRS)).contains(&spec.endpoints),
        "1 to {} endpoints per service",
        super::topology::ENDPOINT_ADDRS - 1
    );
    if let Some(np) = spec.node_port {
        ensure!(np.service < spec.services, "NodePort of a missing service");
    }
    Ok(())
}

/// The `-A KUBE-SVC-x` rules of service `i` with endpoints `eps`, and each endpoint's SEP chain
/// name with its two rules.
fn svc_rules(i: usize, eps: &[Ipv4Addr]) -> (Vec<String>, Vec<(String, [String; 2])>) {
    let svc = svc_name(i);
    let sc = format!("KUBE-SVC-{}", h(&svc));
    let vip = vip(i);
    let n = eps.len();
    let mut rules = vec![format!(
        "-A {sc} ! -s {CLUSTER_CIDR} -d {vip}/32 -p tcp -m comment --comment \"{svc} cluster IP\" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ"
    )];
    let mut seps = Vec::with_capacity(n);
    for (j, ep) in eps.iter().enumerate() {
        let sep = format!("KUBE-SEP-{}", h(&format!("{svc}{ep}")));
        let stat = if j < n - 1 {
            format!(
                "-m statistic --mode random --probability {:.11} ",
                1.0 / (n - j) as f64
            )
        } else {
            String::new()
        };
        rules.push(format!(
            "-A {sc} -m comment --comment \"{svc} -> {ep}:{BACKEND_PORT}\" {stat}-j {sep}"
        ));
        let sep_rules = [
            format!("-A {sep} -s {ep}/32 -m comment --comment \"{svc}\" -j KUBE-MARK-MASQ"),
            format!(
                "-A {sep} -p tcp -m comment --comment \"{svc}\" -m tcp -j DNAT --to-destination {ep}:{BACKEND_PORT}"
            ),
        ];
        seps.push((sep, sep_rules));
    }
    (rules, seps)
}

/// An `iptables-restore` file (nat table) for `spec`.
pub fn iptables(spec: &Spec) -> anyhow::Result<String> {
    ensure_spec(spec)?;
    let mut out: Vec<String> = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        ":KUBE-NODEPORTS - [0:0]",
    ]
    .map(String::from)
    .to_vec();
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    let eps = endpoints(spec.endpoints, Version::A);
    for i in 0..spec.services {
        let svc = svc_name(i);
        let sc = format!("KUBE-SVC-{}", h(&svc));
        chains.push(format!(":{sc} - [0:0]"));
        rules.push(format!(
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{svc} cluster IP\" -m tcp --dport {SERVICE_PORT} -j {sc}",
            vip(i)
        ));
        let (svc_rules, seps) = svc_rules(i, &eps);
        let mut svc_rules = svc_rules.into_iter();
        rules.extend(svc_rules.next());
        for ((sep, sep_rules), svc_rule) in seps.into_iter().zip(svc_rules) {
            chains.push(format!(":{sep} - [0:0]"));
            rules.push(svc_rule);
            rules.extend(sep_rules);
        }
    }
    if let Some(np) = spec.node_port {
        let svc = svc_name(np.service);
        let suffix = h(&svc);
        chains.push(format!(":KUBE-EXT-{suffix} - [0:0]"));
        rules.push(format!(
            "-A KUBE-NODEPORTS -p tcp -m comment --comment \"{svc}\" -m tcp --dport {} -j KUBE-EXT-{suffix}",
            np.port
        ));
        rules.push(format!(
            "-A KUBE-EXT-{suffix} -m comment --comment \"masquerade traffic for {svc} external destinations\" -j KUBE-MARK-MASQ"
        ));
        rules.push(format!("-A KUBE-EXT-{suffix} -j KUBE-SVC-{suffix}"));
    }
    out.extend(chains);
    out.extend(
        [
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        ]
        .map(String::from),
    );
    out.extend(rules);
    out.push("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS".to_owned());
    out.push("COMMIT".to_owned());
    Ok(join_lines(&out))
}

/// An `iptables-restore --noflush` file that gives service `i` the endpoint set `to` (it has
/// `from`): kube-proxy's way, the service chain redeclared (which flushes it) and rewritten,
/// the new endpoint's chain created, the old one flushed and deleted.
pub fn iptables_update(
    i: usize,
    endpoints_per_service: usize,
    from: Version,
    to: Version,
) -> String {
    let svc = svc_name(i);
    let sc = format!("KUBE-SVC-{}", h(&svc));
    let old = endpoints(endpoints_per_service, from);
    let new = endpoints(endpoints_per_service, to);
    let (rules, seps) = svc_rules(i, &new);
    let sep_of = |ep: &Ipv4Addr| format!("KUBE-SEP-{}", h(&format!("{svc}{ep}")));
    let added: Vec<&Ipv4Addr> = new.iter().filter(|ep| !old.contains(ep)).collect();
    let removed: Vec<&Ipv4Addr> = old.iter().filter(|ep| !new.contains(ep)).collect();
    let mut out = vec!["*nat".to_owned(), format!(":{sc} - [0:0]")];
    out.extend(added.iter().map(|ep| format!(":{} - [0:0]", sep_of(ep))));
    out.extend(removed.iter().map(|ep| format!(":{} - [0:0]", sep_of(ep))));
    out.extend(rules);
    for (sep, sep_rules) in seps {
        if added.iter().any(|ep| sep_of(ep) == sep) {
            out.extend(sep_rules);
        }
    }
    out.extend(removed.iter().map(|ep| format!("-X {}", sep_of(ep))));
    out.push("COMMIT".to_owned());
    join_lines(&out)
}

fn nft_ep_chain(i: usize, j: usize, version: Version, last: bool) -> String {
    // The spare endpoint gets a chain name of its own, as kube-proxy names endpoint chains by
    // address, so an update creates one chain and deletes another.
    if last && version == Version::B {
        format!("svc-{i}-ep{j}b")
    } else {
        format!("svc-{i}-ep{j}")
    }
}

fn nft_svc_rules(i: usize, eps: &[Ipv4Addr], version: Version) -> [String; 2] {
    let vm = (0..eps.len())
        .map(|j| {
            format!(
                "{j} : goto {}",
                nft_ep_chain(i, j, version, j + 1 == eps.len())
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    [
        format!(
            "ip daddr {} ip saddr != {CLUSTER_CIDR} jump mark-for-masq",
            vip(i)
        ),
        format!("numgen random mod {} vmap {{ {vm} }}", eps.len()),
    ]
}

fn nft_ep_rules(ep: Ipv4Addr) -> [String; 2] {
    [
        format!("ip saddr {ep} jump mark-for-masq"),
        format!("meta l4proto tcp dnat to {ep}:{BACKEND_PORT}"),
    ]
}

/// An `nft -f` file (table `ip kubeproxy`, kube-proxy's nftables mode in shape) for `spec`.
pub fn nft(spec: &Spec) -> anyhow::Result<String> {
    ensure_spec(spec)?;
    let mut out = vec![
        "table ip kubeproxy {".to_owned(),
        "  chain mark-for-masq { meta mark set meta mark | 0x4000; }".to_owned(),
        "  chain nat-output { type nat hook output priority -100; jump services; }".to_owned(),
        "  chain nat-prerouting { type nat hook prerouting priority -100; jump services; }"
            .to_owned(),
        "  chain nat-postrouting { type nat hook postrouting priority 100; meta mark & 0x4000 == 0 return; meta mark set meta mark ^ 0x4000; masquerade fully-random; }".to_owned(),
    ];
    let eps = endpoints(spec.endpoints, Version::A);
    let mut elems = Vec::with_capacity(spec.services);
    for i in 0..spec.services {
        let s = format!("svc-{i}");
        elems.push(format!("{} . tcp . {SERVICE_PORT} : goto {s}", vip(i)));
        let [masq, vmap] = nft_svc_rules(i, &eps, Version::A);
        out.push(format!("  chain {s} {{ {masq}; {vmap}; }}"));
        for (j, ep) in eps.iter().enumerate() {
            let [a, b] = nft_ep_rules(*ep);
            out.push(format!(
                "  chain {} {{ {a}; {b}; }}",
                nft_ep_chain(i, j, Version::A, j + 1 == eps.len())
            ));
        }
    }
    let mut services_chain = "ip daddr . meta l4proto . th dport vmap @service-ips;".to_owned();
    if let Some(np) = spec.node_port {
        let s = np.service;
        out.push(format!(
            "  chain external-svc-{s} {{ jump mark-for-masq; goto svc-{s}; }}"
        ));
        out.push(format!(
            "  set nodeport-ips {{ type ipv4_addr; elements = {{ {} }} }}",
            np.node_ip
        ));
        out.push(format!(
            "  map service-nodeports {{ type inet_proto . inet_service : verdict; elements = {{ tcp . {} : goto external-svc-{s} }} }}",
            np.port
        ));
        services_chain
            .push_str(" ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports;");
    }
    out.push(format!(
        "  map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ {} }} }}",
        elems.join(", ")
    ));
    out.push(format!("  chain services {{ {services_chain} }}"));
    out.push("}".to_owned());
    Ok(join_lines(&out))
}

/// One `nft -f` transaction that gives service `i` the endpoint set `to` (it has `from`): the
/// new endpoint's chain added, the service chain flushed and rewritten, the old chain deleted.
pub fn nft_update(i: usize, endpoints_per_service: usize, from: Version, to: Version) -> String {
    let n = endpoints_per_service;
    let last = n - 1;
    let new_ep = endpoints(n, to)[last];
    let new_chain = nft_ep_chain(i, last, to, true);
    let old_chain = nft_ep_chain(i, last, from, true);
    let [a, b] = nft_ep_rules(new_ep);
    let [masq, vmap] = nft_svc_rules(i, &endpoints(n, to), to);
    join_lines(&[
        format!("add chain ip kubeproxy {new_chain}"),
        format!("add rule ip kubeproxy {new_chain} {a}"),
        format!("add rule ip kubeproxy {new_chain} {b}"),
        format!("flush chain ip kubeproxy svc-{i}"),
        format!("add rule ip kubeproxy svc-{i} {masq}"),
        format!("add rule ip kubeproxy svc-{i} {vmap}"),
        format!("delete chain ip kubeproxy {old_chain}"),
    ])
}

fn join_lines(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(services: usize, node_port: bool) -> Spec {
        Spec {
            services,
            endpoints: 10,
            node_port: node_port.then_some(NodePort {
                service: services - 1,
                node_ip: Ipv4Addr::new(198, 18, 0, 1),
                port: 30080,
            }),
        }
    }

    fn count(text: &str, prefix: &str) -> usize {
        text.lines().filter(|l| l.starts_with(prefix)).count()
    }

    #[test]
    fn vips_follow_gen_py_and_stay_unique() {
        assert_eq!(vip(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(vip(999), Ipv4Addr::new(10, 96, 3, 250));
        assert_eq!(vip(9999), Ipv4Addr::new(10, 96, 39, 250));
        let all: std::collections::BTreeSet<_> = (0..20_000).map(vip).collect();
        assert_eq!(all.len(), 20_000);
    }

    #[test]
    fn iptables_1x10_has_gen_py_line_counts() {
        let text = iptables(&spec(1, false)).unwrap();
        // *nat, 8 chain declarations of gen.py's header, 11 chains of the service, 7 fixed
        // rules, 32 service rules, the NODEPORTS rule, COMMIT.
        assert_eq!(text.lines().count(), 61);
        assert_eq!(count(&text, "-A "), 40);
        assert_eq!(count(&text, ":"), 19);
        assert_eq!(count(&text, "-A KUBE-SERVICES "), 2);
        assert_eq!(count(&text, "-A KUBE-SEP-"), 20);
        assert_eq!(count(&text, "-A KUBE-SVC-"), 11);
        assert!(text.contains("--probability 0.10000000000 "));
        assert!(text.contains("--probability 0.50000000000 "));
        assert!(text.ends_with("COMMIT\n"));
        // gen.py's exact first service rule.
        assert!(text.contains(
            "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"ns0/svc0:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"
        ));
    }

    #[test]
    fn iptables_1000x10_matches_the_baseline_counts() {
        let text = iptables(&spec(1000, false)).unwrap();
        assert_eq!(count(&text, "-A "), 32_008);
        assert_eq!(count(&text, ":"), 11_008);
    }

    #[test]
    fn iptables_node_port_adds_one_chain_and_three_rules() {
        let text = iptables(&spec(1, true)).unwrap();
        assert_eq!(count(&text, "-A "), 43);
        assert_eq!(count(&text, ":KUBE-EXT-"), 1);
        assert_eq!(count(&text, "-A KUBE-NODEPORTS -p tcp "), 1);
        // The NODEPORTS jump stays the last rule of KUBE-SERVICES (the worst case).
        let last_services_rule = text
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES "))
            .unwrap();
        assert!(last_services_rule.ends_with("-j KUBE-NODEPORTS"));
    }

    #[test]
    fn nft_1x10_has_gen_py_line_counts() {
        let text = nft(&spec(1, false)).unwrap();
        assert_eq!(text.lines().count(), 19);
        assert_eq!(count(&text, "  chain svc-0"), 11);
        assert!(text.contains("numgen random mod 10 vmap { 0 : goto svc-0-ep0,"));
        assert!(text.contains("elements = { 10.96.0.1 . tcp . 80 : goto svc-0 }"));
        assert_eq!(nft(&spec(1000, false)).unwrap().lines().count(), 11_008);
        let with_np = nft(&spec(1, true)).unwrap();
        assert_eq!(with_np.lines().count(), 22);
        assert!(with_np.contains("vmap @service-nodeports;"));
    }

    #[test]
    fn updates_swap_one_endpoint_chain() {
        let up = iptables_update(5, 10, Version::A, Version::B);
        assert_eq!(count(&up, ":KUBE-SVC-"), 1);
        assert_eq!(
            count(&up, ":KUBE-SEP-"),
            2,
            "one created, one flushed for -X"
        );
        assert_eq!(count(&up, "-A KUBE-SVC-"), 11);
        assert_eq!(count(&up, "-A KUBE-SEP-"), 2);
        assert_eq!(count(&up, "-X KUBE-SEP-"), 1);
        assert!(up.contains("--to-destination 10.244.0.12:8080"));
        let back = iptables_update(5, 10, Version::B, Version::A);
        assert!(back.contains("--to-destination 10.244.0.11:8080"));

        let up = nft_update(5, 10, Version::A, Version::B);
        assert!(up.starts_with("add chain ip kubeproxy svc-5-ep9b\n"));
        assert!(up.contains("dnat to 10.244.0.12:8080"));
        assert!(up.contains("9 : goto svc-5-ep9b }"));
        assert!(up.ends_with("delete chain ip kubeproxy svc-5-ep9\n"));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec(1, false);
        s.endpoints = 11;
        assert!(iptables(&s).is_err());
        s.endpoints = 10;
        s.services = MAX_SERVICES + 1;
        assert!(nft(&s).is_err());
    }
}
