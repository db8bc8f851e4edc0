//! skiff-pod: the tc program on the host side of every pod's veth (attached by skiff-cni).
//! A packet to another pod of this node skips the node's routing and goes straight into that
//! pod's namespace (`bpf_redirect_peer`), with the Ethernet header the pod expects and one hop
//! taken off, as routing would. Everything else (other nodes, the node itself, services the
//! socket LB did not translate) is left to the kernel.
//!
//! Hook points: a service load balancer for pods without the socket LB, and network policy,
//! belong between the parse and the endpoint lookup (both see the parsed addresses first).
//!
//! This object deliberately does not link the `skiff_ebpf` library: the library's maps would
//! come with it, and skiff-cni (which loads this object) would create them with default sizes
//! before the agent can create them with its configured ones. Its only map is the endpoint map.
//!
//! # Minimum kernel version
//! 5.10 for `bpf_redirect_peer`.
#![no_std]
#![no_main]
#![expect(
    unsafe_code,
    reason = "the license section must be a no_mangle static; map lookups and helpers are unsafe"
)]

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::bpf_redirect_peer,
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};
use skiff_ebpf_common::{DEFAULT_ENDPOINTS_MAX, Endpoint4};

const ACT_OK: i32 = TC_ACT_OK as i32;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_TTL: usize = ETH_HLEN + 8;
const IP_CSUM: usize = ETH_HLEN + 10;
const IP_DADDR: usize = ETH_HLEN + 16;

/// See `skiff_ebpf_common::MAP_ENDPOINTS4`.
#[map]
static SKIFF_EP4_V1: HashMap<u32, Endpoint4> = HashMap::pinned(DEFAULT_ENDPOINTS_MAX, 0);

fn handle(ctx: &TcContext) -> Result<i32, i64> {
    if u16::from_be(ctx.load::<u16>(12)?) != ETH_P_IP {
        return Ok(ACT_OK);
    }
    let daddr = ctx.load::<u32>(IP_DADDR)?;
    // SAFETY: the value is copied out at once; a concurrent DEL can at worst make this packet
    // go to a veth that is being deleted, where it is dropped like any packet to a dying pod.
    let Some(ep) = (unsafe { SKIFF_EP4_V1.get(&daddr) }).copied() else {
        return Ok(ACT_OK);
    };
    let ttl_proto = ctx.load::<u16>(IP_TTL)?;
    let ttl = ttl_proto.to_ne_bytes()[0];
    if ttl <= 1 {
        // The stack sends the ICMP time-exceeded.
        return Ok(ACT_OK);
    }
    let lowered = u16::from_ne_bytes([ttl - 1, ttl_proto.to_ne_bytes()[1]]);
    ctx.l3_csum_replace(IP_CSUM, u64::from(ttl_proto), u64::from(lowered), 2)?;
    ctx.store(IP_TTL, &lowered, 0)?;
    ctx.store(0, &ep.pod_mac, 0)?;
    ctx.store(6, &ep.host_mac, 0)?;
    // SAFETY: a plain helper call; an ifindex that no longer exists makes it return TC_ACT_SHOT.
    let action = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    Ok(action as i32)
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[classifier]
pub fn skiff_pod_ingress(ctx: TcContext) -> i32 {
    // Whatever goes wrong, the packet continues through the kernel's routing.
    handle(&ctx).unwrap_or(ACT_OK)
}

/// The verifier rejects any program that can reach a panic, so this is never linked into a
/// loadable program; it exists because `no_std` binaries must name one.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
