//! skiff-ebpf: the shared parts of skiff's kernel programs (maps, service lookup, counters).
//!
//! The entry points live in `src/bin/*.rs`, one object per attach point. Everything here must be
//! verifier-friendly: no panics, no unbounded loops, every pointer bounds-checked.
#![no_std]
#![expect(
    unsafe_code,
    reason = "eBPF maps and contexts are raw pointers into kernel memory"
)]

pub mod lb;
pub mod maps;
pub mod nodeport;
pub mod stats;

/// The verifier rejects any program that can reach a panic, so this is never linked into a
/// loadable program; it exists because `no_std` binaries must name one.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
