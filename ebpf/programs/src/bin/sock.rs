//! skiff-sock: cgroup sock_addr programs, the socket-level (east-west) service load balancer.
//!
//! A connect() to a service address is rewritten to a backend before the socket ever sends a
//! packet, so ClusterIP traffic needs no per-packet NAT and no conntrack entry.
//!
//! # Minimum kernel version
//! 5.18 (`bpf_set_retval` from cgroup sock_addr programs, used to refuse with ECONNREFUSED).
#![no_std]
#![no_main]
#![expect(unsafe_code, reason = "the sock_addr context is a raw kernel pointer")]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{helpers::bpf_set_retval, macros::cgroup_sock_addr, programs::SockAddrContext};
use skiff_ebpf::{lb, stats::bump};
use skiff_ebpf_common::{
    Lb4Key, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL, STAT_SOCK4_NO_BACKEND, STAT_SOCK4_TRANSLATED,
};

/// Let the syscall proceed.
const SYS_PROCEED: i32 = 1;
/// Refuse the syscall (with the errno set by `bpf_set_retval`).
const SYS_REJECT: i32 = 0;
const AF_INET: u32 = 2;
const ECONNREFUSED: i32 = 111;

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cgroup_sock_addr(connect4)]
pub fn skiff_connect4(ctx: SockAddrContext) -> i32 {
    // An internal error must never break the application's connect(): let it through as is.
    try_connect4(&ctx).unwrap_or(SYS_PROCEED)
}

fn try_connect4(ctx: &SockAddrContext) -> Result<i32, i32> {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the kernel-provided context; volatile reads keep LLVM from merging
    // adjacent context loads into wider ones, which the verifier rejects.
    let (family, proto, address, port) = unsafe {
        (
            read_volatile(addr_of!((*sa).user_family)),
            read_volatile(addr_of!((*sa).protocol)),
            read_volatile(addr_of!((*sa).user_ip4)),
            read_volatile(addr_of!((*sa).user_port)),
        )
    };
    if family != AF_INET {
        return Ok(SYS_PROCEED);
    }
    let proto = match proto {
        6 => PROTO_TCP,
        17 => PROTO_UDP,
        _ => return Ok(SYS_PROCEED),
    };
    // user_port carries the network-order port in its low 16 bits.
    let key = Lb4Key::service(address, port as u16, proto, SCOPE_EXTERNAL);
    let Some(svc) = lb::lookup_service(&key) else {
        return Ok(SYS_PROCEED);
    };
    let Some(backend) = lb::select_backend(&key, &svc) else {
        bump(STAT_SOCK4_NO_BACKEND);
        // SAFETY: helper call with a plain integer argument.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return Ok(SYS_REJECT);
    };
    // SAFETY: writable context fields of connect4, written whole (4 bytes each).
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), backend.address);
        write_volatile(addr_of_mut!((*sa).user_port), u32::from(backend.port));
    }
    bump(STAT_SOCK4_TRANSLATED);
    Ok(SYS_PROCEED)
}
