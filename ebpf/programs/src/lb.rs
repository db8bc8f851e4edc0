//! Service lookup and backend selection over the slot-0 service map layout: session affinity
//! first, then Maglev or a random slot.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use skiff_ebpf_common::{
    ALG_MAGLEV, Affinity4, Affinity4Key, BACKEND_ACTIVE, Backend4, Lb4Key, Lb4Service,
    SCOPE_INTERNAL, STAT_AFFINITY_HIT, STAT_LB_SLOT_MISS, SVC_FLAG_TWO_SCOPES,
};

use crate::{
    maps::{SKIFF_AFF4_V1, SKIFF_BE4_V1, SKIFF_MAG4_V1, SKIFF_SVC4_V1},
    stats::bump,
};

/// A backend chosen for a flow.
#[derive(Clone, Copy)]
pub struct Selected {
    pub id: u32,
    pub backend: Backend4,
}

/// The service record of a frontend, copied out of the map.
#[inline(always)]
pub fn lookup_service(key: &Lb4Key) -> Option<Lb4Service> {
    // SAFETY: copied out immediately; userspace replaces records whole, so a concurrent update
    // gives the old or the new record, both consistent.
    unsafe { SKIFF_SVC4_V1.get(key).copied() }
}

/// The record that serves traffic from inside the cluster: the external one, unless the
/// service keeps a separate internal scope (its traffic policies differ). `key` is updated to
/// the record's key.
#[inline(always)]
pub fn lookup_service_internal(key: &mut Lb4Key) -> Option<Lb4Service> {
    let svc = lookup_service(key)?;
    if svc.flags & SVC_FLAG_TWO_SCOPES == 0 {
        return Some(svc);
    }
    key.scope = SCOPE_INTERNAL;
    lookup_service(key)
}

/// A backend by id, copied out of the map.
#[inline(always)]
pub fn backend(id: u32) -> Option<Backend4> {
    // SAFETY: copied out at once, as above.
    unsafe { SKIFF_BE4_V1.get(&id).copied() }
}

/// Picks a backend for a new flow to the service `key` (its record key) whose record is `svc`.
/// `client` identifies the client for session affinity; `hash` picks the Maglev slot (a flow
/// hash) or the random slot. `None` when the service has no backend to offer.
#[inline(always)]
pub fn select_backend(
    key: &Lb4Key,
    svc: &Lb4Service,
    client: &Affinity4Key,
    hash: u32,
) -> Option<Selected> {
    if svc.count == 0 {
        return None;
    }
    let affinity = svc.affinity_timeout != 0;
    let now = if affinity { now_ns() } else { 0 };
    if affinity && let Some(selected) = affinity_hit(client, svc, now) {
        return Some(selected);
    }
    let id = if svc.algorithm == ALG_MAGLEV && svc.maglev_size != 0 {
        // checked_rem: a division the compiler cannot prove safe would pull in a panic path,
        // and the verifier rejects any program that has one.
        let slot = svc.maglev_key(hash.checked_rem(svc.maglev_size)?);
        // SAFETY: copied out at once.
        unsafe { SKIFF_MAG4_V1.get(&slot).copied() }
    } else {
        // Slots hold only backends that may take new flows (terminating ones follow after
        // `count`), so any of the first `count` will do.
        let n = hash.checked_rem(u32::from(svc.count))? + 1;
        let slot_key = key.backend_slot(svc.bank_bit(), n as u16);
        // SAFETY: copied out at once.
        unsafe { SKIFF_SVC4_V1.get(&slot_key).map(|s| s.backend_id) }
    };
    let Some(id) = id else {
        bump(STAT_LB_SLOT_MISS);
        return None;
    };
    let Some(backend) = backend(id) else {
        bump(STAT_LB_SLOT_MISS);
        return None;
    };
    if affinity {
        let entry = Affinity4 {
            last_used_ns: now,
            backend_id: id,
            _pad: 0,
        };
        // A full LRU map evicts the oldest entry; failure only costs stickiness.
        let _ = SKIFF_AFF4_V1.insert(client, &entry, 0);
    }
    Some(Selected { id, backend })
}

#[inline(always)]
fn affinity_hit(client: &Affinity4Key, svc: &Lb4Service, now: u64) -> Option<Selected> {
    let entry = SKIFF_AFF4_V1.get_ptr_mut(client)?;
    // SAFETY: a valid pointer from a successful lookup; a racing update of the timestamp by
    // another CPU is harmless.
    let entry = unsafe { &mut *entry };
    if now.wrapping_sub(entry.last_used_ns) > u64::from(svc.affinity_timeout) * 1_000_000_000 {
        return None;
    }
    let backend = backend(entry.backend_id)?;
    if backend.state != BACKEND_ACTIVE {
        return None;
    }
    entry.last_used_ns = now;
    bump(STAT_AFFINITY_HIT);
    Some(Selected {
        id: entry.backend_id,
        backend,
    })
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn random() -> u32 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_prandom_u32() }
}
