//! skiff-tc: the tc program on the node's interfaces, the per-packet (north-south) datapath.
//!
//! # Minimum kernel version
//! 6.6 for TCX attachment (older kernels attach through a clsact qdisc).
#![no_std]
#![no_main]
#![expect(unsafe_code, reason = "the license section must be a no_mangle static")]

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use skiff_ebpf::stats::bump;
use skiff_ebpf_common::{STAT_TC_IPV4, STAT_TC_PACKETS};

/// `TC_ACT_OK` as the classifier's return type.
const ACT_OK: i32 = TC_ACT_OK as i32;
const ETH_P_IP: u16 = 0x0800;
/// Offset of the EtherType in an Ethernet header.
const ETH_PROTO_OFFSET: usize = 12;

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[classifier]
pub fn skiff_tc_ingress(ctx: TcContext) -> i32 {
    // Whatever goes wrong in parsing, the packet continues through the stack untouched.
    try_tc_ingress(&ctx).unwrap_or(ACT_OK)
}

fn try_tc_ingress(ctx: &TcContext) -> Result<i32, i64> {
    bump(STAT_TC_PACKETS);
    let ether_type = u16::from_be(ctx.load::<u16>(ETH_PROTO_OFFSET)?);
    if ether_type == ETH_P_IP {
        bump(STAT_TC_IPV4);
    }
    Ok(ACT_OK)
}
