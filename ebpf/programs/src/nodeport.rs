//! Per-packet load balancing of north-south traffic (NodePort, externalIPs, LoadBalancer IPs)
//! at tc ingress: DNAT to the backend, SNAT to the node when the backend is elsewhere, and the
//! reverse translation of replies (at ingress for SNATed flows, at egress for flows to this
//! node's own pods), with conntrack so a flow keeps its backend and its NAT port
//! for its whole life whatever happens to the backend set.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup,
    },
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect_neigh},
    programs::TcContext,
};
use skiff_ebpf_common::{
    AFFINITY_IP, ALG_MAGLEV, Affinity4Key, BACKEND_FLAG_LOCAL, CT_FLAG_SNAT,
    CT_LIFETIME_CLOSING_NS, CT_LIFETIME_OTHER_NS, CT_LIFETIME_SYN_NS, CT_LIFETIME_TCP_NS,
    CT_ORIGINAL, CT_REPLY, CT_TCP_FIN, CT_TCP_RST, CT_TCP_SYN, Ct4Entry, Ct4Key, Lb4Key, PROTO_TCP,
    PROTO_UDP, SCOPE_EXTERNAL, STAT_CT_INSERT_FAIL, STAT_NAT_NO_PORT, STAT_TC_IPV4,
    STAT_TC_NO_BACKEND, STAT_TC_PACKETS, STAT_TC_REVNAT, STAT_TC_TRANSLATED, SVC_FLAG_LOCAL_ONLY,
};

use crate::{
    lb,
    maps::{SKIFF_CFG_V1, SKIFF_CT4_V1},
    stats::bump,
};

pub const ACT_OK: i32 = TC_ACT_OK as i32;
const ACT_SHOT: i32 = TC_ACT_SHOT as i32;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_FRAG_OFF: usize = ETH_HLEN + 6;
const IP_TTL: usize = ETH_HLEN + 8;
const IP_PROTO: usize = ETH_HLEN + 9;
const IP_CSUM: usize = ETH_HLEN + 10;
const IP_SADDR: usize = ETH_HLEN + 12;
const IP_DADDR: usize = ETH_HLEN + 16;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const AF_INET: u8 = 2;
/// How many SNAT ports a new flow tries before it is dropped (bounded for the verifier).
const NAT_PORT_TRIES: u32 = 16;

/// A parsed IPv4 TCP/UDP packet. Addresses and ports in network byte order.
struct Packet {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    l4: usize,
    tcp_flags: u8,
}

/// Rewrites a reply of a tracked flow back to the frontend and the client; returns the new
/// (source, source port, destination, destination port), or `None` when the packet is no reply.
#[inline(always)]
fn reverse_nat(
    ctx: &TcContext,
    pkt: &Packet,
    now: u64,
) -> Result<Option<(u32, u16, u32, u16)>, i64> {
    let reply_key = pkt.key(CT_REPLY);
    let Some(entry) = SKIFF_CT4_V1.get_ptr_mut(&reply_key) else {
        return Ok(None);
    };
    // SAFETY: valid pointer from a successful lookup; concurrent updates of these counters
    // by another CPU only lose a count.
    let entry = unsafe { &mut *entry };
    if entry.expires_ns <= now {
        return Ok(None);
    }
    refresh(entry, pkt, now);
    let (src, sport, dst, dport) = (
        entry.frontend_addr,
        entry.frontend_port,
        entry.nat_addr,
        entry.nat_port,
    );
    rewrite_src(ctx, pkt, src, sport)?;
    rewrite_dst(ctx, pkt, dst, dport)?;
    bump(STAT_TC_REVNAT);
    Ok(Some((src, sport, dst, dport)))
}

/// tc egress of the node's interfaces: replies of flows whose backend runs on this node were not
/// SNATed, so they leave through the node's routing towards the client; here they get the
/// frontend's address back (the client talks to NODE:NODEPORT, not to the pod).
pub fn handle_egress(ctx: &TcContext) -> Result<i32, i64> {
    if u16::from_be(ctx.load::<u16>(12)?) != ETH_P_IP {
        return Ok(ACT_OK);
    }
    let Some(pkt) = parse(ctx)? else {
        return Ok(ACT_OK);
    };
    reverse_nat(ctx, &pkt, lb::now_ns())?;
    Ok(ACT_OK)
}

pub fn handle(ctx: &TcContext) -> Result<i32, i64> {
    bump(STAT_TC_PACKETS);
    if u16::from_be(ctx.load::<u16>(12)?) != ETH_P_IP {
        return Ok(ACT_OK);
    }
    bump(STAT_TC_IPV4);
    let Some(pkt) = parse(ctx)? else {
        return Ok(ACT_OK);
    };
    let now = lb::now_ns();

    if let Some((src, sport, dst, dport)) = reverse_nat(ctx, &pkt, now)? {
        return forward(ctx, &pkt, src, dst, sport, dport);
    }

    let key = Lb4Key::service(pkt.daddr, pkt.dport, pkt.proto, SCOPE_EXTERNAL);
    let Some(svc) = lb::lookup_service(&key) else {
        return Ok(ACT_OK);
    };

    let orig_key = pkt.key(CT_ORIGINAL);
    if let Some(entry) = SKIFF_CT4_V1.get_ptr_mut(&orig_key) {
        // SAFETY: as above.
        let entry = unsafe { &mut *entry };
        // A tracked flow keeps its backend while that backend exists at all, also when it is
        // terminating or no longer in the service's slots.
        if entry.expires_ns > now
            && let Some(backend) = lb::backend(entry.backend_id)
        {
            refresh(entry, &pkt, now);
            let (src, sport) = if entry.flags & CT_FLAG_SNAT != 0 {
                rewrite_src(ctx, &pkt, entry.nat_addr, entry.nat_port)?;
                (entry.nat_addr, entry.nat_port)
            } else {
                (pkt.saddr, pkt.sport)
            };
            rewrite_dst(ctx, &pkt, backend.address, backend.port)?;
            bump(STAT_TC_TRANSLATED);
            return forward(ctx, &pkt, src, backend.address, sport, backend.port);
        }
    }

    let client = Affinity4Key {
        client: u64::from(pkt.saddr),
        rev_nat_id: svc.rev_nat_id,
        kind: AFFINITY_IP,
        _pad: [0; 5],
    };
    let hash = if svc.algorithm == ALG_MAGLEV {
        // The client port stays out of the hash under affinity, so all of a client's flows
        // agree on the backend even across nodes.
        let sport = if svc.affinity_timeout != 0 {
            0
        } else {
            pkt.sport
        };
        flow_hash(
            pkt.saddr,
            pkt.daddr,
            (u32::from(sport) << 16) | u32::from(pkt.dport),
            pkt.proto,
        )
    } else {
        lb::random()
    };
    let Some(selected) = lb::select_backend(&key, &svc, &client, hash) else {
        bump(STAT_TC_NO_BACKEND);
        return Ok(ACT_SHOT);
    };
    let backend = selected.backend;

    // SNAT unless the backend runs here, or the service promised to keep the client address
    // (traffic policy Local, whose slots only hold local backends).
    let config = SKIFF_CFG_V1.get(0).copied().unwrap_or_default();
    let snat = backend.flags & BACKEND_FLAG_LOCAL == 0
        && svc.flags & SVC_FLAG_LOCAL_ONLY == 0
        && config.snat_addr != 0;

    let mut entry = Ct4Entry {
        expires_ns: 0,
        packets: 0,
        backend_id: selected.id,
        frontend_addr: pkt.daddr,
        frontend_port: pkt.dport,
        rev_nat_id: svc.rev_nat_id,
        nat_addr: pkt.saddr,
        nat_port: pkt.sport,
        tcp_flags: 0,
        flags: 0,
        _pad: [0; 4],
    };
    refresh(&mut entry, &pkt, now);
    let mut reply = Ct4Key {
        saddr: backend.address,
        daddr: pkt.saddr,
        sport: backend.port,
        dport: pkt.sport,
        proto: pkt.proto,
        dir: CT_REPLY,
        _pad: [0; 2],
    };
    let mut orig = entry;
    if snat {
        reply.daddr = config.snat_addr;
        let Some(port) = claim_nat_port(&mut reply, &entry, &config, hash) else {
            bump(STAT_NAT_NO_PORT);
            return Ok(ACT_SHOT);
        };
        orig.flags = CT_FLAG_SNAT;
        orig.nat_addr = config.snat_addr;
        orig.nat_port = port;
    } else if SKIFF_CT4_V1.insert(&reply, &entry, 0).is_err() {
        bump(STAT_CT_INSERT_FAIL);
        return Ok(ACT_SHOT);
    }
    if SKIFF_CT4_V1.insert(&orig_key, &orig, 0).is_err() {
        let _ = SKIFF_CT4_V1.remove(&reply);
        bump(STAT_CT_INSERT_FAIL);
        return Ok(ACT_SHOT);
    }
    let (src, sport) = if snat {
        rewrite_src(ctx, &pkt, orig.nat_addr, orig.nat_port)?;
        (orig.nat_addr, orig.nat_port)
    } else {
        (pkt.saddr, pkt.sport)
    };
    rewrite_dst(ctx, &pkt, backend.address, backend.port)?;
    bump(STAT_TC_TRANSLATED);
    forward(ctx, &pkt, src, backend.address, sport, backend.port)
}

/// Sends a translated packet straight out of the interface its new destination routes to.
/// Handing it back to the stack would not do: a packet whose source is now this node's own
/// address (SNAT, or a reply from the frontend) arriving from outside is a martian and dropped.
/// Packets for this node itself, or that the FIB cannot route, go to the stack as they are.
#[inline(always)]
fn forward(
    ctx: &TcContext,
    pkt: &Packet,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
) -> Result<i32, i64> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid "no input" request; only plain integer
    // fields and union members are written below.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = pkt.proto;
    params.sport = sport;
    params.dport = dport;
    // SAFETY: the context is the kernel's __sk_buff for this program.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = src;
    params.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: `params` is a properly sized, initialised struct on the stack.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &raw mut params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && rc != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return Ok(ACT_OK);
    }
    // A forwarded packet loses a hop, as routing would take it; the stack answers the last one.
    let ttl_proto = ctx.load::<u16>(IP_TTL)?;
    let ttl = ttl_proto.to_ne_bytes()[0];
    if ttl <= 1 {
        return Ok(ACT_OK);
    }
    let lowered = u16::from_ne_bytes([ttl - 1, ttl_proto.to_ne_bytes()[1]]);
    ctx.l3_csum_replace(IP_CSUM, u64::from(ttl_proto), u64::from(lowered), 2)?;
    ctx.store(IP_TTL, &lowered, 0)?;
    // SAFETY: no neighbour parameters: the kernel resolves the next hop from its FIB.
    let action = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
    Ok(action as i32)
}

impl Packet {
    fn key(&self, dir: u8) -> Ct4Key {
        Ct4Key {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            dir,
            _pad: [0; 2],
        }
    }

    const fn csum_offset(&self) -> usize {
        self.l4
            + if self.proto == PROTO_TCP {
                TCP_CSUM
            } else {
                UDP_CSUM
            }
    }
}

fn parse(ctx: &TcContext) -> Result<Option<Packet>, i64> {
    let version_ihl = ctx.load::<u8>(ETH_HLEN)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Ok(None);
    }
    let proto = ctx.load::<u8>(IP_PROTO)?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(None);
    }
    // Only the first fragment carries ports.
    if u16::from_be(ctx.load::<u16>(IP_FRAG_OFF)?) & 0x1fff != 0 {
        return Ok(None);
    }
    let l4 = ETH_HLEN + ihl;
    let tcp_flags = if proto == PROTO_TCP {
        ctx.load::<u8>(l4 + TCP_FLAGS)?
    } else {
        0
    };
    Ok(Some(Packet {
        saddr: ctx.load(IP_SADDR)?,
        daddr: ctx.load(IP_DADDR)?,
        sport: ctx.load(l4)?,
        dport: ctx.load(l4 + 2)?,
        proto,
        l4,
        tcp_flags,
    }))
}

/// Extends a conntrack entry's life according to what this packet says about the flow.
fn refresh(entry: &mut Ct4Entry, pkt: &Packet, now: u64) {
    entry.packets += 1;
    let lifetime = if pkt.proto == PROTO_TCP {
        if pkt.tcp_flags & TCP_SYN != 0 {
            entry.tcp_flags |= CT_TCP_SYN;
        }
        if pkt.tcp_flags & TCP_FIN != 0 {
            entry.tcp_flags |= CT_TCP_FIN;
        }
        if pkt.tcp_flags & TCP_RST != 0 {
            entry.tcp_flags |= CT_TCP_RST;
        }
        if entry.tcp_flags & (CT_TCP_FIN | CT_TCP_RST) != 0 {
            CT_LIFETIME_CLOSING_NS
        } else if pkt.tcp_flags & TCP_ACK == 0 {
            CT_LIFETIME_SYN_NS
        } else {
            CT_LIFETIME_TCP_NS
        }
    } else {
        CT_LIFETIME_OTHER_NS
    };
    entry.expires_ns = now + lifetime;
}

/// Finds a free SNAT port for a new flow and claims it by inserting the flow's reply entry.
/// Returns the port (network byte order).
fn claim_nat_port(
    reply: &mut Ct4Key,
    entry: &Ct4Entry,
    config: &skiff_ebpf_common::NodeConfig4,
    hash: u32,
) -> Option<u16> {
    let min = u32::from(config.nat_port_min);
    let max = u32::from(config.nat_port_max);
    if min == 0 || max < min {
        return None;
    }
    let range = max - min + 1;
    let start = hash ^ lb::random();
    for i in 0..NAT_PORT_TRIES {
        let port = (min + start.wrapping_add(i).checked_rem(range)?) as u16;
        reply.dport = port.to_be();
        if SKIFF_CT4_V1
            .insert(&*reply, entry, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            return Some(port.to_be());
        }
    }
    None
}

#[inline(always)]
fn rewrite_src(ctx: &TcContext, pkt: &Packet, addr: u32, port: u16) -> Result<(), i64> {
    rewrite(ctx, pkt, IP_SADDR, pkt.saddr, addr, pkt.l4, pkt.sport, port)
}

#[inline(always)]
fn rewrite_dst(ctx: &TcContext, pkt: &Packet, addr: u32, port: u16) -> Result<(), i64> {
    rewrite(
        ctx,
        pkt,
        IP_DADDR,
        pkt.daddr,
        addr,
        pkt.l4 + 2,
        pkt.dport,
        port,
    )
}

/// Replaces an address and a port, keeping the IP and L4 checksums right (a UDP datagram
/// without checksum keeps none).
// BPF calls take at most five arguments: this one must be inlined.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "offsets and old/new values of one rewrite"
)]
fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    ip_off: usize,
    old_ip: u32,
    new_ip: u32,
    port_off: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    let csum = pkt.csum_offset();
    let l4_csum = pkt.proto == PROTO_TCP || ctx.load::<u16>(csum)? != 0;
    let mangled = if pkt.proto == PROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    };
    if old_ip != new_ip {
        if l4_csum {
            ctx.l4_csum_replace(
                csum,
                u64::from(old_ip),
                u64::from(new_ip),
                u64::from(BPF_F_PSEUDO_HDR) | mangled | 4,
            )?;
        }
        ctx.l3_csum_replace(IP_CSUM, u64::from(old_ip), u64::from(new_ip), 4)?;
        ctx.store(ip_off, &new_ip, 0)?;
    }
    if old_port != new_port {
        if l4_csum {
            ctx.l4_csum_replace(csum, u64::from(old_port), u64::from(new_port), mangled | 2)?;
        }
        ctx.store(port_off, &new_port, 0)?;
    }
    Ok(())
}

/// A 32-bit mix of a flow's addresses, ports and protocol (murmur3's finaliser steps).
#[inline(always)]
fn flow_hash(saddr: u32, daddr: u32, ports: u32, proto: u8) -> u32 {
    let mut h = saddr ^ 0x9e37_79b9;
    h = (h ^ daddr).wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = (h ^ ports).wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h = (h ^ u32::from(proto)).wrapping_mul(0x85eb_ca6b);
    h ^ (h >> 13)
}
