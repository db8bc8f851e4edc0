//! skiff-sock: cgroup sock_addr programs, the socket-level (east-west) service load balancer.
//!
//! connect() and sendmsg() to a service address are rewritten to a backend before the socket
//! sends anything, so ClusterIP traffic needs no per-packet NAT and no conntrack entry.
//! getpeername() and recvmsg() are rewritten back, so applications see the service address.
//! When a socket is released its reverse entry goes, so the LRU map holds live sockets only and
//! a connect() never pays for evicting a dead one.
//!
//! # Minimum kernel version
//! 5.18 (`bpf_set_retval` from cgroup sock_addr programs, used to refuse with ECONNREFUSED;
//! getpeername4 needs 5.8).
#![no_std]
#![no_main]
#![expect(unsafe_code, reason = "the sock_addr context is a raw kernel pointer")]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use skiff_ebpf::{lb, maps::SKIFF_SKRV4_V1, stats::bump};
use skiff_ebpf_common::{
    AFFINITY_NETNS, Affinity4Key, Lb4Key, PROTO_TCP, PROTO_UDP, SCOPE_EXTERNAL,
    STAT_SOCK4_NO_BACKEND, STAT_SOCK4_REVNAT, STAT_SOCK4_TRANSLATED, SockRevNat4, SockRevNat4Key,
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
    verdict(translate4(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn skiff_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict(translate4(&ctx))
}

/// The program's return value as a constant the verifier can see is 0 or 1. An internal error
/// never breaks the application's syscall: it goes through untranslated.
#[inline(always)]
fn verdict(result: Result<i32, i32>) -> i32 {
    match result {
        Ok(SYS_REJECT) => SYS_REJECT,
        _ => SYS_PROCEED,
    }
}

#[cgroup_sock_addr(recvmsg4)]
pub fn skiff_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse4(&ctx);
    // recvmsg programs must return 1.
    SYS_PROCEED
}

#[cgroup_sock_addr(getpeername4)]
pub fn skiff_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse4(&ctx);
    SYS_PROCEED
}

#[cgroup_sock(sock_release)]
pub fn skiff_sock_release4(ctx: SockContext) -> i32 {
    release4(&ctx);
    SYS_PROCEED
}

/// Forgets the reverse translation of a connected socket that is going away. Unconnected UDP
/// sockets (no destination here; their entries name every backend they sent to) are left to
/// the LRU.
fn release4(ctx: &SockContext) {
    let sk = ctx.sock;
    // SAFETY: the kernel-provided socket context; each field read whole, as the verifier wants.
    let (family, address, port) = unsafe {
        (
            read_volatile(addr_of!((*sk).family)),
            read_volatile(addr_of!((*sk).dst_ip4)),
            read_volatile(addr_of!((*sk).dst_port)),
        )
    };
    if family != AF_INET || address == 0 {
        return;
    }
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNat4Key::new(cookie, address, port);
    // Most sockets never talked to a service: a missing key is the common case.
    let _ = SKIFF_SKRV4_V1.remove(&key);
}

/// The address family, protocol, address and port of the syscall (address and port in
/// network byte order).
#[inline(always)]
fn read(ctx: &SockAddrContext) -> (u32, u32, u32, u16) {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the kernel-provided context; volatile reads keep LLVM from merging
    // adjacent context loads into wider ones, which the verifier rejects. user_port carries
    // the network-order port in its low 16 bits.
    unsafe {
        (
            read_volatile(addr_of!((*sa).user_family)),
            read_volatile(addr_of!((*sa).protocol)),
            read_volatile(addr_of!((*sa).user_ip4)),
            read_volatile(addr_of!((*sa).user_port)) as u16,
        )
    }
}

#[inline(always)]
fn write(ctx: &SockAddrContext, address: u32, port: u16) {
    let sa = ctx.sock_addr;
    // SAFETY: writable context fields of these hooks, written whole (4 bytes each).
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), address);
        write_volatile(addr_of_mut!((*sa).user_port), u32::from(port));
    }
}

fn translate4(ctx: &SockAddrContext) -> Result<i32, i32> {
    let (family, proto, address, port) = read(ctx);
    if family != AF_INET {
        return Ok(SYS_PROCEED);
    }
    let proto = match proto {
        6 => PROTO_TCP,
        17 => PROTO_UDP,
        _ => return Ok(SYS_PROCEED),
    };
    let mut key = Lb4Key::service(address, port, proto, SCOPE_EXTERNAL);
    let Some(svc) = lb::lookup_service_internal(&mut key) else {
        return Ok(SYS_PROCEED);
    };
    // One pod is one client for sessionAffinity: its network namespace identifies it.
    // SAFETY: helper taking the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let client = Affinity4Key {
        client: netns,
        rev_nat_id: svc.rev_nat_id,
        kind: AFFINITY_NETNS,
        _pad: [0; 5],
    };
    let Some(selected) = lb::select_backend(&key, &svc, &client, lb::random()) else {
        bump(STAT_SOCK4_NO_BACKEND);
        // A service without backends fails fast, as a closed port would, instead of timing out.
        // SAFETY: helper call with a plain integer argument.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return Ok(SYS_REJECT);
    };
    write(ctx, selected.backend.address, selected.backend.port);
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rev_key = SockRevNat4Key::new(cookie, selected.backend.address, selected.backend.port);
    let rev = SockRevNat4 {
        address,
        port,
        rev_nat_id: svc.rev_nat_id,
    };
    // An unconnected UDP socket comes here on every sendmsg: write only what changed (an LRU
    // insert takes a fresh node even for a key it holds). Without the entry the application
    // sees the backend as its peer; the flow still works.
    // SAFETY: the value is only read, at once.
    let known = unsafe { SKIFF_SKRV4_V1.get(&rev_key) }.is_some_and(|r| {
        r.address == rev.address && r.port == rev.port && r.rev_nat_id == rev.rev_nat_id
    });
    if !known {
        let _ = SKIFF_SKRV4_V1.insert(&rev_key, &rev, 0);
    }
    bump(STAT_SOCK4_TRANSLATED);
    Ok(SYS_PROCEED)
}

fn reverse4(ctx: &SockAddrContext) {
    let (family, _, address, port) = read(ctx);
    if family != AF_INET {
        return;
    }
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNat4Key::new(cookie, address, port);
    // SAFETY: copied out at once.
    if let Some(rev) = unsafe { SKIFF_SKRV4_V1.get(&key).copied() } {
        write(ctx, rev.address, rev.port);
        bump(STAT_SOCK4_REVNAT);
    }
}
