//! skiff-tc: the tc program on the node's interfaces, the per-packet (north-south) load
//! balancer for NodePort, externalIPs and LoadBalancer IPs (see skiff_ebpf::nodeport).
//!
//! # Minimum kernel version
//! 6.6 for TCX attachment (older kernels attach through a clsact qdisc).
#![no_std]
#![no_main]
#![expect(unsafe_code, reason = "the license section must be a no_mangle static")]

use aya_ebpf::{macros::classifier, programs::TcContext};
use skiff_ebpf::nodeport::{ACT_OK, handle, handle_egress};

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[classifier]
pub fn skiff_tc_ingress(ctx: TcContext) -> i32 {
    // Whatever goes wrong in parsing or rewriting, the packet continues through the stack.
    handle(&ctx).unwrap_or(ACT_OK)
}

#[classifier]
pub fn skiff_tc_egress(ctx: TcContext) -> i32 {
    handle_egress(&ctx).unwrap_or(ACT_OK)
}
